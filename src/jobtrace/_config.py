"""Settings: from arguments, then the environment, then defaults — resolved in one place.

Environment variables (all optional):

``JOBTRACE_URL``
    Where records go: ``sqlite:///path.db`` (default ``sqlite:///$JOBTRACE_DIR/jobtrace.db``),
    ``postgresql://user@host/db``, ``http(s)://server:port``, ``amqp://user:pw@host/?queue=q``
    (a RabbitMQ queue that ``jobtrace consume`` drains), ``file:///path.jsonl`` or
    ``memory://name``.
``JOBTRACE_EXPORT``
    A second destination that gets a copy of every batch the store took, typically an
    OpenTelemetry collector: ``otlp+http://collector:4318`` (spans and metrics over OTLP;
    see :mod:`jobtrace.sinks.otlp`). It has its own buffer, spool and retries, so a
    collector that is down or slow never holds up the store. Any sink URL works.
``JOBTRACE_DIR``
    jobtrace's local directory for the default store, reports and the spool
    (default ``./.jobtrace``, made absolute when settings are resolved).
``JOBTRACE_JOB_ID``
    Id for the job that ``jobtrace run`` or ``jobtrace.job()`` starts, when not given.
``JOBTRACE_EXPERIMENT``
    Experiment for jobs that do not name one.
``JOBTRACE_FLUSH_INTERVAL``
    Seconds between background flushes (default 1).
``JOBTRACE_BUFFER_SIZE``
    Records held in memory (default 200000). Past it the oldest spill to the spool on
    local disk, to be written when the writer catches up: nothing is dropped while the
    spool has room.
``JOBTRACE_SPOOL_MAX_BYTES``
    Cap on the spool of one store URL, in bytes (default 1073741824, 1 GiB). Past it new
    records are dropped, counted per kind and shown on their job (``records_dropped``);
    job snapshots are always kept.
``JOBTRACE_FLUSH_TIMEOUT``
    Seconds that :func:`jobtrace.flush`, the exit flush and the SIGTERM flush wait for a
    slow or hung sink, in all (default 30). What is not written by then stays in the
    spool and is replayed later (by this process or the next one using the same URL).
``JOBTRACE_HTTP_TIMEOUT``
    Most seconds one batch may take to reach a ``jobtrace serve`` server, retries included,
    before it is spooled and retried later (default 5; see :mod:`jobtrace.sinks.http`).
``JOBTRACE_HEARTBEAT_INTERVAL``
    Seconds between job heartbeats (default 2).
``JOBTRACE_REPORTS_KEEP``
    Report directories kept under ``$JOBTRACE_DIR/reports``: writing a report past this
    many removes the oldest, down to nine tenths of it (default 1000; ``0`` keeps every one).
``JOBTRACE_DISABLED``
    ``1`` turns recording off: every API call becomes a no-op.
``JOBTRACE_TRACE_SAMPLE_RATE``
    Fraction of traces recorded, decided at each trace's root (default 1).
``JOBTRACE_TRACE_MAX_SPANS``
    Spans kept per trace in one process; more are dropped and counted (default 10000).
``JOBTRACE_TRACEPARENT``
    W3C ``traceparent`` of a span in a parent process: root spans here join its trace.
    Set for child processes by :func:`jobtrace.tracing.child_env`.
``JOBTRACE_SERVICE``
    The service name spans of this process carry (``trace list --service``), as
    OpenTelemetry's ``OTEL_SERVICE_NAME``; default: the name of the job the process runs,
    else the script's name.
``JOBTRACE_PARENT_JOB``
    Job id that spans and metrics of this process belong to when no job runs here. Set
    by a running job for the processes it starts (with ``JOBTRACE_TRACEPARENT``,
    ``JOBTRACE_URL`` and ``JOBTRACE_DIR``; see :mod:`jobtrace.tracing.propagation`).
``JOBTRACE_METRIC_PREFIX``
    Put before the names of the metrics this process logs into its parent's job
    (``JOBTRACE_PARENT_JOB``); empty for none. Default: the program's name and a slash
    (``step/`` for ``python step.py``), or the ``multiprocessing`` process name in a
    multiprocessing child, so that a child's points never replace its parent's.
``JOBTRACE_TOKEN``
    API token sent as ``Authorization: Bearer …`` by the ``http(s)://`` sink and by
    :class:`jobtrace.client.Client` (make one with ``jobtrace token create NAME``).
``JOBTRACE_AUTH_READS``
    For ``jobtrace serve``: ``1`` (default) makes reads need a token once any token exists,
    ``0`` leaves reads open (writes always need one then).
``JOBTRACE_ALLOWED_ORIGINS``
    For ``jobtrace serve``: comma-separated browser origins (``https://host:port``) allowed
    to write besides the server's own loopback or IP-address origin.
``JOBTRACE_AUTH_REFRESH``
    For ``jobtrace serve``: seconds each server process trusts its copy of the live tokens
    (default 2): a new or revoked token takes effect within this time; 0 reads the store on
    every request.
``JOBTRACE_PROFILE``
    ``0`` turns job profiles off (on by default: a sampler thread per process records
    where each job's time went; see :mod:`jobtrace.profiles.sampler`).
``JOBTRACE_SAMPLE_HZ``
    Stack samples per second of the job profile's sampler (default 100, at most 1000).
``JOBTRACE_NO_EXTENSIONS``
    Set to 1 to trace with the pure-Python implementation instead of the compiled one
    (read once, at import; the compiled one is used when it was built and this is unset).
``JOBTRACE_PHANOS_INLINE_HANDLERS``
    Set to 1 to have :mod:`jobtrace.compat.phanos` hand a root call's records to the
    handlers before the call returns, as Phanos does, instead of on a background thread
    (read when a Phanos profiler is created; ``config(handle_inline=...)`` wins).
``JOBTRACE_MEMORY``
    The jobs' peak-memory profile: ``approximate`` (default, sampled, cheap), ``exact``
    (every allocation, through memray: ``pip install 'jobtrace[memray]'``) or ``off``
    (see :mod:`jobtrace.profiles.memory`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from jobtrace.errors import ConfigurationError

ENV_URL = "JOBTRACE_URL"
ENV_EXPORT = "JOBTRACE_EXPORT"
ENV_DIR = "JOBTRACE_DIR"
ENV_JOB_ID = "JOBTRACE_JOB_ID"
ENV_EXPERIMENT = "JOBTRACE_EXPERIMENT"
ENV_FLUSH_INTERVAL = "JOBTRACE_FLUSH_INTERVAL"
ENV_BUFFER_SIZE = "JOBTRACE_BUFFER_SIZE"
ENV_SPOOL_MAX_BYTES = "JOBTRACE_SPOOL_MAX_BYTES"
ENV_FLUSH_TIMEOUT = "JOBTRACE_FLUSH_TIMEOUT"
ENV_HEARTBEAT_INTERVAL = "JOBTRACE_HEARTBEAT_INTERVAL"
ENV_HTTP_TIMEOUT = "JOBTRACE_HTTP_TIMEOUT"
ENV_DISABLED = "JOBTRACE_DISABLED"
ENV_REPORTS_KEEP = "JOBTRACE_REPORTS_KEEP"
ENV_TRACE_SAMPLE_RATE = "JOBTRACE_TRACE_SAMPLE_RATE"
ENV_TRACE_MAX_SPANS = "JOBTRACE_TRACE_MAX_SPANS"
ENV_TRACEPARENT = "JOBTRACE_TRACEPARENT"
ENV_PARENT_JOB = "JOBTRACE_PARENT_JOB"
ENV_SERVICE = "JOBTRACE_SERVICE"
ENV_METRIC_PREFIX = "JOBTRACE_METRIC_PREFIX"
ENV_NO_EXTENSIONS = "JOBTRACE_NO_EXTENSIONS"
ENV_TOKEN = "JOBTRACE_TOKEN"
ENV_AUTH_READS = "JOBTRACE_AUTH_READS"
ENV_ALLOWED_ORIGINS = "JOBTRACE_ALLOWED_ORIGINS"
ENV_AUTH_REFRESH = "JOBTRACE_AUTH_REFRESH"
ENV_PHANOS_INLINE = "JOBTRACE_PHANOS_INLINE_HANDLERS"
ENV_MEMORY = "JOBTRACE_MEMORY"

#: Why each compiled module (``_speedups``, ``_memtrack``) is not in use, once asked for;
#: ``jobtrace doctor`` shows it.
extension_problems: dict[str, str] = {}
ENV_PROFILE = "JOBTRACE_PROFILE"
ENV_SAMPLE_HZ = "JOBTRACE_SAMPLE_HZ"


def load_speedups() -> ModuleType | None:
    """The compiled hot paths (``jobtrace._speedups``), or None when they were not built or
    ``JOBTRACE_NO_EXTENSIONS`` is set: then the pure-Python implementations run."""
    return load_extension("_speedups")


def load_extension(name: str) -> ModuleType | None:
    """The compiled module ``jobtrace.<name>``, or None when it was not built or
    ``JOBTRACE_NO_EXTENSIONS`` is set (the callers then fall back to Python)."""
    if os.environ.get(ENV_NO_EXTENSIONS, "").strip() not in ("", "0"):
        extension_problems[name] = f"turned off by {ENV_NO_EXTENSIONS}"
        return None
    import importlib

    try:
        module = importlib.import_module(f"jobtrace.{name}")
    except ImportError as exc:  # no compiler at install time: the Python code does the same
        extension_problems[name] = _why_not_loaded(name, exc)
        return None
    extension_problems.pop(name, None)
    return module


#: The note the build (setup.py) leaves in the package when an optional C extension failed
#: to compile: {"jobtrace._speedups": "the compiler's error", ...}.
BUILD_PROBLEMS_FILE = "_build_problems.json"


def _why_not_loaded(name: str, exc: ImportError) -> str:
    """Why ``jobtrace.<name>`` did not import, in words that say what to do."""
    fix = "install a C compiler and the Python headers (gcc, python3-dev) and reinstall jobtrace"
    try:
        import json

        note = Path(__file__).with_name(BUILD_PROBLEMS_FILE)
        failed = json.loads(note.read_text("utf-8")).get(f"jobtrace.{name}")
    except (OSError, ValueError, AttributeError):
        failed = None
    if failed:
        return f"not built: compiling it failed when jobtrace was installed ({failed}); {fix}"
    if isinstance(exc, ModuleNotFoundError) and exc.name == f"jobtrace.{name}":
        return f"never built (this install has no compiled jobtrace.{name}); {fix}"
    return f"built but not loadable ({exc}); reinstalling jobtrace rebuilds it"


DEFAULT_DIR = ".jobtrace"
#: Peak-memory profile modes (jobtrace.profiles.memory).
MEMORY_MODES = ("approximate", "exact", "off")
#: Seconds one batch may take to reach a server (:data:`jobtrace.sinks.http.WRITE_TIMEOUT`).
DEFAULT_HTTP_TIMEOUT = 5.0
#: The spool cap when none is set: 1 GiB.
DEFAULT_SPOOL_MAX_BYTES = 1 << 30
#: Seconds a flush (explicit, at exit, on SIGTERM) waits for the sink when none is set.
DEFAULT_FLUSH_TIMEOUT = 30.0
DB_FILENAME = "jobtrace.db"


class Settings(NamedTuple):
    """Resolved, validated settings; build one with :func:`resolve`."""

    url: str
    directory: Path
    experiment: str | None = None
    #: The service name given by argument or JOBTRACE_SERVICE; None: tracing's default.
    service: str | None = None
    flush_interval: float = 1.0
    buffer_size: int = 200_000
    batch_size: int = 20_000
    heartbeat_interval: float = 2.0
    enabled: bool = True
    install_signal_handlers: bool = True
    trace_sample_rate: float = 1.0
    trace_max_spans: int = 10_000
    http_timeout: float = DEFAULT_HTTP_TIMEOUT
    reports_keep: int = 1000
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    flush_timeout: float = DEFAULT_FLUSH_TIMEOUT
    memory: str = "approximate"
    profile: bool = True
    sample_hz: float = 100.0
    #: A second sink URL that receives a copy of what the store took (``JOBTRACE_EXPORT``).
    export: str | None = None

    @property
    def reports_dir(self) -> Path:
        return self.directory / "reports"

    @property
    def spool_dir(self) -> Path:
        return self.directory / "spool"


def _number(name: str, raw: Any, kind: type[float] | type[int], low: float, high: float) -> Any:
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
    if not low < value <= high:
        raise ConfigurationError(f"{name}={raw!r} must be in ({low:g}, {high:g}]")
    return value


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and files."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in userinfo else url


#: The longest service name kept (the store's column is this wide).
MAX_SERVICE = 256


def _service(arg: str | None, env: Mapping[str, str]) -> str | None:
    """The service name from ``arg`` or ``JOBTRACE_SERVICE``; blank means not given."""
    raw = arg if arg is not None else env.get(ENV_SERVICE)
    if raw is not None and not isinstance(raw, str):
        raise ConfigurationError(f"service must be a string, got {type(raw).__name__}")
    name = (raw or "").strip()
    if not name:
        return None
    if len(name) > MAX_SERVICE:
        label = "service" if arg is not None else ENV_SERVICE
        raise ConfigurationError(f"{label} is {len(name)} characters; at most {MAX_SERVICE}")
    return name


def default_url(directory: Path) -> str:
    return f"sqlite:///{directory / DB_FILENAME}"


def normalize_url(url: str) -> str:
    """Check the scheme against the sink registry and make file paths absolute.

    Relative paths are resolved against the current directory now, so a later
    ``os.chdir`` in the user's program does not move the store.
    """
    from jobtrace.sinks import scheme_of

    scheme = scheme_of(url)  # raises ConfigurationError listing the known schemes
    if scheme == "sqlite":
        path = url.split("://", 1)[1]
        if not path.startswith("/") or path in {"", "/"}:
            raise ConfigurationError(
                f"store URL {url!r} has no file path; use sqlite:///relative.db "
                "or sqlite:////absolute.db (use memory:// for an in-memory sink)"
            )
        path = path[1:].split("?", 1)[0]
        return f"sqlite:///{Path(path).expanduser().absolute()}"
    if scheme == "file":
        path = url.split("://", 1)[1]
        if not path:
            raise ConfigurationError(f"store URL {url!r} has no file path")
        return f"file://{Path(path).expanduser().absolute()}"
    if scheme.startswith("otlp+"):
        from jobtrace.sinks.otlp import check_url

        check_url(url)  # its options and OTEL_EXPORTER_OTLP_HEADERS, now rather than later
    return url


def resolve(
    *,
    url: str | None = None,
    directory: str | os.PathLike[str] | None = None,
    experiment: str | None = None,
    service: str | None = None,
    flush_interval: float | None = None,
    buffer_size: int | None = None,
    heartbeat_interval: float | None = None,
    enabled: bool | None = None,
    install_signal_handlers: bool | None = None,
    trace_sample_rate: float | None = None,
    trace_max_spans: int | None = None,
    http_timeout: float | None = None,
    reports_keep: int | None = None,
    spool_max_bytes: int | None = None,
    flush_timeout: float | None = None,
    memory: str | None = None,
    profile: bool | None = None,
    sample_hz: float | None = None,
    export: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings: explicit arguments win, then environment variables, then defaults."""
    env = os.environ if env is None else env
    base = Path(directory or env.get(ENV_DIR) or DEFAULT_DIR).expanduser().absolute()
    raw_url = url or env.get(ENV_URL) or default_url(base)
    disabled = env.get(ENV_DISABLED, "").strip().lower() in {"1", "true", "yes", "on"}
    settings = Settings(
        url=normalize_url(raw_url),
        directory=base,
        experiment=experiment or env.get(ENV_EXPERIMENT) or None,
        service=_service(service, env),
        enabled=(not disabled) if enabled is None else enabled,
    )
    raw_export = (export if export is not None else env.get(ENV_EXPORT, "")).strip()
    if raw_export:
        settings = settings._replace(export=normalize_url(raw_export))
        if settings.export == settings.url:
            raise ConfigurationError(
                f"the export URL {mask_url(raw_export)!r} is the store URL itself; "
                f"set {ENV_EXPORT} to another destination (e.g. otlp+http://collector:4318)"
            )
    if profile is None:
        profile = env.get(ENV_PROFILE, "").strip().lower() not in {"0", "false", "no", "off"}
    settings = settings._replace(profile=profile)
    if install_signal_handlers is not None:
        settings = settings._replace(install_signal_handlers=install_signal_handlers)
    raw_memory = memory or env.get(ENV_MEMORY, "").strip().lower()
    if raw_memory:
        if raw_memory not in MEMORY_MODES:
            label = "memory" if memory else ENV_MEMORY
            raise ConfigurationError(
                f"{label}={raw_memory!r} is not one of {', '.join(MEMORY_MODES)}"
            )
        settings = settings._replace(memory=raw_memory)
    for field_name, arg, env_name, kind, low, high in (
        ("flush_interval", flush_interval, ENV_FLUSH_INTERVAL, float, 0.0, 60.0),
        ("buffer_size", buffer_size, ENV_BUFFER_SIZE, int, 0, 100_000_000),
        ("heartbeat_interval", heartbeat_interval, ENV_HEARTBEAT_INTERVAL, float, 0.0, 3600.0),
        ("trace_sample_rate", trace_sample_rate, ENV_TRACE_SAMPLE_RATE, float, -1e-12, 1.0),
        ("trace_max_spans", trace_max_spans, ENV_TRACE_MAX_SPANS, int, 0, 100_000_000),
        ("http_timeout", http_timeout, ENV_HTTP_TIMEOUT, float, 0.0, 3600.0),
        ("reports_keep", reports_keep, ENV_REPORTS_KEEP, int, -1, 1_000_000_000),
        ("spool_max_bytes", spool_max_bytes, ENV_SPOOL_MAX_BYTES, int, -1, 2**62),
        ("flush_timeout", flush_timeout, ENV_FLUSH_TIMEOUT, float, 0.0, 86400.0),
        ("sample_hz", sample_hz, ENV_SAMPLE_HZ, float, 0.0, 1000.0),
    ):
        raw = arg if arg is not None else env.get(env_name)
        if raw is not None and raw != "":
            label = field_name if arg is not None else env_name
            value = _number(label, raw, kind, low, high)
            settings = settings._replace(**{field_name: value})
    return settings


