"""The recorder: one per process, between the API and a sink.

The API calls :meth:`Recorder.record` with a small tuple. That appends to a bounded deque —
no I/O, no lock (``deque.append`` and ``len`` are atomic under the GIL) — and returns. A
daemon thread drains the deque in batches at least every ``flush_interval`` seconds (and
every heartbeat interval, whichever is shorter), sooner when the deque passes a high-water
mark, and hands each batch to the sink.

- Full buffer: the new record is dropped and counted; one log line per overflow episode.
  Job snapshots (:meth:`Recorder.record_control`) are never dropped, so a job's final
  state survives a flood of other records.
- Sink down: the batch is spooled to disk (see :mod:`jobtrace.spool`); the sink is retried
  with backoff. When it is back, spooled batches are replayed first, oldest first, then new
  ones are written, so a later value is never overwritten by an older replayed one. The
  next process that uses the same sink URL also replays.
- Exit: ``atexit`` flushes; SIGTERM and SIGINT flush, then chain to the handler the program
  had installed (or to the default action, so the exit status stays truthful).
- ``fork``: the child starts with an empty buffer and its own thread and sink connections,
  so nothing recorded before the fork is written twice; ``multiprocessing`` children flush
  when they exit too, although they leave through ``os._exit``.

Nothing here raises into the caller's code: a failure in the writer is logged.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any, cast

from jobtrace._config import Settings, load_speedups, mask_url
from jobtrace._ids import time_ordered_id
from jobtrace.model import Record
from jobtrace.sinks import BatchIdSink, Sink, open_sink
from jobtrace.spool import Spool

#: The compiled ``record`` (an Appender), or None: then Recorder._record does the work.
_speedups = load_speedups()

log = logging.getLogger("jobtrace.recorder")

#: Longest pause between attempts to reach a sink that is down.
MAX_RETRY_DELAY = 30.0
#: Records per part when a spool file is replayed in parts (ids of parts depend on it).
REPLAY_PART = 20_000
#: How long a signal handler or exit hook waits for the writer before giving up.
EXIT_FLUSH_TIMEOUT = 10.0

Ticker = Callable[[float], None]
TerminateListener = Callable[[int, bool], None]


def _record_nothing(record: Record) -> None:
    """The ``record`` of a disabled or closed recorder."""


class Recorder:
    """Buffers records and writes them to the configured sink from a background thread."""

    #: Queue one record: never blocks, never raises. Bound per instance when configured,
    #: to the real method or to a no-op when recording is disabled (decided once).
    record: Callable[[Record], None]

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tickers: tuple[Ticker, ...] = ()
        self._terminate_listeners: tuple[TerminateListener, ...] = ()
        self._previous_handlers: dict[int, Any] = {}
        self._mp_hooked = False
        self._init_process_state()
        self._apply(settings)

    # -- setup -------------------------------------------------------------------------

    def _init_process_state(self) -> None:
        """State that must be fresh in every process (called again after ``fork``)."""
        self._buf: deque[Record] = deque()
        # The compiled `record` stays the same object across a fork (tracing holds on to
        # it), pointed at the child's own buffer.
        appender = getattr(self, "_appender", None)
        if appender is not None:
            appender.retarget(self._buf)
        elif _speedups is not None:
            self._appender = _speedups.Appender(self._buf, self._wake_writer, self._drop, 1, 1)
        self._wake = threading.Event()
        self._wake_pending = False
        self._write_lock = threading.Lock()
        # Reentrant: a signal handler on the thread that holds it may need it again.
        self._stats_lock = threading.RLock()
        self._sink: Sink | None = None
        self._sink_down_since: float | None = None
        self._retry_at = 0.0
        self._retry_delay = 0.5
        self._spool_checked = False
        self._overflowing = False
        self._closed = False
        self._lock_owner: int | None = None
        self._deferred_signal: tuple[int, FrameType | None] | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.dropped = 0
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self.lost = 0

    def _apply(self, settings: Settings) -> None:
        self._settings = settings
        self._capacity = settings.buffer_size
        self._batch_size = settings.batch_size
        self._flush_at = max(1, min(settings.batch_size, settings.buffer_size // 2))
        # Heartbeats tick on this thread, so it must wake at least that often.
        self._interval = min(settings.flush_interval, settings.heartbeat_interval)
        self._spool = Spool(settings.spool_dir, settings.url)
        # Decide once: a disabled recorder's `record` is a no-op bound at configure time.
        if not settings.enabled:
            self.record = _record_nothing
        elif _speedups is not None:
            self._appender.capacity = self._capacity
            self._appender.flush_at = self._flush_at
            self.record = self._appender
        else:
            self.record = self._record

    @property
    def settings(self) -> Settings:
        return self._settings

    def reconfigure(self, settings: Settings) -> None:
        """Flush what is buffered to the old sink, then switch to ``settings``."""
        self.flush(timeout=EXIT_FLUSH_TIMEOUT)
        with self._locked(None):
            self._close_sink()
            self._sink_down_since = None
            self._retry_at = 0.0
            self._spool_checked = False
            self._apply(settings)
        if settings.install_signal_handlers and settings.enabled:
            self.install_signal_handlers()

    # -- the hot path --------------------------------------------------------------------

    def _record(self, record: Record) -> None:
        """Queue one record; never blocks, never raises (``_speedups.Appender`` in C)."""
        buf = self._buf
        n = len(buf)
        if n >= self._capacity:
            self._drop()
            return
        buf.append(record)
        # One test on the common path; the rare cases (buffer past its high-water mark,
        # no writer thread yet in this process) are sorted out by _wake_writer.
        if n >= self._flush_at or self._thread is None:
            self._wake_writer()

    def _wake_writer(self) -> None:
        if self._thread is None:
            self._start_thread()
        if len(self._buf) >= self._flush_at and not self._wake_pending:
            self._wake_pending = True
            self._wake.set()

    def record_control(self, record: Record) -> None:
        """Queue a record that must not be dropped (job snapshots), even past capacity."""
        if self.record is _record_nothing:
            return
        self._buf.append(record)
        if self._thread is None:
            self._start_thread()

    def _drop(self) -> None:
        with self._stats_lock:
            self.dropped += 1
            first = not self._overflowing
            self._overflowing = True
        if first:
            log.warning(
                "jobtrace: record buffer full (%d records); dropping new records until the "
                "writer catches up (raise JOBTRACE_BUFFER_SIZE to keep more)",
                self._capacity,
            )

    # -- the writer thread ---------------------------------------------------------------

    def _start_thread(self) -> None:
        with self._stats_lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name="jobtrace-recorder", daemon=True)
            self._thread = thread
        thread.start()

    def ensure_started(self) -> None:
        """Start the writer thread now (jobs call this so heartbeats tick from the start)."""
        if self._thread is None:
            self._start_thread()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._wake_pending = False
            if self._closed:  # set by close() on another thread
                break
            self.flush(timeout=None, retry=False)
            now = time.time()
            for ticker in self._tickers:
                try:
                    ticker(now)
                except Exception:
                    log.exception("jobtrace: recorder ticker %r failed", ticker)

    @contextlib.contextmanager
    def _locked(self, timeout: float | None) -> Iterator[bool]:
        """Hold the write lock (yields False if ``timeout`` passed), noting the owner so a
        signal handler on the same thread knows not to wait for it."""
        acquired = self._write_lock.acquire(timeout=-1 if timeout is None else timeout)
        if not acquired:
            yield False
            return
        self._lock_owner = threading.get_ident()
        try:
            yield True
        finally:
            self._lock_owner = None
            self._write_lock.release()
            deferred = self._deferred_signal
            if deferred is not None and threading.current_thread() is threading.main_thread():
                self._deferred_signal = None
                self._on_signal(*deferred)

    def flush(self, timeout: float | None = None, *, retry: bool = True) -> bool:
        """Write everything buffered so far; False if the writer was busy past ``timeout``.

        An explicit flush tries a sink that is down at once (``retry``); the background
        thread waits for the backoff delay instead. Never raises.
        """
        if os.getpid() != self._pid:  # a fork hook has not run (e.g. os.fork from C)
            self._after_fork_in_child()
        with self._locked(timeout) as acquired:
            if not acquired:
                return False
            try:
                if retry:
                    self._retry_at = 0.0
                self._flush_locked()
            except Exception:  # a bug in a sink or the spool must not reach the caller
                log.exception("jobtrace: recorder flush failed")
        return True

    def _flush_locked(self) -> None:
        buf = self._buf
        # Drain only what is there now, so a producer that never pauses cannot keep the
        # writer (or a caller of flush()) busy forever.
        remaining = len(buf)
        while remaining > 0:
            n = min(remaining, self._batch_size)
            batch = [buf.popleft() for _ in range(n)]
            remaining -= n
            self._deliver(batch)
        with self._stats_lock:
            self._overflowing = False
        if self._sink_down_since is not None and time.monotonic() >= self._retry_at:
            self._replay()  # probe the sink with spooled batches even when nothing is new
        if not self._spool_checked and self._sink_down_since is None:
            # The first flush of a process also picks up batches a previous run spooled.
            self._spool_checked = True
            if self._spool.pending():
                self._replay()

    def _deliver(self, batch: Sequence[Record]) -> None:
        # One id per batch, kept through spooling and replay, so a sink that deduplicates
        # by id (a server) stores a batch once however often it is retried.
        batch_id = time_ordered_id()
        if self._sink_down_since is not None:
            if time.monotonic() < self._retry_at:
                self._to_spool(batch, batch_id)
                return
            # Older spooled batches go first, so they never overwrite what comes after.
            self._replay()
            if self._sink_down_since is not None:
                self._to_spool(batch, batch_id)
                return
        try:
            self._write(batch, batch_id)
        except Exception as exc:
            self._on_sink_failure(exc)
            self._to_spool(batch, batch_id)
            return
        self.written += len(batch)

    def _write(self, batch: Sequence[Record], batch_id: str | None) -> None:
        sink = self._sink
        if sink is None:
            sink = self._sink = open_sink(self._settings.url)
        if getattr(sink, "accepts_batch_id", False):
            cast(BatchIdSink, sink).write(batch, batch_id=batch_id)
        else:
            sink.write(batch)

    def _on_sink_failure(self, exc: BaseException) -> None:
        self._close_sink()
        now = time.monotonic()
        if self._sink_down_since is None:
            self._sink_down_since = now
            log.warning(
                "jobtrace: cannot write to %s (%s); spooling records to %s until it is back",
                mask_url(self._settings.url),
                _one_line(exc),
                self._spool.directory,
            )
        else:
            self._retry_delay = min(self._retry_delay * 2, MAX_RETRY_DELAY)
        self._retry_at = now + self._retry_delay

    def _mark_up(self) -> None:
        log.warning(
            "jobtrace: %s is reachable again; replaying spooled records",
            mask_url(self._settings.url),
        )
        self._sink_down_since = None
        self._retry_delay = 0.5

    def _to_spool(self, batch: Sequence[Record], batch_id: str | None) -> None:
        try:
            self._spool.write(batch, batch_id)
            self.spooled += len(batch)
        except Exception as exc:
            self.lost += len(batch)
            log.error(
                "jobtrace: lost %d records: the sink is down and the spool %s cannot be "
                "written (%s)",
                len(batch),
                self._spool.directory,
                _one_line(exc),
            )

    def _replay(self) -> None:
        """Write spooled batches to the sink, oldest first; a success means it is up."""
        for path in self._spool.pending():
            claimed = self._spool.claim(path)
            if claimed is None:
                continue
            try:
                records = self._spool.read(claimed)
                batch_id = self._spool.batch_id(claimed)
                # A big file is split into parts of a fixed size, not of today's batch
                # size: a part's id must name the same records on every replay, or a
                # sink that drops repeated ids would drop records never stored.
                size = REPLAY_PART
                for start in range(0, len(records), size):
                    part_id = batch_id
                    if batch_id is not None and len(records) > size:
                        part_id = f"{batch_id}:{start}"
                    self._write(records[start : start + size], part_id)
            except Exception as exc:
                self._spool.release(claimed)
                self._on_sink_failure(exc)
                return
            self._spool.done(claimed)
            self.replayed += len(records)
            if self._sink_down_since is not None:
                self._mark_up()
        if self._sink_down_since is not None:
            # Nothing was spooled (or it all replayed): probe by opening the sink.
            try:
                if self._sink is None:
                    self._sink = open_sink(self._settings.url)
            except Exception as exc:
                self._on_sink_failure(exc)
                return
            self._mark_up()

    def _close_sink(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            try:
                sink.close()
            except Exception:
                log.debug("jobtrace: closing sink failed", exc_info=True)

    # -- listeners -------------------------------------------------------------------------

    def add_ticker(self, ticker: Ticker) -> None:
        """Call ``ticker(now)`` on the writer thread after every flush."""
        # Listeners live in a tuple that is replaced, never edited, so the writer thread
        # can iterate it without a lock.
        self._tickers = (*self._tickers, ticker)

    def remove_ticker(self, ticker: Ticker) -> None:
        # Equality, not identity: each `obj.method` lookup makes a new bound method.
        self._tickers = tuple(t for t in self._tickers if t != ticker)

    def add_terminate_listener(self, listener: TerminateListener) -> None:
        """Call ``listener(signum, fatal)`` when SIGTERM/SIGINT arrives, before flushing.

        ``fatal`` is True when the process is about to die by the signal's default action.
        """
        self._terminate_listeners = (*self._terminate_listeners, listener)

    def remove_terminate_listener(self, listener: TerminateListener) -> None:
        self._terminate_listeners = tuple(x for x in self._terminate_listeners if x != listener)

    # -- exit, signals, fork ----------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """Flush on SIGTERM and SIGINT, chaining the handlers already installed.

        Only the main thread may install handlers; elsewhere this does nothing.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            current = signal.getsignal(signum)
            # Bound methods compare equal, never identical: `==` avoids chaining to ourselves.
            if current in (self._on_signal, signal.SIG_IGN):
                continue
            self._previous_handlers[signum] = current
            try:
                signal.signal(signum, self._on_signal)
            except (ValueError, OSError):  # pragma: no cover - embedded interpreters
                log.debug("jobtrace: cannot install a handler for %s", signum)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._lock_owner == threading.get_ident():
            # The signal interrupted a flush on this very thread: waiting for the write
            # lock would wait for ourselves. Let that flush finish; it handles the signal.
            self._deferred_signal = (signum, frame)
            return
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        fatal = previous in (signal.SIG_DFL, None)
        for listener in self._terminate_listeners:
            try:
                listener(signum, fatal)
            except Exception:
                log.exception("jobtrace: terminate listener failed")
        self.flush(timeout=EXIT_FLUSH_TIMEOUT)
        if callable(previous):
            previous(signum, frame)
        elif fatal:
            # Die by the signal as if we had never been here, so the parent sees -SIGTERM.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def close(self) -> None:
        """Flush and stop the writer thread (the recorder records nothing afterwards)."""
        self.record = _record_nothing
        self.flush(timeout=EXIT_FLUSH_TIMEOUT)
        self._closed = True
        self._wake.set()
        with self._locked(EXIT_FLUSH_TIMEOUT) as acquired:
            if acquired:
                self._close_sink()

    def _at_exit(self) -> None:
        if os.getpid() != self._pid:
            return
        try:
            if self.flush(timeout=EXIT_FLUSH_TIMEOUT):
                with self._locked(EXIT_FLUSH_TIMEOUT) as acquired:
                    if acquired:
                        self._close_sink()
            else:
                log.error(
                    "jobtrace: the writer was busy for %.0f s at exit; %d buffered records "
                    "were not written",
                    EXIT_FLUSH_TIMEOUT,
                    len(self._buf),
                )
        except Exception:
            log.exception("jobtrace: final flush failed")

    def _before_fork(self) -> None:
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None and not self._mp_hooked:
            # multiprocessing children leave through os._exit, skipping atexit; its own
            # after-fork hooks are the one place to register an exit flush that survives
            # the child's bootstrap (which clears finalizers registered earlier).
            self._mp_hooked = True
            mp_util.register_after_fork(self, Recorder._register_mp_exit_flush)

    def _register_mp_exit_flush(self) -> None:
        import multiprocessing.util as mp_util

        mp_util.Finalize(self, self._at_exit, exitpriority=0)

    def _after_fork_in_child(self) -> None:
        sink = self._sink
        self._init_process_state()
        after_fork = getattr(sink, "after_fork", None)
        if after_fork is not None:
            # Drop inherited connections without closing the parent's sockets.
            after_fork()


