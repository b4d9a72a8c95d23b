"""Spans and the trace context: which span is current, in this thread or asyncio task.

The current span lives in a :class:`contextvars.ContextVar`, so every thread and every
asyncio task has its own: concurrent tasks never see each other's spans, and a task
created inside a span starts with that span as its parent (asyncio copies the context).

A span is written once, when it ends, as one record through the recorder: ids, parent,
name, start (epoch ns), duration (ns, from the monotonic clock), info, error, job, host,
pid and thread. Sampling is decided at a trace's root and inherited by its children; an
unsampled trace carries a marker instead of spans, so its children cost almost nothing.
A per-trace cap bounds what one runaway loop can record; overflow is counted on the root.

This module is the reference implementation. The compiled ``_speedups`` module does the
same per-span work about four times faster and replaces :class:`Span` (and the plain
function wrapper of ``@trace``) when it was built, unless ``JOBTRACE_NO_EXTENSIONS=1``;
the settings below push every change into it, so both always agree.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobtrace import _config, model
from jobtrace.jobs import _current as _current_job
from jobtrace.jobs import on_first_job
from jobtrace.recorder import get_recorder

log = logging.getLogger("jobtrace.tracing")


_c = _config.load_speedups()
#: True when spans are opened and closed by the compiled module.
ACCELERATED = _c is not None

_perf_ns = time.perf_counter_ns if _c is None else _c.monotonic_ns
_wall_ns = time.time_ns
_current_thread = threading.current_thread
_rng = random.Random(os.urandom(16))  # never the program's own random stream
_random = _rng.random
_bits = _rng.getrandbits
_thread_local = threading.local()
_job_var = _current_job.get
_ms_prefix = [0, 0]  # [millisecond, millisecond << 80] of the last root span

DROPPED_KEY = "jobtrace.dropped_spans"


class RemoteParent:
    """A parent span in another process or service, known by its ids only."""

    __slots__ = ("_state", "sampled", "span_id", "trace_id")

    def __init__(self, trace_id: int, span_id: int, sampled: bool) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self._state = _new_trace_state()

    def traceparent(self) -> str:
        flags = "01" if self.sampled else "00"
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{flags}"


def _new_trace_state() -> Any:
    """The counters shared by the spans of one trace in this process: [kept, dropped]."""
    return [0, 0] if _c is None else _c.TraceState()


_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def _check_name(name: Any) -> str:
    if isinstance(name, str):
        return name
    _warn_once(
        f"name:{type(name).__name__}",
        "jobtrace: trace point name %r is not a string; using str()",
        name,
    )
    return str(name)


def _check_info(info: Any) -> dict[str, Any] | None:
    if info is None or isinstance(info, dict):
        return info
    _warn_once(
        f"info:{type(info).__name__}",
        "jobtrace: trace info must be a dict, got %s; ignored",
        type(info).__name__,
    )
    return None


def _short_repr(value: Any, limit: int = 1000) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break the traced call
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _PySpan:
    """A timed trace point. Add attributes while it runs with :meth:`set`.

    ``with Span("name", info={...}) as span:`` (``jobtrace.Trace`` is this class). The
    object is its own context manager: one allocation per trace point, not two.
    """

    # Ids are kept as ints on the hot path (formatting hex costs more than the rest of a
    # span); the store's writer and the JSON codec turn them into W3C hex strings.
    __slots__ = (
        "_manual",
        "_parent",
        "_state",
        "_t0",
        "_token",
        "info",
        "job_id",
        "name",
        "parent_id",
        "span_id",
        "start_ns",
        "trace_id",
    )

    name: str
    info: dict[str, Any] | None
    trace_id: int
    span_id: int
    parent_id: int | None
    start_ns: int
    job_id: str | None
    # The spans of one trace within one process share a two-item list, [kept, dropped],
    # for the per-trace cap: a list literal costs a fraction of constructing an object.
    _state: list[int]
    _parent: Span | RemoteParent | None
    _t0: int
    _manual: bool

    def __init__(self, name: str, info: dict[str, Any] | None = None) -> None:
        self.name = name if type(name) is str else _check_name(name)
        # A copy per span: the caller's dict is never shared between spans.
        self.info = (
            None if info is None else dict(info) if type(info) is dict else _check_info(info)
        )

    def __enter__(self) -> Span | _Unsampled:
        """Start under the current span and become the current one; returns UNSAMPLED
        (a no-op span) if the trace is not recorded. One method, not several calls: this
        is the hot path of every span."""
        if not _settings.enabled:
            self._t0 = -1
            self._token = None
            return UNSAMPLED
        parent = _current_get()
        t0 = _perf_ns()
        start_ns = t0 + _clock.offset
        if parent is None or isinstance(parent, _NewTrace):
            # NEW_TRACE: a root here even in a process started under a remote parent.
            parent = _settings.remote_parent if parent is None else None
            if parent is None:
                rate = _settings.sample_rate
                if rate < 1.0 and _random() >= rate:
                    return self._unsampled()
                self._state = [0, 0]
                # 48-bit milliseconds, then 80 random bits (see jobtrace._ids.trace_id);
                # the shifted millisecond is cached, big-int shifts cost more than a lookup.
                ms = start_ns // 1_000_000
                if ms != _ms_prefix[0]:
                    _ms_prefix[0], _ms_prefix[1] = ms, ms << 80
                self.trace_id = _ms_prefix[1] | _bits(80)
                self.parent_id = None
            elif not parent.sampled:
                return self._unsampled()
            else:
                self._state = parent._state
                self.trace_id = parent.trace_id
                self.parent_id = parent.span_id
        elif isinstance(parent, _Unsampled):
            return self._unsampled()
        else:
            self._state = parent._state
            self.trace_id = parent.trace_id
            self.parent_id = parent.span_id
        self._parent = parent
        job = _job_var()
        self.job_id = _settings.parent_job if job is None else job.id
        self.span_id = _bits(64) or 1
        self.start_ns = start_ns
        self._t0 = t0
        self._token = _current_set(self)
        return self

    def _unsampled(self) -> _Unsampled:
        self._t0 = -1
        self._token = _current_set(UNSAMPLED)
        return UNSAMPLED

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: object,
    ) -> None:
        token = self._token
        if token is not None:
            try:
                _current_reset(token)
            except ValueError:  # left in another context (a generator, a callback)
                _current_set(self._parent if self._t0 >= 0 else None)
        if self._t0 >= 0:
            self.end(exc)

    def set(self, key: str, value: Any) -> None:
        """Attach an attribute to this span's info (recorded when the span ends)."""
        info = self.info
        if info is None:
            self.info = {key: value}
        else:
            info[key] = value

    def update(self, values: dict[str, Any] | None) -> None:
        if values:
            if self.info is None:
                self.info = dict(values)
            else:
                self.info.update(values)

    def __repr__(self) -> str:
        if getattr(self, "span_id", None) is None:
            return f"<Span {self.name!r} (not started)>"
        return f"<Span {self.name!r} trace={self.trace_id:032x} span={self.span_id:016x}>"

    def traceparent(self) -> str:
        """This span as a W3C ``traceparent`` header value."""
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-01"

    @property
    def ids(self) -> tuple[str, str, str | None]:
        """(trace id, span id, parent id) as hex strings."""
        parent = None if self.parent_id is None else f"{self.parent_id:016x}"
        return f"{self.trace_id:032x}", f"{self.span_id:016x}", parent

    def end(self, error: BaseException | None = None) -> None:
        """Record the span (once); ``error`` is the exception that ended it, if any."""
        duration = _perf_ns() - self._t0
        if self._t0 < 0:  # already ended
            return
        self._t0 = -1
        state = self._state
        parent = self._parent
        if parent is None or parent.__class__ is RemoteParent:
            # This process's root of the trace is always kept, and reports the overflow.
            if state[1]:
                self.set(DROPPED_KEY, state[1])
        elif state[0] >= _settings.max_spans:
            state[1] += 1
            return
        state[0] += 1
        _record_row(
            self.trace_id,
            self.span_id,
            self.parent_id,
            self.name,
            self.start_ns,
            duration,
            self.info,
            None if error is None else model.error_type_name(error),
            None if error is None else _message(error),
            self.job_id,
        )


