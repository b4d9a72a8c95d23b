"""OSProfiler's names, backed by jobtrace: switch by changing one import.

>>> from jobtrace import profiler            # was: from osprofiler import profiler
>>> profiler.init(hmac_key="secret")         # doctest: +SKIP
>>> with profiler.Trace("db", info={"q": "select 1"}):   # doctest: +SKIP
...     run()

``init(hmac_key, base_id=None, parent_id=None)`` starts a trace in this context (joining
an existing one when ``base_id`` and ``parent_id`` are given, as OSProfiler does when a
request arrives with trace headers); ``get()`` returns the current profiler (or None) with
``get_base_id()``, ``get_id()``, ``get_parent_id()`` and ``hmac_key``; ``clean()`` forgets
it. The trace points themselves are jobtrace's, recorded through its recorder.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from jobtrace.tracing.api import Trace, TracedMeta, start, stop, trace, trace_cls
from jobtrace.tracing.spans import RemoteParent, Span, current_span_var

__all__ = ["Trace", "TracedMeta", "clean", "get", "init", "start", "stop", "trace", "trace_cls"]


def _hex_to_int(value: str, width: int) -> int:
    text = value.replace("-", "").lower()  # OSProfiler ids are UUID strings
    number = int(text, 16)
    return number & ((1 << (4 * width)) - 1)


class _Profiler:
    """The per-context profiler object that OSProfiler's ``get()`` returns."""

    def __init__(self, hmac_key: str | bytes | None, parent: RemoteParent | None) -> None:
        self.hmac_key = hmac_key
        self._parent = parent

    def _current(self) -> Span | RemoteParent | None:
        span = current_span_var.get()
        return span if isinstance(span, Span | RemoteParent) else self._parent

    def get_base_id(self) -> str | None:
        """The trace id (OSProfiler's base id)."""
        span = self._current()
        return None if span is None else f"{span.trace_id:032x}"

    def get_id(self) -> str | None:
        """The id of the innermost open trace point."""
        span = self._current()
        return None if span is None else f"{span.span_id:016x}"

    def get_parent_id(self) -> str | None:
        span = current_span_var.get()
        if isinstance(span, Span) and span.parent_id is not None:
            return f"{span.parent_id:016x}"
        return None

    def start(self, name: str, info: dict[str, Any] | None = None) -> None:
        start(name, info)

    def stop(self, info: dict[str, Any] | None = None) -> None:
        stop(info)


# Like OSProfiler's thread-local profiler, but per context: right under asyncio too.
_profiler_var: ContextVar[_Profiler | None] = ContextVar("jobtrace_osprofiler", default=None)


def init(
    hmac_key: str | bytes | None, base_id: str | None = None, parent_id: str | None = None
) -> _Profiler:
    """Start profiling in this context; with ``base_id``/``parent_id``, join that trace."""
    parent = None
    if base_id and parent_id:
        parent = RemoteParent(_hex_to_int(base_id, 32), _hex_to_int(parent_id, 16) or 1, True)
        current_span_var.set(parent)
    profiler = _Profiler(hmac_key, parent)
    _profiler_var.set(profiler)
    return profiler


def get() -> _Profiler | None:
    """The profiler made by :func:`init`, or None."""
    return _profiler_var.get()


def clean() -> None:
    """Forget the profiler (and any remote parent set by :func:`init`)."""
    _profiler_var.set(None)
    if isinstance(current_span_var.get(), RemoteParent):
        current_span_var.set(None)