_lock = threading.Lock()
_recorder: Recorder | None = None


def get_recorder() -> Recorder:
    """The process's recorder, created on first use from the current settings."""
    global _recorder
    rec = _recorder
    if rec is not None:
        return rec
    with _lock:
        if _recorder is None:
            from jobtrace import _config

            settings = _config.current()
            rec = Recorder(settings)
            if settings.install_signal_handlers and settings.enabled:
                rec.install_signal_handlers()
            ref = weakref.ref(rec)
            atexit.register(_exit_hook, ref)
            os.register_at_fork(
                before=lambda: _call(ref, "_before_fork"),
                after_in_child=lambda: _call(ref, "_after_fork_in_child"),
            )
            mp = sys.modules.get("multiprocessing")
            if mp is not None and mp.parent_process() is not None:
                # A multiprocessing worker (fork, forkserver) that records for the first
                # time: it will leave through os._exit, so flush from its own finalizers.
                rec._register_mp_exit_flush()
            _recorder = rec
        return _recorder


def _call(ref: weakref.ref[Recorder], method: str) -> None:
    rec = ref()
    if rec is not None:
        try:
            getattr(rec, method)()
        except Exception:  # a fork hook must never break the user's fork
            log.exception("jobtrace: fork hook %s failed", method)


def _exit_hook(ref: weakref.ref[Recorder]) -> None:
    rec = ref()
    if rec is not None:
        rec._at_exit()


def _reset_module_lock() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_module_lock)


def record(rec: Record) -> None:
    """Queue one record on the process's recorder."""
    get_recorder().record(rec)


def flush(timeout: float | None = None) -> bool:
    """Write every record buffered so far to the sink (or the spool); never raises.

    Returns False if the writer was still busy after ``timeout`` seconds.
    """
    return get_recorder().flush(timeout)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
