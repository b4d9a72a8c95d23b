"""``@profile``: call durations by context, root hooks and handlers (Phanos's engine).

>>> import jobtrace
>>> class Shop:
...     @jobtrace.profile
...     def checkout(self, cart): return self.price(cart)
...     @jobtrace.profile
...     def price(self, cart): return sum(cart)

``Shop().checkout([1, 2])`` observes two durations in the ``time_profiler`` histogram,
labelled by their *context*: ``Shop:checkout`` for the root call and
``Shop:checkout.price`` for the call it made (Phanos's context string: the root's owner —
its class, or its module for a plain function — then the profiled calls from the root
down). The context lives in a :class:`~contextvars.ContextVar`, so threads and asyncio
tasks each have their own.

``jobtrace.instruments.profiler`` mirrors ``phanos.profiler``: :meth:`Profiler.config`,
``add_handler``/``delete_handler``, ``add_metric``/``delete_metric`` and the hooks
``before_func``, ``after_func``, ``before_root_func`` and ``after_root_func``. The before
hooks receive ``(func, args, kwargs)``, the after hooks ``(result, args, kwargs)`` — also
when the call raised, with the exception as ``result``. A hook that raises is logged once
and never breaks the call.

Decided when decorating: sync or ``async``, the function's name and owner, the wrapper
shape (``staticmethod``/``classmethod`` above or below). Decided when configuring: which
default metrics exist, the hooks and handlers — gathered into one immutable state object
that each call reads once.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any, Final, TypeVar

from jobtrace.errors import ConfigurationError
from jobtrace.instruments.handlers import BaseHandler, HandlerDispatcher, RawRecord
from jobtrace.instruments.kinds import Histogram, Metric

__all__ = ["RESPONSE_SIZE", "TIME_PROFILER", "Profiler", "profile", "profiler"]

log = logging.getLogger("jobtrace.instruments")

F = TypeVar("F", bound=Callable[..., Any])

#: Names of the two default metrics (Phanos's constants), for :meth:`Profiler.delete_metric`.
TIME_PROFILER: Final = "time_profiler"
RESPONSE_SIZE: Final = "response_size"
#: Buckets of the response-size histogram, in bytes.
SIZE_BUCKETS: Final = (100.0, 1e3, 1e4, 1e5, 1e6, 1e7)

BeforeHook = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], None]
AfterHook = Callable[[Any, tuple[Any, ...], dict[str, Any]], None]

# Why this engine and jobtrace.compat.phanos's Profiler share only the handler queue
# (jobtrace.instruments.handlers.QueueThread): the Phanos layer must keep Phanos's
# observable model — a MethodTreeNode tree per profiler that hooks and Phanos's tests walk,
# the owner found at call time through the bound method's class, datetime start stamps
# handed to TimeProfiler.stop, records gathered per MetricWrapper and drained per root. This
# engine keeps one ContextVar frame (context string, raw tuples), fixes the owner when
# decorating and reads one immutable _State per call, so a call costs a fraction of that.
# A common call path would make one of them carry the other's model on every call.

#: (context string, the root call's record list or None): the profiled call running here.
_frame: ContextVar[tuple[str, list[RawRecord] | None] | None] = ContextVar(
    "jobtrace_profile_frame", default=None
)
_warned: set[str] = set()


def _hook_failed(name: str, hook: Any) -> None:
    key = f"{name}:{id(hook)}"
    if key not in _warned:
        _warned.add(key)
        log.exception("jobtrace: profiler hook %s (%r) raised; the call goes on", name, hook)


def response_size(result: Any) -> int:
    """Bytes of a root call's result: the length of bytes and text (UTF-8), of a response's
    ``body``/``content`` when it is bytes, else ``sys.getsizeof`` (as Phanos does)."""
    if isinstance(result, bytes | bytearray | memoryview):
        return len(result)
    if isinstance(result, str):
        return len(result) if result.isascii() else len(result.encode("utf-8", "replace"))
    for attribute in ("body", "content"):
        body = getattr(result, attribute, None)
        if isinstance(body, bytes | bytearray):
            return len(body)
    return sys.getsizeof(result)


class _State:
    """Everything a profiled call needs to know, replaced (never edited) on any change."""

    __slots__ = (
        "active",
        "after",
        "after_root",
        "before",
        "before_root",
        "error_label",
        "gen",
        "handlers",
        "hooks",
        "metrics",
        "pending",
        "size",
        "time",
    )

    active: bool
    pending: bool
    gen: int
    time: Histogram | None
    size: Histogram | None
    error_label: bool
    handlers: tuple[BaseHandler, ...]
    metrics: tuple[Metric, ...]
    before: BeforeHook | None
    after: AfterHook | None
    before_root: BeforeHook | None
    after_root: AfterHook | None
    hooks: bool

    def __init__(self, **fields: Any) -> None:
        defaults: dict[str, Any] = {"handlers": (), "metrics": ()}
        for name in self.__slots__:
            setattr(self, name, fields.get(name, defaults.get(name)))


def _hook_property(name: str) -> Any:
    """A hook attribute of :class:`Profiler`: assigning one rebuilds the per-call state."""

    def get(self: Profiler) -> Any:
        return self._hooks[name]

    def set_(self: Profiler, hook: Any) -> None:
        if hook is not None and not callable(hook):
            raise ConfigurationError(f"profiler.{name} must be callable or None, got {hook!r}")
        self._hooks[name] = hook
        self._rebuild()

    return property(get, set_)


class Profiler:
    """Profiles decorated calls into histograms and hands each root call's records to the
    handlers (off the caller's thread). ``jobtrace.instruments.profiler`` is the process's
    one; ``jobtrace.profile`` is its :meth:`profile`."""

    def __init__(self, name: str = "profiler", *, registry: Any = None) -> None:
        self.name = name
        self.job = ""
        self._registry = registry
        self._time_profile = True
        self._size_profile = False
        self._handle_records = True
        self._error_label = False
        self._time: Histogram | None = None
        self._size: Histogram | None = None
        self._handlers: dict[str, BaseHandler] = {}
        self._metrics: dict[str, Metric] = {}
        self._hooks: dict[str, Any] = dict.fromkeys(
            ("before_func", "after_func", "before_root_func", "after_root_func")
        )
        self._gen = 0
        # Serialises changes of the state: configuration, and the first profiled call that
        # creates the default metrics (two threads doing that at once would both register
        # a "time_profiler" histogram, and the second registration raises).
        self._setup_lock = threading.RLock()
        self.dispatcher = HandlerDispatcher(
            self.name, lambda: tuple(self._handlers.values()), lambda: self.job
        )
        # Nothing is created before the first profiled call or config(): importing
        # jobtrace.instruments must not register metrics or start threads.
        self._state = _State(active=False, pending=True, gen=0)

    # -- configuration ----------------------------------------------------------------------

    def config(
        self,
        logger: logging.Logger | str | None = None,
        job: str = "",
        time_profile: bool = True,
        response_size_profile: bool = False,
        handle_records: bool = True,
        error_raised_label: bool = False,
        handlers: Iterable[BaseHandler] = (),
    ) -> None:
        """Configure as ``phanos.profiler.config``: which default metrics exist, whether
        anything is measured at all (``handle_records``), and an ``error_raised`` label."""
        with self._setup_lock:
            self._config(
                logger, job, time_profile, response_size_profile, handle_records,
                error_raised_label, handlers,
            )  # fmt: skip

    def _config(
        self,
        logger: logging.Logger | str | None,
        job: str,
        time_profile: bool,
        response_size_profile: bool,
        handle_records: bool,
        error_raised_label: bool,
        handlers: Iterable[BaseHandler],
    ) -> None:
        if logger is not None:
            global log
            log = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.job = job or ""
        self._time_profile = bool(time_profile)
        self._size_profile = bool(response_size_profile)
        self._handle_records = bool(handle_records)
        if bool(error_raised_label) != self._error_label:
            self._error_label = bool(error_raised_label)
            self._drop_metric(TIME_PROFILER)  # its label names change: declared anew
        if not self._time_profile:
            self._drop_metric(TIME_PROFILER)
        if not self._size_profile:
            self._drop_metric(RESPONSE_SIZE)
        for handler in handlers:
            self._handlers[handler.handler_name] = handler
        self._rebuild(create=True)

    def _registry_kw(self) -> dict[str, Any]:
        return {} if self._registry is None else {"registry": self._registry}

    def create_time_profiler(self) -> None:
        """(Re)create the default time histogram (seconds, labelled by context)."""
        labels = ["context", "error_raised"] if self._error_label else ["context"]
        self._time = Histogram(
            TIME_PROFILER, self.job, "s", labels,
            documentation="Duration of profiled calls by context (seconds)", **self._registry_kw(),
        )  # fmt: skip
        self._time_profile = True

    def create_response_size_profiler(self) -> None:
        """(Re)create the default response-size histogram (bytes, root calls)."""
        self._size = Histogram(
            RESPONSE_SIZE, self.job, "B", ["context"], buckets=SIZE_BUCKETS,
            documentation="Size of profiled root calls' results (bytes)", **self._registry_kw(),
        )  # fmt: skip
        self._size_profile = True

    def _drop_metric(self, name: str) -> None:
        metric = self._time if name == TIME_PROFILER else self._size
        if metric is not None and metric.registry is not None:
            metric.registry.unregister(metric)
        if name == TIME_PROFILER:
            self._time = None
        else:
            self._size = None

    def delete_metric(self, item: str) -> None:
        """Delete a default metric (``TIME_PROFILER``, ``RESPONSE_SIZE``) or an added one."""
        if item == TIME_PROFILER:
            self._time_profile = False
            self._drop_metric(TIME_PROFILER)
        elif item == RESPONSE_SIZE:
            self._size_profile = False
            self._drop_metric(RESPONSE_SIZE)
        else:
            metric = self._metrics.pop(item, None)
            if metric is not None:
                _untap(metric)
        self._rebuild()

    def delete_metrics(
        self, rm_time_profile: bool = False, rm_resp_size_profile: bool = False
    ) -> None:
        """Delete every added metric, and the default ones if asked."""
        for name in list(self._metrics):
            self.delete_metric(name)
        if rm_time_profile:
            self.delete_metric(TIME_PROFILER)
        if rm_resp_size_profile:
            self.delete_metric(RESPONSE_SIZE)

    def add_metric(self, metric: Metric) -> None:
        """Attach ``metric``: its Phanos-style operations (``metric.inc(v, label_values)``)
        made during a profiled call are also handed to the handlers with that call's
        records. The metric keeps aggregating for Prometheus either way."""
        if not isinstance(metric, Metric):
            raise ConfigurationError(f"add_metric() takes an instrument, got {metric!r}")
        self._metrics[metric.name] = metric
        _tap(metric)
        self._rebuild()

    def add_handler(self, handler: BaseHandler) -> None:
        """Add (or replace, by its ``handler_name``) a handler of root calls' records."""
        if not isinstance(getattr(handler, "handler_name", None), str):
            raise ConfigurationError(f"{handler!r} is not a handler (no handler_name)")
        old = self._handlers.get(handler.handler_name)
        if old is not None and old is not handler:
            self.dispatcher.flush()  # the old one gets what was queued for it
        self._handlers[handler.handler_name] = handler
        self._rebuild()
        if old is not None and old is not handler:
            self.dispatcher.close_handler(old)

    def delete_handler(self, handler_name: str) -> None:
        """Remove the handler called ``handler_name``; it is handed what was queued before."""
        if handler_name not in self._handlers:
            return
        self.dispatcher.flush()
        handler = self._handlers.pop(handler_name)
        self._rebuild()
        self.dispatcher.close_handler(handler)

    def delete_handlers(self) -> None:
        for name in list(self._handlers):
            self.delete_handler(name)

    @property
    def handlers(self) -> dict[str, BaseHandler]:
        return dict(self._handlers)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Hand every finished root call's records to the handlers now, and let them send
        what they buffer (RabbitMQ); False if that did not finish within ``timeout``."""
        return self.dispatcher.flush(timeout)

    before_func = _hook_property("before_func")
    after_func = _hook_property("after_func")
    before_root_func = _hook_property("before_root_func")
    after_root_func = _hook_property("after_root_func")

    def _rebuild(self, create: bool = False) -> None:
        with self._setup_lock:
            self._rebuild_locked(create)

    def _rebuild_locked(self, create: bool) -> None:
        if (create or not self._state.pending) and self._handle_records:
            if self._time_profile and self._time is None:
                self.create_time_profiler()
            if self._size_profile and self._size is None:
                self.create_response_size_profiler()
        hooks = self._hooks
        self._gen += 1
        pending = self._state.pending and not create
        self._state = _State(
            active=self._handle_records and not pending,
            pending=pending,
            gen=self._gen,
            time=self._time,
            size=self._size,
            error_label=self._error_label,
            handlers=tuple(self._handlers.values()),
            metrics=tuple(self._metrics.values()),
            before=hooks["before_func"],
            after=hooks["after_func"],
            before_root=hooks["before_root_func"],
            after_root=hooks["after_root_func"],
            hooks=any(h is not None for h in hooks.values()),
        )

    def _first_call(self) -> _State:
        """The first profiled call of an unconfigured profiler sets up the defaults.

        Never blocks and never raises: a call that finds another thread setting up runs
        unprofiled, and a failure is logged once and leaves the profiler off until
        :meth:`config` (which raises it where it can be fixed)."""
        if not self._setup_lock.acquire(blocking=False):
            return self._state
        try:
            if self._state.pending:
                self._rebuild(create=True)
        except Exception:  # e.g. another instrument already took the name "time_profiler"
            log.exception(
                "jobtrace: the profiler could not create its default metrics; profiled "
                "calls run unprofiled until profiler.config() is called"
            )
            self._gen += 1
            self._state = _State(active=False, pending=False, gen=self._gen)
        finally:
            self._setup_lock.release()
        return self._state

    def clear(self) -> None:
        """Back to the unconfigured defaults (tests): no handlers, hooks or added metrics."""
        self.flush()
        self.delete_handlers()
        self.delete_metrics(rm_time_profile=True, rm_resp_size_profile=True)
        for name in self._hooks:
            self._hooks[name] = None
        self.job, self._error_label = "", False
        self._time_profile, self._size_profile, self._handle_records = True, False, True
        self._gen += 1
        self._state = _State(active=False, pending=True, gen=self._gen)

    # -- decorating ---------------------------------------------------------------------------

    def profile(self, func: F) -> F:
        """Profile ``func`` (sync or ``async``; a function, method, ``staticmethod`` or
        ``classmethod``, above or below those decorators)."""
        if isinstance(func, staticmethod | classmethod):
            return type(func)(self.profile(func.__func__))
        if not callable(func):
            raise ConfigurationError(f"@profile needs a function, got {func!r}")
        from jobtrace.instruments._wrappers import wrap

        return wrap(self, func, _owner(func), getattr(func, "__name__", repr(func)))  # type: ignore[return-value]


def _owner(func: Callable[..., Any]) -> str:
    """The class a function is defined in (from its qualified name, as the class does not
    exist yet while its body runs), else its module's last component."""
    qualname = getattr(func, "__qualname__", "") or ""
    qualname = qualname.rsplit("<locals>.", 1)[-1]
    if "." in qualname:
        return qualname.rsplit(".", 1)[0].rsplit(".", 1)[-1]
    module = getattr(func, "__module__", None) or ""
    return module.rsplit(".", 1)[-1]


# -- attached metrics ------------------------------------------------------------------------


def _tap(metric: Metric) -> None:
    """Report ``metric``'s Phanos-style operations made inside a profiled call."""
    if "_jobtrace_tapped" in metric.__dict__:
        return
    for op in metric._operations:
        original = getattr(metric, op)

        def tapped(*args: Any, _op: str = op, _original: Any = original, **kwargs: Any) -> None:
            _original(*args, **kwargs)
            frame = _frame.get()
            if frame is not None and frame[1] is not None:
                value = args[0] if args else kwargs.get("value")
                labels = args[1] if len(args) > 1 else kwargs.get("label_values")
                frame[1].append(("m", metric, _op, labels, value))

        setattr(metric, op, tapped)
    metric.__dict__["_jobtrace_tapped"] = True


def _untap(metric: Metric) -> None:
    for op in metric._operations:
        metric.__dict__.pop(op, None)
    metric.__dict__.pop("_jobtrace_tapped", None)
    metric._bind_fast_path()


#: The process's profiler (Phanos's ``phanos.profiler``).
profiler = Profiler()


def profile(func: F) -> F:
    """``@jobtrace.profile``: :meth:`Profiler.profile` of the process's profiler."""
    return profiler.profile(func)
