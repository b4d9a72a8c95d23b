"""Jobs: one execution of a script, batch, training run or worker, recorded end to end.

>>> import jobtrace
>>> with jobtrace.job("train", experiment="resnet", params={"lr": 0.1}) as j:   # doctest: +SKIP
...     train()
>>> @jobtrace.job("nightly-etl")                                                # doctest: +SKIP
... def main(): ...

A job emits a snapshot record when it starts, a heartbeat snapshot every
``heartbeat_interval`` seconds from the recorder's thread (with the peak memory and CPU time
so far), and a final snapshot when it ends. Snapshots carry a growing ``seq`` so the store
keeps the newest whatever order they arrive in. A process that dies without a word leaves a
``running`` job whose heartbeat goes stale: readers report it as ``lost``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from jobtrace import _config, _ids, _resources, model
from jobtrace.errors import ConfigurationError
from jobtrace.recorder import Recorder, get_recorder
from jobtrace.report.result import ReportResult, log_result

if TYPE_CHECKING:
    from jobtrace.profiles.memory import MemorySession
    from jobtrace.profiles.sampler import ProfileSession

__all__ = ["Job", "current_job", "job"]

log = logging.getLogger("jobtrace")
_internal_log = logging.getLogger("jobtrace.jobs")

F = TypeVar("F", bound=Callable[..., Any])

_current: ContextVar[Job | None] = ContextVar("jobtrace_current_job", default=None)
# Jobs running in this process, for heartbeats and signals. Replaced, never edited, so the
# recorder thread can iterate it without a lock.
_active: tuple[Job, ...] = ()
# Reentrant: a SIGTERM handler may finish jobs while this thread is inside start/finish.
_active_lock = threading.RLock()
_hooked_recorders: set[int] = set()
_env_job_id_used = False
_MAX_ERROR_MESSAGE = 10_000
#: Most seconds a job's end waits for its records to reach the store before reading its
#: profile back for report.html.
_REPORT_DELIVERY_TIMEOUT = 5.0
# Column widths of the store (see jobtrace.store.schema): longer values are cut, not refused.
_MAX_NAME = 512
_MAX_SHORT = 256


def current_job() -> Job | None:
    """The innermost job running in this context (thread, task), or ``None``."""
    return _current.get()


def exit_status(code: object) -> int:
    """The status the operating system reports for ``sys.exit(code)``, as Python exits."""
    if code is None:
        return 0
    if isinstance(code, int):  # bool included: sys.exit(True) exits with 1
        return int(code) & 0xFF if -(2**31) <= code < 2**31 else 255
    return 1  # sys.exit("message") prints the message and exits with 1


def _json_safe(kind: str, values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Copy tags/params, replacing what JSON cannot hold by its repr (one log line each)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigurationError(f"job {kind} must be a mapping, got {type(values).__name__}")
    import orjson

    out: dict[str, Any] = {}
    for key, value in values.items():
        try:
            orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:
            _internal_log.warning(
                "jobtrace: %s %r is not JSON-serialisable (%s); stored as its repr",
                kind[:-1] if kind.endswith("s") else kind,
                key,
                type(value).__name__,
            )
            out[model.clean_text(str(key))] = model.clean_text(repr(value))
            continue
        out[model.clean_text(str(key))] = model.clean(value)
    return out


class Job:
    """A recorded job; use :func:`job` to make one. A context manager and a decorator."""

    def __init__(
        self,
        name: str | None = None,
        *,
        experiment: str | None = None,
        job_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        argv: list[str] | None = None,
        report: bool | None = None,
        memory: str | None = None,
        profile: bool | None = None,
        sample_hz: float | None = None,
    ) -> None:
        if job_id is not None and (not isinstance(job_id, str) or not _ids.is_valid_id(job_id)):
            raise ConfigurationError(
                f"job id {job_id!r} is not valid: use 1-128 printable characters without "
                "spaces or slashes"
            )
        if name is not None and not isinstance(name, str):
            raise ConfigurationError(f"job name must be a string, got {type(name).__name__}")
        if memory is not None and memory not in _config.MEMORY_MODES:
            raise ConfigurationError(
                f"memory={memory!r} is not one of {', '.join(_config.MEMORY_MODES)}"
            )
        self._memory_mode = memory
        self._memory: MemorySession | None = None
        if sample_hz is not None and not (
            isinstance(sample_hz, int | float) and 0 < sample_hz <= 1000
        ):
            raise ConfigurationError(
                f"sample_hz={sample_hz!r} must be a number of samples per second in (0, 1000]"
            )
        self._given_id = job_id
        # None: the settings decide (JOBTRACE_PROFILE, JOBTRACE_SAMPLE_HZ).
        self._profile = profile
        self._sample_hz = sample_hz
        self._profiler: ProfileSession | None = None
        self.id: str = job_id or ""
        self.name = None if name is None else model.clean_text(name, _MAX_NAME)
        self.experiment = None if experiment is None else model.clean_text(experiment, _MAX_SHORT)
        self.tags = _json_safe("tags", tags)
        self.params = _json_safe("params", params)
        self.argv = [model.clean_text(str(a)) for a in (sys.argv if argv is None else argv)]
        # None: the default, a report for a job, none for each call of a decorated function.
        self._report = report is not False
        self._report_given = report
        self.status = "created"
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.exit_code: int | None = None
        self.error_type: str | None = None
        self.error_message: str | None = None
        #: The formatted traceback of the exception the job failed with (its end kept).
        self.traceback: str | None = None
        self.report_dir: str | None = None
        self.result: ReportResult | None = None
        self._lock = threading.RLock()
        self._seq = 0
        self._signal: int | None = None
        self._token: Token[Job | None] | None = None
        self._recorder: Recorder | None = None
        # Resource accounting, set for real in start().
        self._peak_kb = 0
        self._children_start_kb = 0
        self._children_peak_kb = 0
        self._tree_peak_kb = 0
        self._last_heartbeat = 0.0
        self._heartbeat_interval = 0.0
        self._pid = 0
        self._host = ""
        self._enabled = True
        # What the job puts in os.environ for the processes it starts, while it runs.
        self._child_env: dict[str, str] | None = None

    def _clone(self) -> Job:
        return Job(
            self.name,
            experiment=self.experiment,
            job_id=self._given_id,
            tags=self.tags,
            params=self.params,
            report=self._report,
            memory=self._memory_mode,
            profile=self._profile,
            sample_hz=self._sample_hz,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Job:
        """Start recording; returns the job. Prefer ``with job(...)``."""
        global _active, _env_job_id_used
        if self.status != "created":
            raise ConfigurationError(f"job {self.id} was already started")
        settings = _config.current()
        if not self.id:
            with _active_lock:
                env_id = os.environ.get(_config.ENV_JOB_ID)
                # The environment's id belongs to the process's first job only; nested or
                # later jobs, and child processes, get their own ids rather than take it.
                if env_id and not _env_job_id_used and not _active:
                    if not _ids.is_valid_id(env_id):
                        raise ConfigurationError(
                            f"{_config.ENV_JOB_ID}={env_id!r} is not a valid job id"
                        )
                    self.id = env_id
                    _env_job_id_used = True
                    os.environ.pop(_config.ENV_JOB_ID, None)
                else:
                    self.id = _ids.time_ordered_id()
        if self.name is None:
            self.name = Path(self.argv[0]).stem if self.argv and self.argv[0] else "job"
        if self.experiment is None:
            self.experiment = settings.experiment
        self._heartbeat_interval = settings.heartbeat_interval
        self._reports_dir = settings.reports_dir
        self._reports_keep = settings.reports_keep
        self._store_url = settings.url
        self._pid = os.getpid()
        self._host = model.clean_text(os.uname().nodename, _MAX_SHORT)
        if not settings.enabled:
            # Recording is off: the job is inert (current_job() still returns it).
            self.start_time = time.time()
            self._mono_start = time.perf_counter()
            self._cpu_start = _resources.CpuTimes.now()
            self.status = "running"
            self._enabled = False
            return self

        with _active_lock:
            # Resetting the process's memory high-water mark would hide the peaks of jobs
            # already running, so fold the mark into each of them first.
            peak_now = _resources.self_peak_kb()
            for other in _active:
                other._peak_kb = max(other._peak_kb, peak_now)
            _resources.reset_peak()
            self._peak_kb = _resources.self_peak_kb()
            self._children_start_kb = _resources.children_peak_kb()
            self._children_peak_kb = 0
            self._tree_peak_kb = 0
            self._cpu_start = _resources.CpuTimes.now()
            self.start_time = time.time()
            self._mono_start = time.perf_counter()
            self._last_heartbeat = self.start_time
            self.status = "running"
            _active = (*_active, self)
            self._child_env = _child_environment(self.id, settings)
            _export_for_children()
            first = _active[0].name
        _notify_first_job(first)

        rec = self._recorder = get_recorder()
        _hook(rec)
        # The profile (time, timeline and peak memory alike) is on unless turned off, and
        # one job per process is profiled at a time: a job inside a profiled one is not.
        profiled = self._profile if self._profile is not None else settings.profile
        if profiled:
            from jobtrace.profiles import sampler

            profiled = sampler.current_session() is None
        if profiled:
            self._begin_memory(self._memory_mode or settings.memory)
        self._emit()
        rec.ensure_started()
        if profiled:
            self._profiler = sampler.start(self.id, self._sample_hz or settings.sample_hz)
        return self

    def _sample(self) -> None:
        self._peak_kb = max(self._peak_kb, _resources.self_peak_kb())
        children = _resources.children_peak_kb()
        if children > self._children_start_kb:
            self._children_peak_kb = children

    def _begin_memory(self, mode: str) -> None:
        if mode != "off":
            from jobtrace.profiles import memory

            self._memory = memory.begin(self.id, mode)

    def _record_memory(self, *, final: bool) -> None:
        """Record the peak-memory profile (at the end, or at a heartbeat if the peak grew);
        the job's peak becomes the profile's, so the two always agree."""
        session = self._memory
        if session is None or self._recorder is None:
            return
        try:
            now = time.time()
            if final:
                self._memory = None
                peak_kb, rec = session.finish(self._peak_kb, now)
            else:
                update = session.heartbeat(self._peak_kb, now)
                if update is None:
                    return
                peak_kb, rec = update
            self._peak_kb = max(self._peak_kb, peak_kb)
            self._recorder.record(rec)
        except Exception:  # the profile is a bonus; the job's own record must go on
            _internal_log.warning("jobtrace: the memory profile of job %s failed", self.id)

    @property
    def peak_memory_kb(self) -> int:
        """Peak RSS so far in KiB: the largest of this process's high-water mark since the
        job started (or its memory profile's peak, when that is larger: allocated memory
        not yet touched), the largest waited-for child's, and the sampled size of the live
        process tree."""
        return max(self._peak_kb, self._children_peak_kb, self._tree_peak_kb)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (so far, while running)."""
        if self.start_time is None:
            return None
        if self.end_time is not None:
            return self.end_time - self.start_time
        return time.perf_counter() - self._mono_start

    def heartbeat(self, now: float | None = None) -> None:
        """Record that the job is alive, with its resource use so far."""
        with self._lock:
            if self.status != "running":
                return
            tree = _resources.tree_rss_kb()
            if tree is not None:
                self._tree_peak_kb = max(self._tree_peak_kb, tree)
            self._sample()
            self._last_heartbeat = time.time() if now is None else now
            self._record_memory(final=False)
            self._emit()

    def finish(
        self,
        status: str | None = None,
        *,
        exit_code: int | None = None,
        error: BaseException | tuple[str, str] | None = None,
    ) -> ReportResult | None:
        """End the job: record its final state, write its report (report.json, then
        report.html once its records reached the store; with a server, uploaded
        encrypted) and log a ReportResult to the ``jobtrace`` logger.

        ``status`` defaults to ``failed`` when ``error`` is given, else ``succeeded``.
        Calling it again does nothing and returns the first result.
        """
        global _active
        with self._lock:
            if self.status != "running" or os.getpid() != self._pid:
                return self.result
            if not self._enabled:
                self.status = status or ("failed" if error is not None else "succeeded")
                self.end_time = time.time()
                return None
            if status is None:
                status = "failed" if error is not None else "succeeded"
            if status not in model.JOB_STATUSES or status in {"running", "lost"}:
                raise ConfigurationError(f"a job cannot finish as {status!r}")
            # Leave the active set first, so no heartbeat races the final snapshot.
            with _active_lock:
                _active = tuple(j for j in _active if j is not self)
                _export_for_children()
                first = _active[0].name if _active else None
            _notify_first_job(first)
            if self._profiler is not None:
                self._profiler.finish()  # the profile's last records precede the snapshot
            # The duration comes from the monotonic clock; the end time follows from it.
            duration = time.perf_counter() - self._mono_start
            self.end_time = (self.start_time or time.time()) + duration
            self._last_heartbeat = self.end_time
            self._sample()
            self._record_memory(final=True)
            self.status = status
            self.exit_code = exit_code
            if error is not None:
                if isinstance(error, BaseException):
                    error_type, message = model.error_type_name(error), _message(error)
                    if not isinstance(error, SystemExit):  # sys.exit(2) is no crash
                        self.traceback = model.traceback_text(error)
                else:
                    error_type, message = error
                self.error_type = model.clean_text(error_type, _MAX_SHORT)
                self.error_message = model.clean_text(message, _MAX_ERROR_MESSAGE)
            if self._report:
                try:
                    from jobtrace.report.directory import write_report

                    self.report_dir = str(
                        write_report(self._reports_dir, self.to_dict(), keep=self._reports_keep)
                    )
                except Exception as exc:
                    _internal_log.warning(
                        "jobtrace: cannot write the report of job %s: %s", self.id, exc
                    )
            self._emit()
            self.result = ReportResult(
                job_id=self.id,
                job_time=_iso(self.start_time),
                name=self.name,
                experiment=self.experiment,
                status=self.status,
                duration_ms=duration * 1000.0,
                peak_memory_kb=self.peak_memory_kb,
                exit_code=self.exit_code,
                error_type=self.error_type,
                error_message=self.error_message,
                report_dir=self.report_dir,
                records_dropped=self.records_dropped,
            )
        if self.report_dir is not None:
            self._complete_report()
        try:
            log_result(log, self.result)
        except Exception:  # a user's broken handler must not break the job's end
            _internal_log.debug("jobtrace: logging the job result failed", exc_info=True)
        return self.result

    def _complete_report(self) -> None:
        """Add the profile (report.html) to the report directory and, with a server as the
        store, upload it encrypted; outside the job's lock, as it flushes the recorder."""
        from jobtrace.report.job_report import complete_report

        rec = self._recorder

        def flush() -> bool:
            # Bounded: a stuck or down sink costs the job's end at most a few seconds, and
            # its report is then written without the profile. With the sink down, what
            # waits goes to the spool first (as the exit flush would send it), before the
            # report's files take room: on a nearly full disk the job's final state
            # matters more than its report page.
            if rec is None or rec.deliver(_REPORT_DELIVERY_TIMEOUT):
                return True
            rec.spool_if_down()
            return False

        keys = complete_report(Path(str(self.report_dir)), self.to_dict(), self._store_url, flush)
        if keys.download_key is not None and self.result is not None:
            self.result = self.result._replace(**keys._asdict())

    @property
    def records_dropped(self) -> dict[str, int] | None:
        """This job's records the recorder dropped so far, by kind (``None``: none).

        Records are dropped only when the spool is full (``JOBTRACE_SPOOL_MAX_BYTES``) or
        the disk refuses; the stored job, its report and its result show the counts."""
        rec = self._recorder
        return None if rec is None or not self.id else rec.records_dropped(self.id)

    def to_dict(self) -> dict[str, Any]:
        """The job's fields as the store holds them."""
        return dict(zip(model.FIELDS[model.JOB], self._record()[1:], strict=True))

    def _record(self) -> model.Record:
        cpu = _resources.CpuTimes.now().since(self._cpu_start)
        return (
            model.JOB,
            self.id,
            self._seq,
            self.name,
            self.experiment,
            self.status,
            self.start_time,
            self.end_time,
            self.duration if self.end_time is not None else None,
            self.peak_memory_kb,
            cpu.user,
            cpu.sys,
            self.exit_code,
            self.error_type,
            self.error_message,
            self._host,
            self._pid,
            self.argv,
            self.tags,
            self.params,
            self._last_heartbeat,
            self._heartbeat_interval,
            self.report_dir,
            self.records_dropped,
            self.traceback,
        )

    def _emit(self) -> None:
        with self._lock:
            # Nanosecond time, not a counter: a rerun under the same job id (a retry) must
            # supersede the earlier run's snapshots, which a restarting counter would not.
            self._seq = max(self._seq + 1, time.time_ns())
            rec = self._record()
        if self._recorder is not None:
            self._recorder.record_control(rec)

    # -- context manager and decorator ----------------------------------------------------

    def __enter__(self) -> Job:
        self.start()
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            # Exiting in another context (e.g. from a generator) cannot restore; harmless.
            with contextlib.suppress(ValueError):
                _current.reset(self._token)
            self._token = None
        status, exit_code, error = outcome(exc, self._signal)
        self.finish(status, exit_code=exit_code, error=error)

    @overload
    def __call__(self, fn: F) -> F: ...
    @overload
    def __call__(self, fn: None = None) -> None: ...
    def __call__(self, fn: Any = None) -> Any:
        """Decorate ``fn`` so that every call runs as a new job with these settings.

        The calls write no report directory unless the job was made with ``report=True``,
        and are not profiled unless it was made with ``profile=True``:
        a decorated function is usually called many times (per file, per request), and a
        directory per call would fill the disk; each call is still a job in the store and
        logs its :class:`ReportResult`.
        """
        if fn is None or not callable(fn):
            raise TypeError("a Job decorates a function")
        if self._report_given is None:
            self._report = False
        if self._profile is None:
            # Nor a profile, for the same reason: a sampler thread per call would cost
            # each call more than the job itself (about a millisecond).
            self._profile = False
        if self.name is None:
            self.name = getattr(fn, "__qualname__", None) or "job"

        import inspect

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self._clone():
                    return await fn(*args, **kwargs)

            return run_async

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self._clone():
                return fn(*args, **kwargs)

        return run

    def __repr__(self) -> str:
        return f"<Job {self.id or '(not started)'} {self.name!r} {self.status}>"


