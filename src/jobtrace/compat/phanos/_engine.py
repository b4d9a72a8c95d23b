"""How profiled calls run and their records reach the handlers: Phanos's Profiler."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from datetime import datetime
from functools import wraps
from typing import Any, ClassVar, Final

import jobtrace.compat.phanos as _api  # what a test may replace there is looked up there
from jobtrace import _config
from jobtrace.compat.phanos._base import (
    RESPONSE_SIZE,
    TIME_PROFILER,
    F,
    InstanceLoggerMixin,
    Record,
    _log,
)
from jobtrace.compat.phanos._dictconfig import create_async_handlers, create_handlers
from jobtrace.compat.phanos._handlers import AsyncBaseHandler, _logger_arg
from jobtrace.compat.phanos._metrics import MetricWrapper, ResponseSize, TimeProfiler
from jobtrace.compat.phanos._tree import ContextTree, MethodTreeNode, _active_node
from jobtrace.instruments.handlers import QueueThread

# -- handing records over --------------------------------------------------------------------

#: One metric's records for the handlers: (handlers, metric name, records).
Batch = tuple[tuple[Any, ...], str, list[Record]]


#: Batches queued before the handler thread is woken early (else it wakes every 0.5 s).
_WAKE_AT: Final = 1024


class _HandlerThread(QueueThread[Batch]):
    """The queue between root calls and the sync handlers, drained by one daemon thread."""

    capacity: Final = 100_000
    thread_name = "jobtrace-phanos-handlers"

    def _init_process_state(self) -> None:
        super()._init_process_state()
        self.dropped = 0
        self._warned: set[int] = set()

    def submit(self, batches: list[Batch]) -> None:
        """Queue batches (never blocks, never raises; past the capacity they are counted)."""
        queue = self._queue
        if len(queue) >= self.capacity:
            if not self.dropped:
                _log.warning(
                    "phanos: %d records wait for the handlers; further ones are dropped and "
                    "counted (phanos._handler_thread.dropped)", self.capacity,
                )  # fmt: skip
            self.dropped += len(batches)
            return
        queue.extend(batches)
        if self._thread is None:
            self._start()
        elif len(queue) >= _WAKE_AT > len(queue) - len(batches):
            self._wake.set()  # once per crossing: Event.set() takes a lock and wakes a thread

    def _round(self, *, flush: bool) -> bool:
        for _ in range(len(self._queue)):
            handlers, name, records = self._queue.popleft()
            for handler in handlers:
                try:
                    handler.handle(records, name)
                except Exception:
                    if id(handler) not in self._warned:
                        self._warned.add(id(handler))
                        _log.exception("phanos handler %r failed", handler.handler_name)
        return True


_handler_thread = _HandlerThread()
_pending_tasks: set[asyncio.Task[Any]] = set()


def _call_hook(hook: Any, name: str, *args: Any) -> None:
    if not callable(hook):
        return
    try:
        hook(*args)
    except Exception:
        _log.exception("phanos: profiler.%s raised; the profiled call goes on", name)


# Why this engine and jobtrace's own @profile (jobtrace.instruments.calls) share only the
# handler queue (QueueThread above): Phanos's profiler is observable — its MethodTreeNode tree,
# curr_node ContextVar, datetime start stamps and per-metric record lists are what Phanos's
# hooks, handlers and tests see, and the owner of a root call is found when it runs. The
# @profile engine keeps one ContextVar frame of raw tuples and decides the owner when
# decorating. A common call path would make one carry the other's model on every call.


class Profiler(InstanceLoggerMixin):
    """Phanos's profiler: metrics, handlers, the four hooks and ``@profile``.

    Nothing is measured before :meth:`config` (or one of its siblings). Each root call's
    records are handed to the handlers when it returns — on a background thread unless
    configured with ``handle_inline=True``."""

    RECORDS_ERR_LIMIT: ClassVar[int] = 3000
    RECORDS_LEN_LIMIT: ClassVar[int] = 100

    def __init__(self) -> None:
        self.metrics: dict[str, MetricWrapper] = {}
        self.handlers: dict[str, Any] = {}
        self.job = ""
        self.handle_records = False
        self._error_raised_label = True
        self.resp_size_profile: ResponseSize | None = None
        self.time_profile: TimeProfiler | None = None
        self.before_func: Any = None
        self.after_func: Any = None
        self.before_root_func: Any = None
        self.after_root_func: Any = None
        self.profile_ext: SyncExtProfiler | AsyncExtProfiler | None = None
        self.handle_inline = os.environ.get(_config.ENV_PHANOS_INLINE, "") in ("1", "true", "yes")
        self.tree = ContextTree()
        self.curr_node: ContextVar[MethodTreeNode] = ContextVar("curr_node")
        super().__init__(logged_name="phanos", logger=_log)

    # -- configuration ------------------------------------------------------------------------

    def _config(
        self,
        logger: Any = None,
        job: str = "",
        time_profile: bool = True,
        request_size_profile: bool = False,
        response_size_profile: bool = False,
        handle_records: bool = True,
        error_raised_label: bool = True,
        **kwargs: Any,
    ) -> None:
        # Phanos 0.0.x's spellings, and jobtrace's one addition.
        time_profile = kwargs.pop("should_time_profile", time_profile)
        response_size_profile = kwargs.pop("should_resp_size_profile", response_size_profile)
        handle_records = kwargs.pop("should_handle_records", handle_records)
        if "handle_inline" in kwargs:
            self.handle_inline = bool(kwargs.pop("handle_inline"))
        self.logger = _logger_arg(logger)
        self.job = job
        self.handle_records = handle_records
        self.error_raised_label = error_raised_label
        self.tree.logger = self.logger
        if request_size_profile or response_size_profile:
            if request_size_profile:
                warnings.warn(
                    "request_size_profile is deprecated, use response_size_profile",
                    DeprecationWarning, stacklevel=3,
                )  # fmt: skip
            self.create_response_size_profiler()
        if time_profile:
            self.create_time_profiler()

    def config(self, logger: Any = None, job: str = "", time_profile: bool = True,
               request_size_profile: bool = False, response_size_profile: bool = False,
               handle_records: bool = True, error_raised_label: bool = True,
               **kwargs: Any) -> None:  # fmt: skip
        """Configure for sync handlers (Phanos 0.3's arguments; 0.0.x's ``should_*``
        spellings; ``handle_inline=True`` to hand records over before a root call returns)."""
        self._config(logger, job, time_profile, request_size_profile, response_size_profile,
                     handle_records, error_raised_label, **kwargs)  # fmt: skip
        self.profile_ext = SyncExtProfiler(self)

    def async_config(self, logger: Any = None, job: str = "", time_profile: bool = True,
                     request_size_profile: bool = False, response_size_profile: bool = False,
                     handle_records: bool = True, error_raised_label: bool = True,
                     **kwargs: Any) -> None:  # fmt: skip
        """Configure for async handlers too (their ``handle`` runs on the event loop)."""
        self._config(logger, job, time_profile, request_size_profile, response_size_profile,
                     handle_records, error_raised_label, **kwargs)  # fmt: skip
        self.profile_ext = AsyncExtProfiler(self)

    def _dict_cfg_sync(self, settings: dict[str, Any]) -> None:
        if "logger" in settings:
            self.logger = logging.getLogger(settings["logger"])
        if "job" not in settings:
            self.logger.error("Job argument not found in config dictionary")
            raise KeyError("Job argument not found in config dictionary")
        self.job = settings["job"]
        if "handle_inline" in settings:
            self.handle_inline = bool(settings["handle_inline"])
        if settings.get("time_profile"):
            self.create_time_profiler()
        if settings.get("request_size_profile") or settings.get("response_size_profile"):
            if settings.get("request_size_profile"):
                warnings.warn(
                    "request_size_profile is deprecated, use response_size_profile",
                    DeprecationWarning, stacklevel=3,
                )  # fmt: skip
            self.create_response_size_profiler()
        self.error_raised_label = settings.get("error_raised_label", True)
        self.handle_records = settings.get("handle_records", True)
        self.tree.logger = self.logger

    def dict_config(self, settings: dict[str, Any]) -> None:
        """Configure from a dict (like ``logging.config.dictConfig``); async handlers in it
        raise ValueError (use :meth:`async_dict_config`)."""
        self._dict_cfg_sync(settings)
        self.profile_ext = SyncExtProfiler(self)
        for handler in create_handlers(settings.get("handlers", {})).values():
            self.add_handler(handler)

    async def async_dict_config(self, settings: dict[str, Any]) -> None:
        self._dict_cfg_sync(settings)
        self.profile_ext = AsyncExtProfiler(self)
        for handler in (await create_async_handlers(settings.get("handlers", {}))).values():
            self.add_handler(handler)

    def needs_profiling(self) -> bool:
        """Measure only when configured to handle records and some metric exists (Phanos
        also wants a handler; here the series feed /metrics even without one)."""
        return bool(self.handle_records and self.metrics)

    @property
    def error_raised_label(self) -> bool:
        return self._error_raised_label

    @error_raised_label.setter
    def error_raised_label(self, value: bool) -> None:
        self._error_raised_label = value
        for metric in self.metrics.values():
            if value:
                metric.label_names.add("error_raised")
            else:
                metric.label_names.discard("error_raised")

    # -- metrics and handlers ---------------------------------------------------------------

    def create_time_profiler(self) -> None:
        self.time_profile = TimeProfiler(TIME_PROFILER, job=self.job, logger=self.logger)
        self.add_metric(self.time_profile)

    def create_response_size_profiler(self) -> None:
        self.resp_size_profile = ResponseSize(RESPONSE_SIZE, job=self.job, logger=self.logger)
        self.add_metric(self.resp_size_profile)

    def add_metric(self, metric: MetricWrapper) -> None:
        """Add (or replace, by name) a metric whose records this profiler hands over."""
        if self.error_raised_label:
            metric.label_names.add("error_raised")
        self.metrics[metric.name] = metric

    def delete_metric(self, item: str) -> None:
        """Stop handing ``item``'s records over (its /metrics series stay)."""
        if self.metrics.pop(item, None) is None:
            self.warning(f"delete_metric: metric {item} do not exist")
            return
        if item == TIME_PROFILER:
            self.time_profile = None
        if item == RESPONSE_SIZE:
            self.resp_size_profile = None

    def delete_metrics(
        self, rm_time_profile: bool = False, rm_resp_size_profile: bool = False
    ) -> None:
        for name in list(self.metrics):
            if (name != TIME_PROFILER or rm_time_profile) and (
                name != RESPONSE_SIZE or rm_resp_size_profile
            ):
                self.delete_metric(name)

    def get_records_count(self) -> int:
        return sum(len(metric.values) for metric in list(self.metrics.values()))

    def add_handler(self, handler: Any) -> None:
        """Add (or replace, by ``handler_name``) a handler; the profiler must be configured,
        and an async handler needs :meth:`async_config`."""
        if self.profile_ext is None:
            raise RuntimeError("Profiler not configured yet")
        if isinstance(handler, AsyncBaseHandler) and not isinstance(
            self.profile_ext, AsyncExtProfiler
        ):
            raise ValueError(
                f"Handler {handler.handler_name!r} is asynchronous, but profiler is synchronous"
            )
        self.handlers[handler.handler_name] = handler

    def delete_handler(self, handler_name: str) -> None:
        if self.handlers.pop(handler_name, None) is None:
            self.warning(f"delete_handler: handler {handler_name!r} do not exist")

    def delete_handlers(self) -> None:
        self.handlers.clear()

    # Phanos 0.0.x's names.
    addHandler = add_handler
    deleteHandler = delete_handler

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Hand every queued record to the handlers now; False if not done in ``timeout``."""
        return _handler_thread.flush(timeout)

    def clear(self) -> None:
        """Forget the recorded operations and the tree (not while calls are running)."""
        for metric in self.metrics.values():
            metric.cleanup()
        self.tree.clear()
        self.curr_node.set(self.tree.root)

    # -- the call tree ----------------------------------------------------------------------

    @property
    def current_node(self) -> MethodTreeNode:
        """The node of the profiled call running here (Phanos 0.0.x: ``.context``)."""
        return self.curr_node.get(self.tree.root)

    def set_curr_node(self, func: Callable[..., Any]) -> MethodTreeNode:
        node = self.curr_node.get(self.tree.root).add_child(MethodTreeNode(func, self.logger))
        self.curr_node.set(node)
        return node

    def delete_curr_node(self, current_node: MethodTreeNode) -> None:
        self.curr_node.set(current_node.parent or self.tree.root)
        self.tree.find_and_delete_node(current_node)

    def measure_execution_start(self) -> datetime | None:
        return _api._now() if self.time_profile else None

    def before_func_profiling(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> datetime | None:
        if self.curr_node.get(self.tree.root).parent is self.tree.root:
            _call_hook(self.before_root_func, "before_root_func", func, args, kwargs)
        _call_hook(self.before_func, "before_func", func, args, kwargs)
        return self.measure_execution_start()

    def after_function_profiling(
        self, result: Any, start_ts: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        node = self.curr_node.get(self.tree.root)
        if self.time_profile and start_ts is not None:
            self.time_profile.stop(start=start_ts, current_node=node, label_values={})
        _call_hook(self.after_func, "after_func", result, args, kwargs)
        if node.parent is self.tree.root:
            if self.resp_size_profile:
                self.resp_size_profile.rec(value=result, current_node=node, label_values={})
            _call_hook(self.after_root_func, "after_root_func", result, args, kwargs)

    # -- handing over -----------------------------------------------------------------------

    def drain(self) -> list[tuple[str, list[Record]]]:
        """Take every metric's records (and empty them), as (metric name, records)."""
        return list(_take_records(self.metrics))

    def hand_over(self) -> None:
        """After a root call: queue the records for the handlers — the sync ones on the
        background thread, the async ones as tasks on the caller's event loop."""
        handlers = tuple(self.handlers.values())
        drained = self.drain()
        if not handlers or not drained:
            return
        sync = tuple(h for h in handlers if not isinstance(h, AsyncBaseHandler))
        if sync:
            _handler_thread.submit([(sync, name, records) for name, records in drained])
        asynchronous = [h for h in handlers if isinstance(h, AsyncBaseHandler)]
        if asynchronous:
            _schedule(asynchronous, drained)

    # -- decorating -------------------------------------------------------------------------

    def profile(self, func: F) -> F:
        """Profile ``func`` (sync or ``async``; above or below staticmethod/classmethod)."""
        if isinstance(func, staticmethod | classmethod):
            return type(func)(self.profile(func.__func__))

        @wraps(func)
        def sync_inner(*args: Any, **kwargs: Any) -> Any:
            ext = self.profile_ext
            if ext is None:  # not configured: nothing is measured
                return func(*args, **kwargs)
            return ext.sync_inner(func, *args, **kwargs)

        @wraps(func)
        async def async_inner(*args: Any, **kwargs: Any) -> Any:
            ext = self.profile_ext
            if ext is None:
                return await func(*args, **kwargs)
            return await ext.async_inner(func, *args, **kwargs)

        return async_inner if inspect.iscoroutinefunction(func) else sync_inner  # type: ignore[return-value]


