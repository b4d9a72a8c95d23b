"""OSProfiler's ``osprofiler.profiler``, backed by jobtrace: switch by changing one import.

>>> from jobtrace import profiler            # was: from osprofiler import profiler
>>> p = profiler.init("secret-key", base_id="4e3e0ec6-2938-40b1-8504-09eb1d4b0dee")
>>> p.get_base_id()
'4e3e0ec6-2938-40b1-8504-09eb1d4b0dee'
>>> with profiler.Trace("db", info={"query": "select 1"}):
...     inner = p.get_id()
>>> p.get_id() == p.get_base_id() != inner
True
>>> profiler.clean()

The rules are OSProfiler's, so a service that switches keeps behaving the same:

- Nothing is recorded until :func:`init` has made a profiler in this context (or a
  :class:`~jobtrace.compat.osprofiler.web.WsgiMiddleware` did, for a request carrying a
  verified trace header, or jobtrace's own middleware joined the request to a trusted
  caller); every other call is ignored, as OSProfiler documents.
- A second :func:`init` in the same context keeps the first profiler; :func:`clean` drops it.
- ``init(hmac_key, base_id, parent_id)`` keeps the ids as given: ``get_base_id()``,
  ``get_parent_id()`` and ``get_id()`` return those strings (a UUID keeps its dashes, any
  text is accepted), and the points carry them (see below).
- :func:`trace`, :class:`Trace`, :func:`trace_cls` and :class:`TracedMeta` go through this
  module's :func:`start` and :func:`stop`, with OSProfiler's info dicts (``function`` with
  ``name``, ``args`` and ``kwargs`` on start; ``function.result`` or ``etype``/``message``
  on stop); :func:`trace_cls` traces inherited methods too, and both take
  ``allow_multiple_trace``.

How the points are stored: each is one jobtrace span. OSProfiler's ``base_id`` is the trace
id: a 32-hex id or UUID is used as is (so ``jobtrace trace show <uuid>`` finds it), other
text is hashed to 128 bits and kept in the first point's info as ``osprofiler.base_id``
(``jobtrace trace show`` hashes such an id the same way). A point's own id is a 64-bit
jobtrace span id, which ``get_id()`` returns as 16 hex digits; a given parent id that is not
one is mapped the way OSProfiler's OpenTracing drivers do (the low 64 bits of a UUID) and
kept as ``osprofiler.parent_id``. Info given to :func:`stop` lands on the stop message when
the spans are shown as OSProfiler notifications (``jobtrace trace show --osprofiler``).

Differs on purpose: the profiler lives in a :class:`contextvars.ContextVar`, not a
thread-local, so asyncio tasks each see the one of the code that created them; arguments and
results are recorded with a bounded ``repr``; ``async def`` functions are timed until they
finish. A notifier set with :mod:`~jobtrace.compat.osprofiler.notifier` sees every message.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import os
import random
import socket
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from jobtrace.compat.osprofiler import notifier
from jobtrace.tracing.api import rewrap
from jobtrace.tracing.spans import (
    JoinedTrace,
    RemoteParent,
    Span,
    _check_info,
    _short_repr,
    current_span_var,
    joined_trace_var,
    now_ns,
    record_span,
)

__all__ = [
    "Trace",
    "TracedMeta",
    "clean",
    "get",
    "init",
    "start",
    "stop",
    "trace",
    "trace_cls",
    "trace_id_for",
]

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

_MASK64 = (1 << 64) - 1
_HEX = frozenset("0123456789abcdef")
_rng = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(16)))

#: Info keys the layer adds to a point for OSProfiler's view of it.
BASE_ID_KEY = "osprofiler.base_id"
PARENT_ID_KEY = "osprofiler.parent_id"
STOP_INFO_KEY = "osprofiler.stop"


# -- ids -------------------------------------------------------------------------------------


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and _HEX.issuperset(text)


def _hex32(text: str) -> str | None:
    """``text`` as 32 lowercase hex digits if it is a 32-hex id or a UUID, else None."""
    lowered = text.strip().lower()
    if len(lowered) == 36 and lowered.count("-") == 4:
        lowered = lowered.replace("-", "")
    return lowered if _is_hex(lowered, 32) and int(lowered, 16) else None


def _derived(text: str, size: int) -> int:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).digest()
    return int.from_bytes(digest, "big") or 1


def _trace_int(base_id: str) -> int:
    found = _hex32(base_id)
    return int(found, 16) if found is not None else _derived(base_id, 16)


def _span_int(point_id: str) -> int:
    lowered = point_id.strip().lower()
    if _is_hex(lowered, 16) and int(lowered, 16):
        return int(lowered, 16)
    found = _hex32(point_id)
    if found is not None and int(found, 16) & _MASK64:
        return int(found, 16) & _MASK64  # as OSProfiler's OpenTracing drivers shorten UUIDs
    return _derived(point_id, 8)


def trace_id_for(base_id: str) -> str:
    """The jobtrace trace id (32 hex digits) that holds the points of OSProfiler base id
    ``base_id``: the id itself for a UUID or 32-hex id, a hash of it otherwise."""
    return f"{_trace_int(str(base_id)):032x}"


def _new_trace_id() -> str:
    from jobtrace import _ids

    return _ids.trace_id()


@functools.cache
def _hostname() -> str:
    """The host name OSProfiler puts in every message (asked once: a system call)."""
    return socket.gethostname()


def _class_name(obj: Any) -> str:
    """``ValueError`` for builtins, ``package.module.Error`` otherwise (as OSProfiler)."""
    cls = obj if isinstance(obj, type) else type(obj)
    module = getattr(cls, "__module__", None)
    if module in (None, "builtins", "exceptions"):
        return str(cls.__qualname__)
    return f"{module}.{cls.__qualname__}"


# -- the profiler ------------------------------------------------------------------------------


class _Point(RemoteParent):
    """One open trace point. It is also what jobtrace spans opened inside it see as their
    parent (a :class:`RemoteParent`: ids, sampled, the trace's shared cap state)."""

    __slots__ = (
        "id_text",
        "info",
        "name",
        "outer_point",
        "outer_span",
        "owner",
        "parent_id",
        "parent_text",
        "start",
    )

    def __init__(
        self,
        owner: _Profiler,
        span_id: int,
        parent_id: int | None,
        parent_text: str,
        name: str,
        info: dict[str, Any],
    ) -> None:
        # Not RemoteParent.__init__: the points of one profiler share one cap state.
        self.trace_id = owner._trace_int
        self.span_id = span_id
        self.sampled = True
        self._state = owner._state
        self.owner = owner
        self.id_text = f"{span_id:016x}"
        self.parent_id = parent_id
        self.parent_text = parent_text
        self.name = name
        self.info = info
        # What was current before, in this context: restored when the point stops.
        self.outer_span = current_span_var.get()
        self.outer_point = _point_var.get()
        self.start = now_ns()


# The innermost open point in this context (thread or asyncio task): each task that shares
# a profiler nests its own points, so concurrent tasks never close each other's.
_point_var: ContextVar[_Point | None] = ContextVar("jobtrace_osprofiler_point", default=None)


class _Profiler:
    """The profiler :func:`init` makes (OSProfiler's class of the same name).

    ``_trace_stack`` holds the ids as OSProfiler's does: base id, parent id, then one per
    open point; ``_name`` the names of the open points. Which point is current is decided
    per context, so the getters answer for the calling thread or task.
    """

    def __init__(
        self,
        hmac_key: str | bytes | None,
        base_id: str | None = None,
        parent_id: str | None = None,
    ) -> None:
        self.hmac_key = hmac_key
        if not base_id:
            # Inside a jobtrace span, the profiler joins that trace; else it starts one.
            current = current_span_var.get()
            if isinstance(current, Span | RemoteParent):  # not UNSAMPLED, NEW_TRACE or None
                base_id = f"{current.trace_id:032x}"
                parent_id = parent_id or f"{current.span_id:016x}"
            else:
                base_id = _new_trace_id()
        base_id = str(base_id)
        parent_id = None if parent_id is None else str(parent_id)
        self._trace_stack: collections.deque[str] = collections.deque(
            [base_id, parent_id or base_id]
        )
        self._name: collections.deque[str] = collections.deque()
        self._trace_int = _trace_int(base_id)
        # A parent id equal to the base id means "no parent point" (OSProfiler's roots).
        root_parent = not parent_id or parent_id == base_id
        self._parent_int = None if root_parent else _span_int(parent_id or "")
        if self._parent_int == self._trace_int & _MASK64:
            self._parent_int = None  # a jobtrace header sent from a root: no parent point
        given: dict[str, Any] = {}
        if f"{self._trace_int:032x}" != base_id:
            given[BASE_ID_KEY] = base_id
        if self._parent_int is not None and f"{self._parent_int:016x}" != parent_id:
            given[PARENT_ID_KEY] = parent_id
        self._given = given
        self._open: list[_Point] = []
        # The per-trace cap state shared by every point (and the jobtrace spans inside them).
        self._state: Any = RemoteParent(self._trace_int, 1, True)._state
        self._entered: tuple[RemoteParent, Any] | None = None
        # The keys of the middleware whose request this profiler was made for, if any.
        self._signer: Any = None

    def _point(self) -> _Point | None:
        """The innermost point of this profiler open in the calling context."""
        point = _point_var.get()
        return point if point is not None and point.owner is self else None

    def get_shorten_id(self, uuid_id: str | int) -> str:
        """A 64-bit id (hex) for ``uuid_id``, as OSProfiler's OpenTracing drivers make it."""
        if isinstance(uuid_id, int):
            return format(uuid_id & _MASK64, "x")
        return format(_span_int(uuid_id), "x")

    def get_base_id(self) -> str:
        """The id shared by every point of the trace, as given to :func:`init`."""
        return self._trace_stack[0]

    def get_parent_id(self) -> str:
        """The id of the current point's parent (the base id when no point is open)."""
        point = self._point()
        return point.parent_text if point is not None else self._trace_stack[0]

    def get_id(self) -> str:
        """The id of the innermost open point (the parent id given to :func:`init` when
        no point is open)."""
        point = self._point()
        return point.id_text if point is not None else self._trace_stack[1]

    def _wire_ids(self) -> tuple[str, str, int, int]:
        """(base id, parent id, trace id, span id) a header sent now carries: the innermost
        open point, a jobtrace span opened inside it included, else the parent given to
        :func:`init`, or for a root the trace's own low 64 bits, which the receiving
        profiler reads back as "no parent point"."""
        current = current_span_var.get()
        if isinstance(current, Span) and current.trace_id == self._trace_int:
            return self.get_base_id(), f"{current.span_id:016x}", self._trace_int, current.span_id
        point = self._point()
        if point is not None:
            return self.get_base_id(), point.id_text, self._trace_int, point.span_id
        span_id = self._root_span_id() if self._parent_int is None else self._parent_int
        return self.get_base_id(), self.get_id(), self._trace_int, span_id

    def _root_span_id(self) -> int:
        return (self._trace_int & _MASK64) or 1

    def _as_context(self) -> RemoteParent:
        """What jobtrace spans opened before any point see as their parent: this trace."""
        span_id = self._root_span_id() if self._parent_int is None else self._parent_int
        return RemoteParent(self._trace_int, span_id, True)

    def start(self, name: str, info: dict[str, Any] | None = None) -> None:
        """Open a point named ``name`` under the current one."""
        try:
            point_info: dict[str, Any] = (
                {} if info is None else dict(info) if type(info) is dict else {}
            )
            if type(info) is not dict and info is not None:
                _check_info(info)  # logs once; the point goes without it
            current = current_span_var.get()
            parent = current if type(current) is _Point and current.owner is self else None
            if parent is not None:
                point = _Point(
                    self, _rng.getrandbits(64) or 1, parent.span_id, parent.id_text,
                    str(name), point_info,
                )  # fmt: skip
            elif isinstance(current, Span) and current.trace_id == self._trace_int:
                # Inside a jobtrace span of this trace (opened in a point, or the server
                # span of a joined request): the point is its child.
                if BASE_ID_KEY in self._given:
                    point_info[BASE_ID_KEY] = self._given[BASE_ID_KEY]
                point = _Point(
                    self, _rng.getrandbits(64) or 1, current.span_id,
                    f"{current.span_id:016x}", str(name), point_info,
                )  # fmt: skip
            else:
                point_info.update(self._given)
                point = _Point(
                    self, _rng.getrandbits(64) or 1, self._parent_int, self._trace_stack[1],
                    str(name), point_info,
                )  # fmt: skip
            self._open.append(point)
            self._name.append(point.name)
            self._trace_stack.append(point.id_text)
            # jobtrace spans opened inside this point (and headers made in it) are its children.
            current_span_var.set(point)
            _point_var.set(point)
            if notifier._notifier is not _NOOP or notifier.notify is not _NOTIFY:
                self._notify(f"{name}-start", point_info)
        except Exception as exc:  # never into the host program
            _log_failure("start", exc)

    def stop(self, info: dict[str, Any] | None = None) -> None:
        """Close the innermost open point; ``info`` goes on its stop message. A stop with
        no open point does nothing (as in OSProfiler)."""
        if not self._name:
            return
        try:
            self._stop(info)
        except Exception as exc:
            _log_failure("stop", exc)

    def _stop(self, info: dict[str, Any] | None) -> None:
        stop_info = info if info is None or type(info) is dict else _check_info(info)
        # This context's innermost point; a stop in another context closes the newest one.
        point = self._point() or (self._open[-1] if self._open else None)
        if notifier._notifier is not _NOOP or notifier.notify is not _NOTIFY:
            name = point.name if point is not None else self._name[-1]
            self._notify(f"{name}-stop", dict(stop_info or {}))
        if point is None:  # the stacks were filled by hand
            self._name.pop()
            self._trace_stack.pop()
            return
        _remove_last(self._name, point.name)
        _remove_last(self._trace_stack, point.id_text, floor=2)
        self._open.remove(point)
        current_span_var.set(point.outer_span)
        _point_var.set(point.outer_point)
        error_type = error_message = None
        record_info = point.info
        if stop_info:
            rest = dict(stop_info)
            if rest.get("etype"):
                error_type = str(rest.pop("etype"))
                message = rest.pop("message", None)
                error_message = None if message is None else str(message)
            function = rest.get("function")
            if isinstance(function, dict) and set(function) == {"result"}:
                del rest["function"]
                named = record_info.get("function")
                if isinstance(named, dict):
                    record_info["function"] = {**named, "result": function["result"]}
                else:
                    record_info["function"] = {"result": function["result"]}
            if rest:
                record_info[STOP_INFO_KEY] = rest
        record_span(
            self._trace_int,
            point.span_id,
            point.parent_id,
            point.name,
            point.start,
            record_info or None,
            error_type,
            error_message,
        )

    def _close_all(self) -> None:
        """Forget the open points and give this context back its span from before them."""
        point = self._point()
        if point is not None:
            while point.outer_point is not None and point.outer_point.owner is self:
                point = point.outer_point
            current_span_var.set(point.outer_span)
            _point_var.set(point.outer_point)
        self._open.clear()

    def _notify(self, name: str, info: dict[str, Any]) -> None:
        payload: dict[str, Any] = {
            "name": name,
            "base_id": self.get_base_id(),
            "trace_id": self.get_id(),
            "parent_id": self.get_parent_id(),
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"),
        }
        message_info = {k: v for k, v in info.items() if not k.startswith("osprofiler.")}
        message_info["host"] = _hostname()
        payload["info"] = message_info
        notifier.notify(payload)


def _remove_last(stack: collections.deque[str], value: str, floor: int = 0) -> None:
    """Remove the last ``value`` at or above index ``floor`` (usually the end: a pop)."""
    if len(stack) > floor and stack[-1] == value:
        stack.pop()
        return
    for index in range(len(stack) - 1, floor - 1, -1):
        if stack[index] == value:
            del stack[index]
            return


_warned: set[str] = set()


def _log_failure(where: str, exc: Exception) -> None:
    if where not in _warned:
        _warned.add(where)
        import logging

        logging.getLogger("jobtrace.compat.osprofiler").warning(
            "jobtrace: OSProfiler %s() failed (%r); the point is dropped", where, exc
        )


_NOOP = notifier._noop_notifier
_NOTIFY = notifier.notify

# Like OSProfiler's thread-local profiler, but per context: right under asyncio too.
_profiler_var: ContextVar[_Profiler | None] = ContextVar("jobtrace_osprofiler", default=None)
_get_profiler = _profiler_var.get
_get_joined = joined_trace_var.get


def init(
    hmac_key: str | bytes | None, base_id: str | None = None, parent_id: str | None = None
) -> _Profiler:
    """Make the profiler of this context, which every later call records into, and return
    it; an existing one is kept (and returned), as in OSProfiler.

    ``base_id`` names the trace (a new one when not given; inside a jobtrace span, that
    span's trace) and ``parent_id`` the point this work hangs under, both kept as given.
    ``hmac_key`` signs the headers :func:`~jobtrace.compat.osprofiler.web.get_trace_id_headers`
    makes.
    """
    profiler = _profiler_var.get()
    if profiler is None:
        profiler = _Profiler(hmac_key, base_id=base_id, parent_id=parent_id)
        _profiler_var.set(profiler)
        # jobtrace's own spans opened from here on belong to the profiler's trace too.
        previous = current_span_var.get()
        if not isinstance(previous, Span):
            marker = profiler._as_context()
            profiler._entered = (marker, previous)
            current_span_var.set(marker)
    return profiler


def get() -> _Profiler | None:
    """The profiler :func:`init` made in this context, or None.

    Inside a request that jobtrace's own middleware joined to a trusted caller's trace
    (:class:`jobtrace.tracing.WSGIMiddleware`, :class:`~jobtrace.tracing.ASGIMiddleware`),
    the request has a profiler of its own, made on first use, as a request through
    OSProfiler's middleware would."""
    profiler = _profiler_var.get()
    if profiler is None:
        joined = joined_trace_var.get()
        if joined is not None:
            return _request_profiler(joined)
    return profiler


def _request_profiler(joined: JoinedTrace) -> _Profiler:
    profiler = joined.state.get("osprofiler")
    if profiler is None:
        parent = joined.parent
        profiler = _Profiler(None, f"{parent.trace_id:032x}", f"{parent.span_id:016x}")
        profiler._signer = joined.signer
        joined.state["osprofiler"] = profiler
    return cast(_Profiler, profiler)


def clean() -> None:
    """Drop this context's profiler: later calls record nothing until the next :func:`init`."""
    profiler = _profiler_var.get()
    if profiler is not None:
        profiler._close_all()
        if profiler._entered is not None and current_span_var.get() is profiler._entered[0]:
            current_span_var.set(profiler._entered[1])
    _profiler_var.set(None)


def start(name: str, info: dict[str, Any] | None = None) -> None:
    """Open a point in the current profiler (nothing without one)."""
    profiler = _get_profiler()
    if profiler is None:
        joined = _get_joined()
        if joined is None:
            return
        profiler = _request_profiler(joined)
    profiler.start(name, info=info)


def stop(info: dict[str, Any] | None = None) -> None:
    """Close the innermost open point of the current profiler (nothing without one)."""
    profiler = _get_profiler()
    if profiler is None:
        joined = _get_joined()
        if joined is None:
            return
        profiler = _request_profiler(joined)
    profiler.stop(info=info)


# The functions above, to tell when a caller (a test) replaced them in this module.
_START, _STOP = start, stop


# -- @trace ------------------------------------------------------------------------------------


def _qualified(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None)
    qualname = str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn)))
    return f"{module}.{qualname}" if module else qualname


