"""Tracing: nested, timed trace points across threads, asyncio tasks, processes and services.

The five ways to add a trace point (:func:`start`/:func:`stop`, :func:`trace`,
:class:`Trace`, :func:`trace_cls`, :class:`TracedMeta`) are re-exported by ``jobtrace``;
this package adds the helpers that carry the context where it does not follow by itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobtrace.tracing.api import Trace, TracedMeta, start, stop, trace, trace_cls
from jobtrace.tracing.propagation import Thread, carrier, child_env, in_process, wrap
from jobtrace.tracing.spans import Span, current_span, parse_traceparent

if TYPE_CHECKING:
    from jobtrace.tracing.executors import ProcessPoolExecutor, ThreadPoolExecutor

__all__ = [
    "ProcessPoolExecutor",
    "Span",
    "Thread",
    "ThreadPoolExecutor",
    "Trace",
    "TracedMeta",
    "carrier",
    "child_env",
    "current_span",
    "in_process",
    "parse_traceparent",
    "start",
    "stop",
    "trace",
    "trace_cls",
    "wrap",
]


def __getattr__(name: str) -> Any:
    if name in {"ProcessPoolExecutor", "ThreadPoolExecutor"}:
        from jobtrace.tracing import executors

        return getattr(executors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
