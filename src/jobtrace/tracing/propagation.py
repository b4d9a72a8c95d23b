"""Carrying the trace context to where contextvars do not follow by themselves.

asyncio tasks inherit the context of the code that creates them, and forked processes
inherit the forking thread's. Threads, executors and spawned processes do not; these
helpers carry it:

- :func:`wrap` binds a callable to the current context (each call runs in a copy);
- :class:`Thread` and the executors of :mod:`jobtrace.tracing.executors` do that for every
  thread started or task submitted, and :func:`~jobtrace.tracing.propagate_threads` for
  plain ``threading.Thread`` and ``ThreadPoolExecutor`` (see :mod:`~jobtrace.tracing.threads`);
- :func:`child_env` gives a subprocess the environment that makes its spans join the
  current trace and job (``JOBTRACE_TRACEPARENT``, ``JOBTRACE_PARENT_JOB``), and
  :func:`in_process` wraps a function for ``multiprocessing`` so it runs, in the worker,
  under the submitting span;
- while a job runs, :func:`export_for_children` keeps that environment in ``os.environ``
  itself (with the store's URL and directory), so a child started without ``env=`` — a
  ``subprocess.run([sys.executable, "step.py"])``, a shell script that runs python, a
  ``multiprocessing`` spawn — belongs to the job too, as MLflow's children join a run
  through ``MLFLOW_RUN_ID``. A child started by ``subprocess`` joins the trace under the
  span current in the thread starting it; any other (``os.system``, a ``multiprocessing``
  spawn) under the span current when the job started (:func:`in_process` pins the
  submitting one). Restored when the process's last job ends.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from jobtrace import _config
from jobtrace.jobs import current_job
from jobtrace.tracing.spans import (
    UNSAMPLED,
    current_span_var,
    parse_traceparent,
)
from jobtrace.tracing.threads import CONTEXT_ATTR, run_in_own_context

T = TypeVar("T")


def wrap(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` bound to the current context: spans it opens, in any thread, are children
    of the span current now. Each call runs in its own copy of the context."""
    context = contextvars.copy_context()

    def run_in_context(*args: Any, **kwargs: Any) -> T:
        return context.copy().run(fn, *args, **kwargs)

    return run_in_context


class Thread(threading.Thread):
    """A ``threading.Thread`` whose target runs under the span current when it was made
    (:func:`~jobtrace.tracing.propagate_threads` does it for every thread, from ``start``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.__dict__[CONTEXT_ATTR] = contextvars.copy_context()

    def run(self) -> None:
        # Under propagate_threads the thread already runs in it, and finds it taken.
        run_in_own_context(self, super().run)


def carrier() -> dict[str, str]:
    """The current trace and job as plain strings, for another process."""
    out: dict[str, str] = {}
    from jobtrace.tracing import spans

    # The current span; else the parent this process was started under, if any.
    span = current_span_var.get()
    if span is None:
        span = spans._settings.remote_parent
    # An unsampled trace travels as such (its flags say so); NEW_TRACE carries nothing.
    if span is not None and not isinstance(span, spans._NewTrace):
        out[_config.ENV_TRACEPARENT] = span.traceparent()
    job = current_job()
    if job is not None and job.id:
        out[_config.ENV_PARENT_JOB] = job.id
    elif os.environ.get(_config.ENV_PARENT_JOB):
        out[_config.ENV_PARENT_JOB] = os.environ[_config.ENV_PARENT_JOB]
    return out


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) that carries the current trace and job::

    subprocess.run(["python", "step.py"], env=jobtrace.tracing.child_env())
    """
    out = dict(os.environ if env is None else env)
    out.pop(_config.ENV_TRACEPARENT, None)
    out.update(carrier())
    return out


class _InProcess:
    """A picklable callable that re-enters the submitter's trace and job in a worker."""

    def __init__(self, fn: Callable[..., Any], context: dict[str, str]) -> None:
        self.fn = fn
        self.context = context

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return contextvars.copy_context().run(self._run, args, kwargs)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from jobtrace.tracing import spans

        parent = parse_traceparent(self.context.get(_config.ENV_TRACEPARENT, ""))
        if parent is not None:
            # An unsampled caller's work stays unrecorded here too.
            current_span_var.set(parent if parent.sampled else UNSAMPLED)
        job_id = self.context.get(_config.ENV_PARENT_JOB)
        previous_job = spans._settings.parent_job
        if job_id and current_job() is None:
            spans._settings.parent_job = job_id
        try:
            return self.fn(*args, **kwargs)
        finally:
            spans._settings.parent_job = previous_job
            from jobtrace.recorder import get_recorder

            # A pool worker may be killed rather than exit; what it traced is written now.
            get_recorder().flush(timeout=10)