def trace(
    name: str,
    info: dict[str, Any] | None = None,
    hide_args: bool = False,
    hide_result: bool = True,
    allow_multiple_trace: bool = True,
) -> Callable[[F], F]:
    """Decorate a function as a trace point (OSProfiler's ``@profiler.trace``).

    Each call opens a point with ``info`` plus ``function``: ``name`` (module and qualified
    name) and, unless ``hide_args``, ``args`` and ``kwargs``; the stop carries
    ``function.result`` unless ``hide_result``, or the error's ``etype`` and ``message``.
    ``allow_multiple_trace=False`` raises ValueError for a function already traced.
    """
    base = dict(info) if info else {}

    def decorator(fn: F) -> F:
        import inspect

        times = getattr(fn, "__traced__", 0)
        if not allow_multiple_trace and times:
            raise ValueError(f"Function '{fn}' has already been traced {times} times")
        with contextlib.suppress(AttributeError, TypeError):  # a builtin, a slotted callable
            fn.__traced__ = times + 1  # type: ignore[attr-defined]
        qualname = _qualified(fn)

        def call_info(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            function: dict[str, Any] = {"name": qualname}
            if not hide_args:
                function["args"] = _short_repr(args)
                function["kwargs"] = _short_repr(kwargs)
            out = dict(base)
            out["function"] = function
            return out

        def failure(exc: Exception) -> dict[str, Any]:
            return {"etype": _class_name(exc), "message": str(exc)}

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def traced_async(*args: Any, **kwargs: Any) -> Any:
                if (
                    _get_profiler() is None
                    and _get_joined() is None
                    and start is _START
                    and stop is _STOP
                ):
                    return await fn(*args, **kwargs)
                # start and stop are looked up per call: replacing them here takes effect.
                start(name, info=call_info(args, kwargs))
                stop_info: dict[str, Any] | None = None
                try:
                    result = await fn(*args, **kwargs)
                except Exception as exc:
                    stop_info = failure(exc)
                    raise
                else:
                    if not hide_result:
                        stop_info = {"function": {"result": _short_repr(result)}}
                    return result
                finally:
                    stop(info=stop_info)

            return cast(F, traced_async)

        @functools.wraps(fn)
        def traced(*args: Any, **kwargs: Any) -> Any:
            if (
                _get_profiler() is None
                and _get_joined() is None
                and start is _START
                and stop is _STOP
            ):
                return fn(*args, **kwargs)  # not profiling: nothing to build
            start(name, info=call_info(args, kwargs))
            stop_info: dict[str, Any] | None = None
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                stop_info = failure(exc)
                raise
            else:
                if not hide_result:
                    stop_info = {"function": {"result": _short_repr(result)}}
                return result
            finally:
                stop(info=stop_info)

        return cast(F, traced)

    return decorator


def _ensure_not_traced(targets: list[tuple[str, Any]]) -> None:
    for attr_name, attr in targets:
        times = getattr(getattr(attr, "__func__", attr), "__traced__", 0)
        if times:
            raise ValueError(
                f"Can not apply new trace on top of previously traced attribute "
                f"'{attr_name}' since it has been traced {times} times previously"
            )


def trace_cls(
    name: str,
    info: dict[str, Any] | None = None,
    hide_args: bool = False,
    hide_result: bool = True,
    trace_private: bool = False,
    allow_multiple_trace: bool = True,
    trace_class_methods: bool = False,
    trace_static_methods: bool = False,
) -> Callable[[C], C]:
    """Trace every method of a class, inherited ones included, as OSProfiler does.

    Names starting with ``__`` are never traced, ``_private`` ones with ``trace_private``;
    static and class methods only when asked. ``allow_multiple_trace=False`` raises
    ValueError, before changing anything, when a method is already traced.
    """

    def decorator(cls: C) -> C:
        import inspect

        targets: list[tuple[str, Any]] = []
        for attr_name in dir(cls):
            if attr_name.startswith("__"):
                continue
            if attr_name.startswith("_") and not trace_private:
                continue
            raw = next(
                (k.__dict__[attr_name] for k in cls.__mro__ if attr_name in k.__dict__), None
            )
            if isinstance(raw, staticmethod):
                if trace_static_methods and inspect.isfunction(raw.__func__):
                    targets.append((attr_name, raw))
            elif isinstance(raw, classmethod):
                if trace_class_methods and inspect.isfunction(raw.__func__):
                    targets.append((attr_name, raw))
            elif inspect.isfunction(raw):
                targets.append((attr_name, raw))
        if not allow_multiple_trace:
            _ensure_not_traced(targets)
        decorate = trace(name, info=info, hide_args=hide_args, hide_result=hide_result)
        for attr_name, raw in targets:
            setattr(cls, attr_name, rewrap(raw, decorate))
        return cls

    return decorator


class TracedMeta(type):
    """A metaclass that traces the methods each class defines, configured by the class's
    ``__trace_args__`` (``name`` required; ``info``, ``hide_args``, ``hide_result``,
    ``trace_private``, ``allow_multiple_trace``), inherited by subclasses as in OSProfiler::

        class RpcManager(metaclass=profiler.TracedMeta):
            __trace_args__ = {"name": "rpc"}
    """

    def __init__(cls, cls_name: str, bases: tuple[type, ...], attrs: dict[str, Any]) -> None:
        super().__init__(cls_name, bases, attrs)
        import inspect

        options = dict(getattr(cls, "__trace_args__", {}))
        trace_private = options.pop("trace_private", False)
        allow_multiple_trace = options.pop("allow_multiple_trace", True)
        if "name" not in options:
            raise TypeError(
                f"{cls_name}: TracedMeta needs a class-level __trace_args__ dict with a "
                "'name' key, e.g. __trace_args__ = {'name': 'rpc'}"
            )
        targets = [
            (attr_name, value)
            for attr_name, value in attrs.items()
            if (inspect.isfunction(value) or inspect.ismethod(value))
            and not attr_name.startswith("__")
            and (trace_private or not attr_name.startswith("_"))
        ]
        if not allow_multiple_trace:
            _ensure_not_traced(targets)
        decorate = trace(**options)  # an unknown key is a TypeError, as in OSProfiler
        for attr_name, _ in targets:
            setattr(cls, attr_name, decorate(getattr(cls, attr_name)))


# -- with Trace(...) ---------------------------------------------------------------------------


class Trace:
    """``with profiler.Trace("rpc", info={...}):`` — :func:`start` on entry, :func:`stop`
    on exit, with the error's ``etype`` and ``message`` when the block raised."""

    __slots__ = ("_info", "_name")

    def __init__(self, name: str, info: dict[str, Any] | None = None) -> None:
        self._name = name
        self._info = info

    def __enter__(self) -> None:
        if _get_profiler() is None and _get_joined() is None and start is _START:
            return  # not profiling: the common case, kept to three lookups
        start(self._name, info=self._info)

    def __exit__(
        self, etype: type[BaseException] | None, value: BaseException | None, tb: object
    ) -> None:
        if _get_profiler() is None and _get_joined() is None and stop is _STOP:
            return
        stop_info = None
        if etype is not None and value is not None:
            stop_info = {
                "etype": _class_name(etype),
                "message": value.args[0] if value.args else None,
            }
        stop(info=stop_info)
