"""The result of a finished job, logged to ``logging.getLogger("jobtrace")``.

The :class:`ReportResult` is the log record's message object, so a ``logging.Handler`` can
pick it out with ``isinstance(record.msg, ReportResult)`` and forward its fields, while
``record.getMessage()`` reads as a plain sentence.
"""

from __future__ import annotations

import logging
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
    #: With a jobtrace server as the store: the key its encrypted report bundle is kept
    #: under, and the key that decrypts it (known only here). ``None`` with a local store.
    download_key: str | None = None
    decryption_key: str | None = None
    #: The server the bundle was uploaded to (password masked), for the download command.
    server_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()

    def __str__(self) -> str:
        label = f"{self.job_id} ({self.name})" if self.name else self.job_id
        error = f" with {self.error_type}: {self.error_message}" if self.error_type else ""
        if self.download_key and self.decryption_key:
            server = f" --store {self.server_url}" if self.server_url else ""
            where = (
                f"the report is in {self.report_dir}; to download it elsewhere: jobtrace "
                f"report download {self.download_key} {self.decryption_key}{server} --out DIR"
            )
        elif self.report_dir:
            where = f"the report is in {self.report_dir}"
        else:
            where = "no report directory was written"
        lost = ""
        if self.records_dropped:
            counts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.records_dropped.items()))
            lost = f"; LOST {sum(self.records_dropped.values())} records ({counts})"
        return (
            f"jobtrace: job {label} {self.status}{error} after "
            f"{human_duration(self.duration_ms / 1000)}, peak memory "
            f"{human_bytes(self.peak_memory_kb)}{lost}; {where}"
        )


def log_result(logger: logging.Logger, result: ReportResult) -> None:
    """Log ``result`` at INFO on ``logger`` so that a handler added to it receives it.

    Python leaves a logger without a level at WARNING, so a plain ``logger.info`` would
    reach nobody unless the program also lowered the level. The record still goes the
    usual way when INFO is enabled (to ``logger``'s handlers and up to the root's). When it
    is not, it is handed to the handlers attached to ``logger`` itself only: adding one
    there is the explicit request for results (the documented ``Forward`` example), while
    a program that merely configured root logging at WARNING sees nothing new.
    """
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, result, (), None)
    if logger.isEnabledFor(logging.INFO):
        logger.handle(record)
        return
    if logger.disabled or logger.manager.disable >= logging.INFO or not logger.filter(record):
        return
    for handler in logger.handlers:
        if record.levelno >= handler.level:
            handler.handle(record)
