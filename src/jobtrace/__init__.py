"""jobtrace: a production-speed profiler, tracer and metrics tracker for Python jobs.

>>> import jobtrace
>>> with jobtrace.job("nightly-etl", experiment="etl"):     # doctest: +SKIP
...     run_etl()

Records go to an embedded SQLite store under ``./.jobtrace/`` unless
:func:`configure` or ``JOBTRACE_URL`` points elsewhere; ``jobtrace jobs list`` reads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobtrace._config import Settings
from jobtrace.errors import ConfigurationError, JobtraceError, StoreError
from jobtrace.jobs import Job, current_job, job
from jobtrace.recorder import flush
from jobtrace.report.result import ReportResult

if TYPE_CHECKING:
    from jobtrace import batch as batch
    from jobtrace.batch import BatchMetrics
    from jobtrace.instruments import Counter, Enum, Gauge, Histogram, Info, Summary, profile
    from jobtrace.metrics import log_metric
    from jobtrace.runs import search_runs
    from jobtrace.tracing import (
        Span,
        Trace,
        TracedMeta,
        current_span,
        start,
        stop,
        trace,
        trace_cls,
    )

__version__ = "0.1.0"

#: Names loaded on first use, and the module each comes from: `import jobtrace` stays light
#: for programs that use none of them.
_LAZY = {
    **dict.fromkeys(
        ("Span", "Trace", "TracedMeta", "current_span", "start", "stop", "trace", "trace_cls"),
        "jobtrace.tracing",
    ),
    **dict.fromkeys(
        ("Counter", "Enum", "Gauge", "Histogram", "Info", "Summary", "profile"),
        "jobtrace.instruments",
    ),
    "log_metric": "jobtrace.metrics",
    "search_runs": "jobtrace.runs",
    "BatchMetrics": "jobtrace.batch",
    "batch": "jobtrace.batch",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'jobtrace' has no attribute {name!r}")
    import importlib

    # import_module, not `from jobtrace import …`: that would ask this very hook first.
    module = importlib.import_module(module_name)
    value = module if name == "batch" else getattr(module, name)
    globals()[name] = value
    return value


__all__ = [
    "BatchMetrics",
    "ConfigurationError",
    "Counter",
    "Enum",
    "Gauge",
    "Histogram",
    "Info",
    "Job",
    "JobtraceError",
    "ReportResult",
    "Settings",
    "Span",
    "StoreError",
    "Summary",
    "Trace",
    "TracedMeta",
    "__version__",
    "configure",
    "current_job",
    "current_span",
    "flush",
    "job",
    "log_metric",
    "profile",
    "search_runs",
    "start",
    "stop",
    "trace",
    "trace_cls",
]


def configure(
    url: str | None = None,
    *,
    directory: str | None = None,
    experiment: str | None = None,
    service: str | None = None,
    flush_interval: float | None = None,
    buffer_size: int | None = None,
    heartbeat_interval: float | None = None,
    enabled: bool | None = None,
    install_signal_handlers: bool | None = None,
    trace_sample_rate: float | None = None,
    trace_max_spans: int | None = None,
    reports_keep: int | None = None,
    http_timeout: float | None = None,
    spool_max_bytes: int | None = None,
    flush_timeout: float | None = None,
    profile: bool | None = None,
    sample_hz: float | None = None,
    export: str | None = None,
) -> Settings:
    """Point this process's recording somewhere; nothing needs configuring for the default.

    Arguments win over environment variables (``JOBTRACE_URL``, ``JOBTRACE_DIR``, …; see
    :mod:`jobtrace._config`), which win over defaults. Raises
    :class:`ConfigurationError` at once for a bad value, e.g. an unknown URL scheme::

        jobtrace.configure("postgresql://jobtrace@db.internal/jobtrace", experiment="nightly")

    ``service`` names this process in traces (``jobtrace trace list --service``), like
    OpenTelemetry's ``service.name``; by default the name of the job it runs, else its
    script's name (``JOBTRACE_SERVICE`` sets it from outside).
    ``export`` (``JOBTRACE_EXPORT``) sends a copy of what the store took to a second
    destination, e.g. ``export="otlp+http://collector:4318"`` for an OpenTelemetry
    collector (``""`` turns an exported environment setting off).
    """
    from jobtrace import _config

    kwargs: dict[str, Any] = {
        "url": url,
        "directory": directory,
        "experiment": experiment,
        "service": service,
        "flush_interval": flush_interval,
        "buffer_size": buffer_size,
        "heartbeat_interval": heartbeat_interval,
        "enabled": enabled,
        "install_signal_handlers": install_signal_handlers,
        "trace_sample_rate": trace_sample_rate,
        "trace_max_spans": trace_max_spans,
        "reports_keep": reports_keep,
        "export": export,
        "http_timeout": http_timeout,
        "spool_max_bytes": spool_max_bytes,
        "flush_timeout": flush_timeout,
        "profile": profile,
        "sample_hz": sample_hz,
    }
    return _config.configure(**kwargs)