def in_process(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` prepared to run in another process under the current span and job (for
    ``multiprocessing.Pool.map`` and friends; ``fn`` must be picklable)."""
    return _InProcess(fn, carrier())


# -- the environment a running job gives the processes it starts ------------------------------

#: What a running job sets in ``os.environ`` for the processes it starts.
EXPORTED: Final = (
    _config.ENV_PARENT_JOB,
    _config.ENV_TRACEPARENT,
    _config.ENV_URL,
    _config.ENV_DIR,
)
# The values of EXPORTED before the first job of this process exported its own (None:
# unset), and the environment of the job exporting now; both None while no job runs.
_saved: dict[str, str | None] | None = None
_exported: dict[str, str] | None = None
_lock = threading.RLock()


def job_environment(job_id: str, settings: _config.Settings) -> dict[str, str]:
    """What a job started now gives its children: its id, the current trace, the store."""
    out = carrier()
    out[_config.ENV_PARENT_JOB] = job_id
    out[_config.ENV_URL] = settings.url
    out[_config.ENV_DIR] = str(settings.directory)
    return out


def export_for_children(env: Mapping[str, str] | None) -> None:
    """Put ``env`` (a :func:`job_environment`) in ``os.environ``; ``None`` restores what was
    there before the first export. Never raises (a job's start and end must not fail)."""
    global _saved, _exported
    try:
        with _lock:
            if env is None:
                if _saved is not None and _exported is not None:
                    # What the program changed meanwhile (configure(url=...)) stays.
                    exported = _exported
                    _set(
                        {
                            name: value
                            for name, value in _saved.items()
                            if os.environ.get(name) == exported.get(name)
                        }
                    )
                _saved = _exported = None
                return
            if _saved is None:
                _saved = {name: os.environ.get(name) for name in EXPORTED}
            _exported = dict(env)
            _set({name: env.get(name) for name in EXPORTED})
        _patch_subprocess()
    except Exception:  # the job runs on; its children just do not join it
        pass


def _set(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        elif os.environ.get(name) != value:
            os.environ[name] = value


_patching = False


def _patch_subprocess() -> None:
    """Make ``subprocess`` start a child that inherits this environment under the span
    current in the thread starting it (``os.environ`` holds the job's trace, from its
    start). Once per process, on the first job's start, and only when the program imports
    ``subprocess`` (jobtrace does not import it); a child given ``env=`` is left alone (it
    is the caller's to fill, e.g. with :func:`child_env`)."""
    global _patching
    if not _patching:
        _patching = True
        from jobtrace._import_hooks import when_imported

        when_imported("subprocess", _patch_popen)


def _patch_popen(module: Any) -> None:
    popen: Any = module.Popen
    original = popen._execute_child
    if getattr(original, "__jobtrace_wrapped__", False):
        return

    # `env` is the seventh parameter on every POSIX Python this package supports.
    def _execute_child(self: Any, *args: Any, **kwargs: Any) -> Any:
        if len(args) > _ENV_ARG and args[_ENV_ARG] is None and _exported is not None:
            env = _environ_under_current_span()
            if env is not None:
                args = (*args[:_ENV_ARG], env, *args[_ENV_ARG + 1 :])
        return original(self, *args, **kwargs)

    _execute_child.__jobtrace_wrapped__ = True  # type: ignore[attr-defined]
    _execute_child.__wrapped__ = original  # type: ignore[attr-defined]
    popen._execute_child = _execute_child


_ENV_ARG: Final = 6  # (args, executable, preexec_fn, close_fds, pass_fds, cwd, env, …)


def _environ_under_current_span() -> dict[str, str] | None:
    """A copy of ``os.environ`` naming the current span as the child's parent, or None
    when ``os.environ`` says so already (or there is no span, or anything fails)."""
    try:
        from jobtrace.tracing import spans

        span = current_span_var.get()
        if span is None or isinstance(span, spans._NewTrace):
            return None
        value = span.traceparent()
        if os.environ.get(_config.ENV_TRACEPARENT) == value:
            return None
        env = dict(os.environ)
        env[_config.ENV_TRACEPARENT] = value
        return env
    except Exception:  # the child starts as it would have; its spans start a new trace
        return None