def _record_row(
    trace_id: int,
    span_id: int,
    parent_id: int | None,
    name: str,
    start_ns: int,
    duration: int,
    info: dict[str, Any] | None,
    error_type: str | None,
    error_message: str | None,
    job_id: str | None,
) -> None:
    """Hand one ended span to the recorder, with this process's host, pid and thread (the
    thread's name cached per thread): the row :class:`_PySpan` and :func:`record_span`
    both write."""
    try:
        thread = _thread_local.name
    except AttributeError:
        thread = _thread_local.name = _current_thread().name
    _settings.record(
        (
            model.SPAN,
            trace_id,
            span_id,
            parent_id,
            name,
            start_ns,
            duration,
            info,
            error_type,
            error_message,
            job_id,
            _process.host,
            _process.pid,
            thread,
            _settings.service,
        )
    )


if TYPE_CHECKING or _c is None:
    Span = _PySpan
else:
    Span = _c.Span
    # The compiled type does the per-span work; the rest is shared with the Python class.
    for _name in ("__repr__", "traceparent", "ids", "update"):
        setattr(Span, _name, _PySpan.__dict__[_name])
    Span.__doc__ = _PySpan.__doc__


class _Unsampled:
    """The current 'span' of a trace that is not recorded: children stay unrecorded."""

    __slots__ = ()
    trace_id = 0
    span_id = 0

    def set(self, key: str, value: Any) -> None:
        pass

    def update(self, values: dict[str, Any] | None) -> None:
        pass

    def traceparent(self) -> str:
        return "00-" + "0" * 31 + "1-" + "0" * 15 + "1-00"

    def end(self, error: BaseException | None = None) -> None:
        pass