def outcome(
    exc: BaseException | None, signum: int | None = None
) -> tuple[str, int | None, BaseException | tuple[str, str] | None]:
    """(status, exit code, error) for a job ending with ``exc`` (None: ended normally)."""
    if exc is None:
        return "succeeded", None, None
    if isinstance(exc, SystemExit):
        exit_code = exit_status(exc.code)
        if exit_code == 0:
            return ("killed", 0, None) if signum else ("succeeded", 0, None)
        return ("killed" if signum else "failed"), exit_code, ("SystemExit", str(exc.code))
    if isinstance(exc, KeyboardInterrupt):
        return "killed", 128 + signal.SIGINT, ("KeyboardInterrupt", "interrupted")
    return ("killed" if signum else "failed"), 1, exc


@overload
def job(name: F) -> F: ...
@overload
def job(
    name: str | None = None,
    *,
    experiment: str | None = None,
    job_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    report: bool | None = None,
    memory: str | None = None,
    profile: bool | None = None,
    sample_hz: float | None = None,
) -> Job: ...
def job(
    name: Any = None,
    *,
    experiment: str | None = None,
    job_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    report: bool | None = None,
    memory: str | None = None,
    profile: bool | None = None,
    sample_hz: float | None = None,
) -> Any:
    """A job: ``with jobtrace.job("etl"):`` or ``@jobtrace.job("etl")`` (or bare ``@jobtrace.job``).

    ``job_id`` defaults to ``$JOBTRACE_JOB_ID`` for the process's first job, else a new
    time-ordered id; ``experiment`` to ``$JOBTRACE_EXPERIMENT``. Tags and params are JSON
    values (anything else is stored as its repr). ``report``: write the job's report
    directory (``$JOBTRACE_DIR/reports/<id>/report.json``) when it ends; by default a
    ``with`` job does and the calls of a decorated function do not. Only the newest
    ``$JOBTRACE_REPORTS_KEEP`` report directories are kept (1,000 by default).
    ``memory``: the peak-memory profile, ``"approximate"`` (default), ``"exact"`` (memray)
    or ``"off"`` (default ``$JOBTRACE_MEMORY``; see :mod:`jobtrace.profiles.memory`).

    ``profile``: sample where the job's threads spend their time (wall and CPU time, and a
    timeline of RSS and CPU use), on by default (``$JOBTRACE_PROFILE=0`` turns it off);
    ``sample_hz`` samples a second (``$JOBTRACE_SAMPLE_HZ``, 100 by default). One job per
    process is profiled at a time; its ``multiprocessing`` children are profiled with it.
    The calls of a decorated function are not profiled unless ``profile=True``.
    ``profile=False`` turns the whole profile off, peak memory included.
    """
    if callable(name):
        return Job()(name)
    return Job(
        name,
        experiment=experiment,
        job_id=job_id,
        tags=tags,
        params=params,
        report=report,
        memory=memory,
        profile=profile,
        sample_hz=sample_hz,
    )