def _schedule(handlers: list[Any], drained: list[tuple[str, list[Record]]]) -> None:
    """Async handlers run as tasks on the caller's event loop (none running: skipped)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _log.warning("phanos: async handlers need a running event loop; records not handled")
        return

    async def run() -> None:
        for name, records in drained:
            for handler in handlers:
                try:
                    await handler.handle(records, name)
                except Exception:
                    _log.exception("phanos handler %r failed", handler.handler_name)

    task = loop.create_task(run())
    _pending_tasks.add(task)  # keep a reference until it is done
    task.add_done_callback(_pending_tasks.discard)


class _ExtProfiler(InstanceLoggerMixin):
    """How a profiled call runs: the parts shared by the sync and async configurations."""

    def __init__(self, base_profiler: Profiler) -> None:
        self.base_profiler = base_profiler
        super().__init__(logger=base_profiler.logger)

    def _enter(self, func: Callable[..., Any], args: Any, kwargs: Any) -> tuple[Any, Any, Any]:
        base = self.base_profiler
        node = base.set_curr_node(func)
        token = _active_node.set(node)
        try:
            start = base.before_func_profiling(func, args, kwargs)
        except Exception:  # a hook's failure is logged there; this is a bug guard
            start = None
        return node, token, start

    def _finish(self, result: Any, start: Any, args: Any, kwargs: Any) -> None:
        try:
            self.base_profiler.after_function_profiling(result, start, args, kwargs)
        except Exception:
            self.logger.exception("phanos: recording a profiled call failed")

    def _leave(self, node: Any, token: Any) -> None:
        try:
            self.base_profiler.delete_curr_node(node)
        finally:
            _active_node.reset(token)

    def _due(self, node: Any) -> bool:
        base = self.base_profiler
        return bool(
            node.parent is base.tree.root or base.get_records_count() >= Profiler.RECORDS_LEN_LIMIT
        )

    def _hand_over(self) -> None:
        try:
            self.base_profiler.hand_over()
        except Exception:
            self.logger.exception("phanos: handing records over failed")

    def sync_inner(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.base_profiler.needs_profiling():
            return func(*args, **kwargs)
        node, token, start = self._enter(func, args, kwargs)
        try:
            try:
                result = func(*args, **kwargs)
            except BaseException:
                # Inside the except block the exception is "being handled", so metrics with
                # an error_raised label record True.
                self._finish(None, start, args, kwargs)
                self._after_sync(node)
                raise
            self._finish(result, start, args, kwargs)
            self._after_sync(node)
            return result
        finally:
            self._leave(node, token)

    async def async_inner(
        self, func: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> Any:
        if not self.base_profiler.needs_profiling():
            return await func(*args, **kwargs)
        node, token, start = self._enter(func, args, kwargs)
        try:
            try:
                result = await func(*args, **kwargs)
            except BaseException:
                self._finish(None, start, args, kwargs)
                if self._due(node):
                    await self._after_async()
                raise
            self._finish(result, start, args, kwargs)
            if self._due(node):
                await self._after_async()
            return result
        finally:
            self._leave(node, token)

    def _after_sync(self, node: Any) -> None:
        if self._due(node):
            if self.base_profiler.handle_inline:
                self.handle_records_clear()
            else:
                self._hand_over()

    def handle_records_clear(self) -> None:
        raise NotImplementedError

    async def _after_async(self) -> None:
        if self.base_profiler.handle_inline:
            self.handle_records_clear()
        else:
            self._hand_over()


def _lock_of(metric: Any) -> Any:
    """The metric's lock (taking its records and emptying them is one step for the
    operations of other threads), or none for a metric-like object without one."""
    lock = getattr(metric, "_lock", None)
    return lock if lock is not None else contextlib.nullcontext()


def _take_records(metrics: dict[str, Any]) -> Iterator[tuple[str, list[Record]]]:
    """Each metric's records, taken and emptied one metric at a time as the caller goes
    on, as (metric name, records); metrics without records are skipped."""
    for metric in list(metrics.values()):
        with _lock_of(metric):
            records = metric.to_records()
            metric.cleanup()
        if records:
            yield metric.name, records


def _handle(handler: Any, records: list[Record], name: str) -> Any:
    """``handler.handle(records, name)``; a failure is logged, never raised."""
    try:
        return handler.handle(records, name)
    except Exception:
        _log.exception("phanos handler %r failed", getattr(handler, "handler_name", handler))
        return None


class SyncExtProfiler(_ExtProfiler):
    """Profiling after :meth:`Profiler.config`: records handed over after each root call."""

    def handle_records_clear(self) -> None:
        """Hand every metric's records to every handler now, on this thread."""
        base = self.base_profiler
        for name, records in _take_records(base.metrics):
            for handler in list(base.handlers.values()):
                _handle(handler, records, name)

    def force_handle_records_clear(self) -> None:
        self.handle_records_clear()
        self.base_profiler.tree.clear()


class AsyncExtProfiler(_ExtProfiler):
    """Profiling after :meth:`Profiler.async_config`: async roots hand over; sync calls
    only guard against records piling up (as Phanos does)."""

    async def handle_records_clear(self) -> None:  # type: ignore[override]
        """Hand every metric's records to every handler now (async ones awaited)."""
        base = self.base_profiler
        for name, records in _take_records(base.metrics):
            for handler in list(base.handlers.values()):
                done = _handle(handler, records, name)
                if inspect.isawaitable(done):
                    try:
                        await done
                    except Exception:
                        self.logger.exception("phanos handler %r failed", handler.handler_name)

    async def force_handle_records_clear(self) -> None:
        await self.handle_records_clear()
        self.base_profiler.tree.clear()

    def _after_sync(self, node: Any) -> None:
        base = self.base_profiler
        if base.get_records_count() >= Profiler.RECORDS_ERR_LIMIT:
            self.error("Too many records, clearing records")
            for metric in base.metrics.values():
                metric.cleanup()

    async def _after_async(self) -> None:
        if self.base_profiler.handle_inline:
            await self.handle_records_clear()
        else:
            self._hand_over()