UNSAMPLED = _Unsampled()


class _NewTrace:
    """Set as the current span to make the next span a root, even in a process started
    under a parent (``JOBTRACE_TRACEPARENT``): a server's request that no trusted caller
    sent. It records nothing and carries nothing to other processes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEW_TRACE"


NEW_TRACE = _NewTrace()
AnySpan = Span | _Unsampled


class JoinedTrace:
    """A request that joined a trusted caller's trace: set by the HTTP middlewares for the
    request's context, so that layers keeping per-request state can find it (the OSProfiler
    layer records its points inside such a request, as OSProfiler's middleware would).

    ``parent``: the caller's span; ``signer``: the middleware's keys, for onward calls;
    ``state``: per-request slots for those layers.
    """

    __slots__ = ("parent", "signer", "state")

    def __init__(self, parent: RemoteParent, signer: Any) -> None:
        self.parent = parent
        self.signer = signer
        self.state: dict[str, Any] = {}


joined_trace_var: ContextVar[JoinedTrace | None] = ContextVar("jobtrace_joined_trace", default=None)

current_span_var: ContextVar[Span | _Unsampled | RemoteParent | _NewTrace | None] = ContextVar(
    "jobtrace_current_span", default=None
)
_current_get = current_span_var.get
_current_set = current_span_var.set
_current_reset = current_span_var.reset


class _Settings:
    """Tracing's share of the settings, decided once per configure, read on the hot path."""

    __slots__ = (
        "_configured_service",
        "_framework_service",
        "_job_service",
        "enabled",
        "max_spans",
        "parent_job",
        "record",
        "remote_parent",
        "sample_rate",
        "service",
    )

    def __setattr__(self, name: str, value: Any) -> None:
        # Every change reaches the compiled hot path too (rare: configure, a worker's job).
        object.__setattr__(self, name, value)
        if _c is not None and name[0] != "_":  # private: inputs to a public setting
            _c.set(name, value)

    def __init__(self) -> None:
        settings = _config.current()
        self.enabled = settings.enabled
        self.sample_rate = settings.trace_sample_rate
        self.max_spans = settings.trace_max_spans
        # The recorder is created by the first span, not by importing jobtrace (which must
        # not install signal handlers in a program that never records anything).
        self.record: Any = self._first_record
        self.remote_parent = _remote_parent_from_env()
        self.parent_job = os.environ.get(_config.ENV_PARENT_JOB) or None
        # The service is a per-process constant the hot path copies into each record, like
        # the host: decided here, on configure and when the process's first job changes.
        self._configured_service = settings.service
        self._framework_service: str | None = None
        self._job_service: str | None = None
        self.service = self._service()

    def _service(self) -> str:
        return (
            self._configured_service
            or self._framework_service
            or self._job_service
            or script_name()
        )

    def set_framework_service(self, name: str | None) -> None:
        """The service a framework layer was given (OSProfiler's ``project``/``service``)."""
        self._framework_service = name
        self.service = self._service()

    def set_job_service(self, name: str | None) -> None:
        """The process's first running job is now ``name`` (None: none runs)."""
        self._job_service = name
        self.service = self._service()

    def _first_record(self, record: model.Record) -> None:
        recorder = get_recorder()
        recorder.add_ticker(_clock.sync)
        self.record = recorder.record
        self.record(record)

    def apply(self, settings: _config.Settings) -> None:
        self.enabled = settings.enabled
        self.sample_rate = settings.trace_sample_rate
        self.max_spans = settings.trace_max_spans
        self._configured_service = settings.service
        self.service = self._service()
        # The bound method of the process's recorder, replaced on reconfigure.
        if self.record != self._first_record:
            self.record = get_recorder().record


