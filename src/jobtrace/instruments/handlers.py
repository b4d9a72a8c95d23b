"""Handlers: where each profiled root call's records go, off the caller's thread.

A profiled root call hands its raw records (small tuples) to the profiler's
:class:`HandlerDispatcher` — one ``deque.append``, no lock, no I/O — and returns. A daemon
thread drains the queue every :data:`DISPATCH_INTERVAL` seconds (sooner past a high-water
mark), turns the raw tuples into Phanos's record dicts once, and calls each handler's
``handle(records, profiler_name)``; then each handler's ``tick()``, where a handler that
batches (RabbitMQ) sends and services its connection. A full queue drops the root call's
records and counts them (one log line per overflow episode); a handler that raises is
logged once and the others go on.

A record is Phanos's dict: ``item`` (the owner), ``metric``, ``units``, ``job``,
``method`` (the context string), ``labels`` and ``value`` — an (operation, value) pair.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Final, Generic, TextIO, TypeVar

import orjson

__all__ = [
    "DISPATCH_INTERVAL",
    "BaseHandler",
    "HandlerDispatcher",
    "LoggerHandler",
    "NamedLoggerHandler",
    "ProfileRecord",
    "StreamHandler",
    "format_record",
]

log = logging.getLogger("jobtrace.instruments")

#: Seconds between the dispatcher's rounds when the queue stays small.
DISPATCH_INTERVAL: Final = 0.5
#: Root calls queued before the dispatcher is woken early.
_HIGH_WATER: Final = 1024
#: Root calls held at most; more are dropped and counted.
DEFAULT_CAPACITY: Final = 100_000

#: A raw record from the hot path: ("t", context, seconds, error type or None),
#: ("s", context, bytes, None) or ("m", metric, operation, label_values, value).
RawRecord = tuple[Any, ...]
ProfileRecord = dict[str, Any]
T = TypeVar("T")


def to_records(raw: Sequence[RawRecord], job: str) -> list[ProfileRecord]:
    """Phanos's record dicts for one root call's raw records."""
    out: list[ProfileRecord] = []
    for rec in raw:
        if rec[0] == "m":
            _, metric, op, label_values, value = rec
            out.append(
                {
                    "item": metric.name,
                    "metric": metric.metric,
                    "units": metric.units,
                    "job": metric.job or job,
                    "method": f"{metric.name}:{op}",
                    "labels": dict(label_values) if label_values else {},
                    "value": (op, value),
                }
            )
            continue
        kind, context, value, error = rec
        labels = {} if error is None else {"error_raised": "True", "error_type": error}
        out.append(
            {
                "item": context.split(":", 1)[0],
                "metric": "histogram",
                "units": "s" if kind == "t" else "B",
                "job": job,
                "method": context,
                "labels": labels,
                "value": ("observe", value),
            }
        )
    return out


def format_record(profiler_name: str, record: ProfileRecord) -> str:
    """One line of text per record, as Phanos's stream and logger handlers write them."""
    value = record["value"][1]
    method, units = record["method"], record["units"]
    text = f"profiler: {profiler_name}, method: {method}, value: {value} {units}"
    labels = record.get("labels")
    if labels:
        text += ", labels: " + ", ".join(f"{k}={v}" for k, v in labels.items())
    return text


class BaseHandler:
    """A named receiver of root calls' records; subclasses implement :meth:`handle`."""

    def __init__(self, handler_name: str) -> None:
        if not isinstance(handler_name, str) or not handler_name:
            from jobtrace.errors import ConfigurationError

            raise ConfigurationError(f"a handler needs a name, got {handler_name!r}")
        self.handler_name = handler_name

    def handle(self, records: list[ProfileRecord], profiler_name: str = "profiler") -> None:
        """Receive one root call's records (on the dispatcher's thread)."""
        raise NotImplementedError

    def tick(self) -> None:
        """Called after every dispatcher round (send buffered records, service sockets)."""

    def flush(self) -> bool:
        """Send what is buffered now; False if some could not be sent (explicit flushes)."""
        self.tick()
        return True

    def close(self) -> None:
        """Called once the handler is removed and what it was given is handled."""


class StreamHandler(BaseHandler):
    """Writes one line per record to ``output`` (default ``sys.stdout``)."""

    def __init__(self, handler_name: str, output: TextIO | None = None) -> None:
        super().__init__(handler_name)
        self.output = output

    def handle(self, records: list[ProfileRecord], profiler_name: str = "profiler") -> None:
        out = self.output if self.output is not None else sys.stdout
        out.write("".join(format_record(profiler_name, r) + "\n" for r in records))
        out.flush()


class LoggerHandler(BaseHandler):
    """Logs one line per record with ``logger`` (default ``jobtrace.instruments``)."""

    def __init__(
        self, handler_name: str, logger: logging.Logger | None = None, level: int = logging.DEBUG
    ) -> None:
        super().__init__(handler_name)
        self.logger = logger or log
        self.level = level

    def handle(self, records: list[ProfileRecord], profiler_name: str = "profiler") -> None:
        if not self.logger.isEnabledFor(self.level):
            return
        for record in records:
            self.logger.log(self.level, "%s", format_record(profiler_name, record))


