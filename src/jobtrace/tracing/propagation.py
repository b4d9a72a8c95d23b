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
  under the submitting span.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

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
