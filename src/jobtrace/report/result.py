"""The result of a finished job, logged to ``logging.getLogger("jobtrace")``.

The :class:`ReportResult` is the log record's message object, so a ``logging.Handler`` can
pick it out with ``isinstance(record.msg, ReportResult)`` and forward its fields, while
``record.getMessage()`` reads as a plain sentence.
"""

from __future__ import annotations

from typing import Any, NamedTuple


def human_bytes(kib: int | float | None) -> str:
    """``153600`` KiB → ``'150.0 MiB'``."""
    if kib is None:
        return "unknown"
    value = float(kib)
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_duration(seconds: float | None) -> str:
    """``3725.2`` → ``'1h 02m 05s'``; short durations keep their precision."""
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


class ReportResult(NamedTuple):
    """What a finished job reports: Sciagraph's fields, and more.

    Example — forward results to your own system::

        class Forward(logging.Handler):
            def emit(self, record):
                if isinstance(record.msg, jobtrace.ReportResult):
                    send(record.msg.job_id, record.msg.peak_memory_kb)

        logging.getLogger("jobtrace").addHandler(Forward())
    """

    job_id: str
    #: Start of the job, ISO-8601 with a UTC offset.
    job_time: str
    name: str | None
    experiment: str | None
    status: str
    duration_ms: float
    peak_memory_kb: int | None
    exit_code: int | None
    error_type: str | None
    error_message: str | None
    report_dir: str | None
    #: Records of the job dropped because the spool was full, by kind (``None``: none).
    records_dropped: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()

    def __str__(self) -> str:
        label = f"{self.job_id} ({self.name})" if self.name else self.job_id
        error = f" with {self.error_type}: {self.error_message}" if self.error_type else ""
        where = (
            f"the report is in {self.report_dir}"
            if self.report_dir
            else "no report directory was written"
        )
        lost = ""
        if self.records_dropped:
            counts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.records_dropped.items()))
            lost = f"; LOST {sum(self.records_dropped.values())} records ({counts})"
        return (
            f"jobtrace: job {label} {self.status}{error} after "
            f"{human_duration(self.duration_ms / 1000)}, peak memory "
            f"{human_bytes(self.peak_memory_kb)}{lost}; {where}"
        )