def _message(error: BaseException) -> str:
    """``str(error)``, or a note when the exception's own ``__str__`` fails."""
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__}'s message could not be read>"


def _iso(epoch: float | None) -> str:
    from jobtrace._clock import iso

    return iso(epoch) or ""


# -- process-wide hooks ----------------------------------------------------------------------


def _hook(rec: Recorder) -> None:
    """Register the heartbeat ticker and the signal listener on ``rec`` once."""
    if id(rec) in _hooked_recorders:
        return
    with _active_lock:
        if id(rec) in _hooked_recorders:
            return
        _hooked_recorders.add(id(rec))
    rec.add_ticker(_tick)
    rec.add_terminate_listener(_on_terminate)


def _child_environment(job_id: str, settings: _config.Settings) -> dict[str, str] | None:
    from jobtrace.tracing.propagation import job_environment

    try:
        return job_environment(job_id, settings)
    except Exception:  # the job runs on; its children just do not join it
        _internal_log.debug("jobtrace: no environment for job %s's children", job_id, exc_info=True)
        return None


def _export_for_children() -> None:
    """Give the processes started from now on the environment of the newest job running in
    this process (restored to what it was when none runs). Called with ``_active_lock``."""
    from jobtrace.tracing.propagation import export_for_children

    pid = os.getpid()
    running = [j._child_env for j in _active if j._pid == pid and j._child_env is not None]
    export_for_children(running[-1] if running else None)