_lock = threading.Lock()
_current: Settings | None = None


def current() -> Settings:
    """The process's settings, resolved from the environment on first use."""
    global _current
    settings = _current
    if settings is None:
        with _lock:
            if _current is None:
                _current = resolve()
            settings = _current
    return settings


def configure(**kwargs: Any) -> Settings:
    """Resolve new settings and point the process's recorder at them.

    Records buffered before the call are flushed to the previous sink first. The store URL,
    the export URL and the directory are also exported to ``os.environ``, so that
    processes this one starts (subprocesses, spawned workers) record into the same place.
    """
    global _current
    settings = resolve(**kwargs)
    with _lock:
        _current = settings
    os.environ[ENV_URL] = settings.url
    os.environ[ENV_DIR] = str(settings.directory)
    if settings.export:
        os.environ[ENV_EXPORT] = settings.export
    else:
        os.environ.pop(ENV_EXPORT, None)
    from jobtrace.recorder import get_recorder

    get_recorder().reconfigure(settings)
    for listener in _listeners:
        listener(settings)
    return settings


_listeners: list[Any] = []


def on_configure(listener: Any) -> None:
    """Call ``listener(settings)`` after every :func:`configure` (modules that decide
    things once, like tracing's enabled flag, re-decide then)."""
    _listeners.append(listener)