def script_name() -> str:
    """The name of the program this process runs: its script's (``train`` for
    ``python train.py``), its package's for ``python -m package``, else ``python``."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 in {"", "-c", "-m"}:
        return "python"
    path = Path(argv0)
    if path.stem == "__main__":  # python -m package: the package's directory names it
        return path.absolute().parent.name or "python"
    return path.stem or "python"


def service() -> str:
    """The service name this process's spans carry: ``configure(service=...)`` or
    ``JOBTRACE_SERVICE``, else one given to a compatibility layer (OSProfiler's
    ``project-service``), else the name of the first job running here, else
    :func:`script_name`."""
    return _settings.service


def set_default_service(name: str | None) -> None:
    """Name this process's service unless ``configure(service=...)`` or
    ``JOBTRACE_SERVICE`` did (for compatibility layers given one; None forgets it)."""
    _settings.set_framework_service(name or None)


class _Clock:
    """Epoch nanoseconds from the monotonic clock: one clock read per span, not two.

    The offset between the two clocks is measured again on every recorder tick, so a
    stepped or slewed wall clock moves span start times within about a second.
    """

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = 0
        self.sync()

    def sync(self, _now: float | None = None) -> None:
        self.offset = _wall_ns() - _perf_ns()
        if _c is not None:
            _c.set("clock_offset", self.offset)


_clock = _Clock()


class _Process:
    __slots__ = ("host", "pid")

    def __init__(self) -> None:
        self.host = os.uname().nodename
        self.pid = os.getpid()
        if _c is not None:
            _c.set("host", self.host)
            _c.set("pid", self.pid)


def _remote_parent_from_env() -> RemoteParent | None:
    value = os.environ.get(_config.ENV_TRACEPARENT)
    return parse_traceparent(value) if value else None


def parse_traceparent(value: str) -> RemoteParent | None:
    """A W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex flags>``), or None if malformed."""
    parts = value.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    version, trace, span, flags = parts
    try:
        int(version, 16)
        trace_id, span_id = int(trace, 16), int(span, 16)
        sampled = bool(int(flags, 16) & 1)
    except ValueError:
        return None
    if version.lower() == "ff" or trace_id == 0 or span_id == 0:
        return None
    return RemoteParent(trace_id, span_id, sampled)


_settings = _Settings()
_process = _Process()
_config.on_configure(_settings.apply)
on_first_job(_settings.set_job_service)


def _after_fork() -> None:
    global _process, _thread_local
    _process = _Process()
    _clock.sync()
    _rng.seed(os.urandom(16))
    if _c is not None:
        _c.seed(os.urandom(32))
    _thread_local = threading.local()


os.register_at_fork(after_in_child=_after_fork)


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not lose the span
        return f"<unprintable {type(exc).__name__}>"


if _c is not None:
    _c.install(
        current_span_var,
        _current_job,
        UNSAMPLED,
        NEW_TRACE,
        model.SPAN,
        DROPPED_KEY,
        model.error_type_name,
        _message,
        _short_repr,
        _check_name,
        _check_info,
        lambda: _current_thread().name,
    )
    _c.seed(os.urandom(32))


def begin(name: str, info: dict[str, Any] | None) -> tuple[Span, Span | _Unsampled]:
    """Open a span under the current one and make it current: (the span object, what
    ``with`` would bind: the span itself, or UNSAMPLED)."""
    span = Span(name, info)
    return span, span.__enter__()


def current_span() -> Span | None:
    """The span running in this context (thread or task), or None."""
    span = current_span_var.get()
    return span if isinstance(span, Span) else None


def now_ns() -> tuple[int, int]:
    """(monotonic ns, epoch ns) of this instant, from one clock read: for a span timed
    outside :class:`Span` (the OSProfiler layer, whose points carry ids given by callers)."""
    t0 = _perf_ns()
    return t0, t0 + _clock.offset


def record_span(
    trace_id: int,
    span_id: int,
    parent_id: int | None,
    name: str,
    start: tuple[int, int],
    info: dict[str, Any] | None,
    error_type: str | None = None,
    error_message: str | None = None,
) -> None:
    """Record a span opened at ``start`` (from :func:`now_ns`) and ending now, with ids the
    caller chose. The hook for layers that keep their own id scheme; it goes through the
    same recorder, job attribution and enabled switch as every other span."""
    if not _settings.enabled:
        return
    duration = _perf_ns() - start[0]
    job = _job_var()
    _record_row(
        trace_id,
        span_id,
        parent_id,
        name,
        start[1],
        duration,
        info,
        error_type,
        error_message,
        _settings.parent_job if job is None else job.id,
    )