def _tick(now: float) -> None:
    for j in _active:
        if now - j._last_heartbeat >= j._heartbeat_interval:
            j.heartbeat(now)


def _on_terminate(signum: int, fatal: bool) -> None:
    for j in _active:
        if os.getpid() != j._pid:
            continue
        if fatal:
            name = signal.Signals(signum).name
            j.finish("killed", exit_code=128 + signum, error=("Signal", f"terminated by {name}"))
        elif signum == signal.SIGTERM:
            # The program has its own handler; if it ends the job with an exception, the
            # job reads `killed` (see outcome()); if it carries on, nothing changes. SIGINT
            # needs no note: its KeyboardInterrupt says `killed` by itself, and a program
            # that catches it and carries on was not killed.
            j._signal = signum


#: Called with the name of the process's first running job (None: no job runs) whenever
#: it changes: tracing names its service after it unless one is configured.
_first_job_listeners: list[Callable[[str | None], None]] = []


def on_first_job(listener: Callable[[str | None], None]) -> None:
    """Call ``listener(name)`` now, with the name of the process's first running job (None:
    none runs), and whenever that changes."""
    with _active_lock:
        _first_job_listeners.append(listener)
        first = _active[0].name if _active else None
    listener(first)


def _notify_first_job(name: str | None) -> None:
    for listener in _first_job_listeners:
        listener(name)


def _forget_jobs_after_fork() -> None:
    global _active
    # Jobs belong to the process that started them; a forked child must not heartbeat or
    # finish them (its records still carry the job's id through the context variable).
    _active = ()


os.register_at_fork(after_in_child=_forget_jobs_after_fork)