class NamedLoggerHandler(LoggerHandler):
    """A :class:`LoggerHandler` whose logger is ``logging.getLogger(logger_name)``."""

    def __init__(self, handler_name: str, logger_name: str, level: int = logging.DEBUG) -> None:
        super().__init__(handler_name, logging.getLogger(logger_name), level)


def dumps_records(records: list[ProfileRecord]) -> bytes:
    """JSON bytes of records (the RabbitMQ message body)."""
    return orjson.dumps(records, option=orjson.OPT_SERIALIZE_NUMPY, default=repr)


class QueueThread(Generic[T]):
    """A queue drained in rounds by one daemon thread, started on first use: every
    :data:`DISPATCH_INTERVAL` seconds, sooner when woken, or at once on the caller's thread
    by :meth:`flush`. One round runs at a time; a fork starts the child with an empty queue
    and no thread. :class:`HandlerDispatcher` (``@profile``) and the Phanos layer's handler
    thread share this; each says what it queues, when it is full and what a round does."""

    #: The daemon thread's name (seen in thread dumps and profilers).
    thread_name: ClassVar[str] = "jobtrace-queue"

    def __init__(self) -> None:
        self._init_process_state()
        os.register_at_fork(after_in_child=self._init_process_state)

    def _init_process_state(self) -> None:
        self._queue: deque[T] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one round at a time: the thread or a flush()
        # Starting the thread has its own lock: a caller must never wait for a round (a
        # flush() on another thread) to finish.
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(DISPATCH_INTERVAL)
            self._wake.clear()
            with self._lock:
                self._round(flush=False)

    def _round(self, *, flush: bool) -> bool:
        """Take what is queued now and deliver it; whether all went well (a flush asks
        batching receivers to send at once)."""
        raise NotImplementedError

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Run a round now on this thread (False when another round did not end within
        ``timeout`` seconds, or when the round reports a failure)."""
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            return self._round(flush=True)
        finally:
            self._lock.release()


class HandlerDispatcher(QueueThread[tuple[RawRecord, ...]]):
    """The queue between profiled root calls and the handlers, and its thread."""

    thread_name = "jobtrace-profile-handlers"

    def __init__(
        self,
        profiler_name: str,
        handlers: Callable[[], tuple[BaseHandler, ...]],
        job: Callable[[], str],
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self.profiler_name = profiler_name
        # The profiler's current handlers and job, read when a round runs: a handler that
        # was removed got what was queued before (see close_handler).
        self._handlers = handlers
        self._job = job
        self.capacity = capacity
        self.dropped = 0
        self.failed = 0
        super().__init__()

    def _init_process_state(self) -> None:
        super()._init_process_state()
        self._overflowing = False
        self._known: tuple[BaseHandler, ...] = ()
        self._warned: set[int] = set()

    def submit(self, records: tuple[RawRecord, ...]) -> None:
        """Queue one root call's records (the caller's thread: never blocks, never raises).

        A tuple of tuples of plain values: the garbage collector stops tracking it after
        one pass, so a long queue costs the caller's collections nothing."""
        queue = self._queue
        n = len(queue)
        if n >= self.capacity:
            self._overflow()
            return
        queue.append(records)
        if self._thread is None:
            self._start()
        elif n == _HIGH_WATER:  # once per crossing: Event.set() takes a lock
            self._wake.set()

    def _overflow(self) -> None:
        self.dropped += 1
        if not self._overflowing:
            self._overflowing = True
            log.warning(
                "jobtrace: profiler handler queue full (%d root calls); dropping records "
                "until the handlers catch up",
                self.capacity,
            )

    def _round(self, *, flush: bool) -> bool:
        queue = self._queue
        ok = True
        handlers, job = self._handlers(), self._job()
        for _ in range(len(queue)):
            raw = queue.popleft()
            try:
                records = to_records(raw, job)
            except Exception:
                log.exception("jobtrace: profiler records could not be built")
                continue
            for handler in handlers:
                if handler not in self._known:
                    self._known = (*self._known, handler)
                try:
                    handler.handle(records, self.profiler_name)
                except Exception:
                    self._failed(handler)
        self._overflowing = False
        for handler in self._known:
            try:
                if flush:
                    ok = handler.flush() and ok
                else:
                    handler.tick()
            except Exception:
                self._failed(handler)
                ok = False
        return ok

    def _failed(self, handler: BaseHandler) -> None:
        self.failed += 1
        if id(handler) not in self._warned:
            self._warned.add(id(handler))
            log.exception(
                "jobtrace: profiler handler %r failed; its failures are counted from now on",
                handler.handler_name,
            )

    def close_handler(self, handler: BaseHandler) -> None:
        """Hand ``handler`` what is queued for it, then close it and forget it."""
        self.flush()
        with self._lock:
            self._known = tuple(h for h in self._known if h is not handler)
        try:
            handler.close()
        except Exception:
            self._failed(handler)
