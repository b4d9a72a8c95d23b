"""Tracing: nested, timed trace points across threads, asyncio tasks, processes and services.

The five ways to add a trace point (:func:`start`/:func:`stop`, :func:`trace`,
:class:`Trace`, :func:`trace_cls`, :class:`TracedMeta`) are re-exported by ``jobtrace``;
this package adds the helpers that carry the context where it does not follow by itself:
to threads, executors and processes (:mod:`~jobtrace.tracing.propagation`; for every
plain thread and thread pool, :func:`propagate_threads`), and between
services over HTTP, in signed headers (:mod:`~jobtrace.tracing.web`; the ``requests`` and
``httpx`` helpers load on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobtrace.tracing.api import Trace, TracedMeta, start, stop, trace, trace_cls
from jobtrace.tracing.propagation import Thread, carrier, child_env, in_process, wrap
from jobtrace.tracing.signing import TraceHeaderError, TraceSigner
from jobtrace.tracing.spans import Span, current_span, parse_traceparent
from jobtrace.tracing.threads import propagate_threads, stop_propagating_threads
from jobtrace.tracing.web import ASGIMiddleware, WSGIMiddleware, headers, inject

if TYPE_CHECKING:
    from jobtrace.tracing.executors import ProcessPoolExecutor, ThreadPoolExecutor
    from jobtrace.tracing.web_httpx import AsyncTracingTransport, TracingTransport
    from jobtrace.tracing.web_requests import TracingAdapter, traced_session

# Names from modules that import a third-party library: loaded on first use.
_LAZY = {
    "ProcessPoolExecutor": "executors",
    "ThreadPoolExecutor": "executors",
    "AsyncTracingTransport": "web_httpx",
    "TracingTransport": "web_httpx",
    "TracingAdapter": "web_requests",
    "traced_session": "web_requests",
}

__all__ = [
    "ASGIMiddleware",
    "AsyncTracingTransport",
    "ProcessPoolExecutor",
    "Span",
    "Thread",
    "ThreadPoolExecutor",
    "Trace",
    "TraceHeaderError",
    "TraceSigner",
    "TracedMeta",
    "TracingAdapter",
    "TracingTransport",
    "WSGIMiddleware",
    "carrier",
    "child_env",
    "current_span",
    "headers",
    "in_process",
    "inject",
    "parse_traceparent",
    "propagate_threads",
    "start",
    "stop",
    "stop_propagating_threads",
    "trace",
    "trace_cls",
    "traced_session",
    "wrap",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        import importlib

        return getattr(importlib.import_module(f"jobtrace.tracing.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
