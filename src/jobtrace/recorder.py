"""The recorder: one per process, between the API and a sink.

The API calls :meth:`Recorder.record` with a small tuple. That appends to a bounded deque —
no I/O, no lock (``deque.append`` and ``len`` are atomic under the GIL) — and returns. A
daemon thread takes batches off the deque at least every ``flush_interval`` seconds (and
every heartbeat interval, whichever is shorter), sooner when the deque passes a high-water
mark, and hands each batch to the sink.

- Full buffer: the oldest records spill to the spool on local disk (one file of up to a
  batch, written in one go, ~0.2 µs a record), and the writer delivers them when it
  catches up. Nothing is dropped while the spool has room; past its cap
  (``JOBTRACE_SPOOL_MAX_BYTES``) or when the disk refuses, records are dropped, counted per
  kind and per job (a job's snapshots carry ``records_dropped``), and logged once per
  episode. Job snapshots (:meth:`Recorder.record_control`) are never dropped.
- Order: the writer always delivers the oldest thing first — files spooled by earlier
  processes, then this process's spooled files in the order their records left memory,
  then the deque — so a later value is never overwritten by an older one replayed after it.
- Sink down: batches are spooled (see :mod:`jobtrace.spool`); the sink is retried with
  backoff, and spooled files go first when it is back. The next process that uses the same
  sink URL replays what this one could not deliver.
- Bounded waits: the write lock (held across a sink write) is only ever waited for with a
  deadline. :meth:`Recorder.flush` waits at most ``JOBTRACE_FLUSH_TIMEOUT`` seconds by
  default; then it moves what is still in memory (and a copy of the batch stuck in a sink
  write) to the spool, so everything recorded before it is delivered or on disk.
- Exit: ``atexit`` flushes; SIGTERM and SIGINT flush, then chain to the handler the program
  had installed (or to the default action, so the exit status stays truthful).
- Export (``JOBTRACE_EXPORT``, ``configure(export=…)``): every batch the sink took is
  handed, the kinds the export's sink uses, to a second recorder for the export URL: its
  own buffer, writer thread, spool and backoff, so a collector that is down or slow never
  holds up the store, and the store being down means nothing is exported that it did not
  take. Explicit flushes (:func:`flush`, exit, SIGTERM) flush the export after the store,
  within the same time.
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
from typing import Any, Final

from jobtrace import _losses
from jobtrace._config import Settings, load_speedups, mask_url
from jobtrace._losses import Losses
from jobtrace.backlog import Backlog, Batch, SpooledFile
from jobtrace.errors import BatchRefusedError, one_line
from jobtrace.model import JOB, Record
from jobtrace.sinks import Sink, kinds_taken, open_sink, write_batch
from jobtrace.spool import Spool

#: The compiled ``record`` (an Appender), or None: then Recorder._record does the work.
_speedups = load_speedups()

log = logging.getLogger("jobtrace.recorder")

#: Longest pause between attempts to reach a sink that is down.
MAX_RETRY_DELAY = 30.0
#: Longest wait of a ``fork`` for a sink write in progress (see Recorder._before_fork).
_FORK_WAIT = 1.0
#: ``flush(timeout=DEFAULT)``: wait as long as the settings say.
DEFAULT: Final = -1.0

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
        self._held_for_fork = False
        #: The export's recorder (settings.export), fed from _write.
        self._export: Recorder | None = None
        #: The record kinds this recorder's sink uses (None: all), when it is an export.
        self._kinds: frozenset[str] | None = None
        self._spool = Spool(settings.spool_dir, settings.url, settings.spool_max_bytes)
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
            self._appender = _speedups.Appender(self._buf, self._wake_writer, self._overflow, 1, 1)
        self._wake = threading.Event()
        self._wake_pending = False
        # Held across a sink write: waited for only with a deadline (see flush()).
        self._write_lock = threading.Lock()
        # Reentrant: a signal handler on the thread that holds it may need it again.
        self._stats_lock = threading.RLock()
        self._sink: Sink | None = None
        self._sink_down_since: float | None = None
        self._retry_at = 0.0
        self._retry_delay = 0.5
        self._spool_checked = False
        self._closed = False
        self._lock_owner: int | None = None
        self._deferred_signal: tuple[int, FrameType | None] | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        #: What this process had to drop (the spool full), by kind and by job.
        self.losses = Losses()
        self._backlog = Backlog(self._buf, self._spool, self.losses, self._run_deferred_signal)
        self.written = 0
        self.replayed = 0
        self.quarantined = 0

    def _apply(self, settings: Settings) -> None:
        self._settings = settings
        self._capacity = settings.buffer_size
        self._batch_size = settings.batch_size
        self._flush_at = max(1, min(settings.batch_size, settings.buffer_size // 2))
        # A spill moves this many of the oldest records to disk: a batch at most, so one
        # spill costs the caller a few milliseconds, once per that many records.
        self._chunk = max(1, min(settings.batch_size, settings.buffer_size // 2))
        # Heartbeats tick on this thread, so it must wake at least that often.
        self._interval = min(settings.flush_interval, settings.heartbeat_interval)
        self._spool = Spool(settings.spool_dir, settings.url, settings.spool_max_bytes)
        self._backlog.spool = self._spool
        self._apply_export(settings)
        # Decide once: a disabled recorder's `record` is a no-op bound at configure time.
        if not settings.enabled:
            self.record = _record_nothing
        elif _speedups is not None:
            self._appender.capacity = self._capacity
            self._appender.flush_at = self._flush_at
            self.record = self._appender
        else:
            self.record = self._record

    def _apply_export(self, settings: Settings) -> None:
        """Open, keep or replace the export's recorder for ``settings.export``."""
        wanted = (
            settings._replace(url=settings.export, export=None, install_signal_handlers=False)
            if settings.export
            else None
        )
        export = self._export
        if export is not None and export.settings == wanted:
            return
        self._export = None
        if export is not None:
            export.close()  # flushed by reconfigure() already; this stops its thread
        if wanted is not None:
            export = Recorder(wanted)
            export._kinds = kinds_taken(wanted.url)
            self._export = export

    @property
    def export(self) -> Recorder | None:
        """The recorder of the export URL (``JOBTRACE_EXPORT``), or None."""
        return self._export

    def forward(self, records: Sequence[Record]) -> None:
        """Queue the records of a batch another recorder's sink took (those of the kinds
        this recorder's sink uses): the export's entry. Never blocks, never raises."""
        record = self.record
        kinds = self._kinds
        for rec in records:
            if kinds is None or rec[0] in kinds:
                record(rec)

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def spool(self) -> Spool:
        """The spool of the current sink URL."""
        return self._spool

    def reconfigure(self, settings: Settings) -> None:
        """Flush what is buffered to the old sink (or its spool), then switch to ``settings``."""
        self.flush()
        with self._locked(self._settings.flush_timeout) as acquired:
            # Not acquired: the writer is stuck in a write to the old sink. flush() put a
            # copy of that batch in the old spool; the writer finds the new sink next time.
            if acquired:
                self._close_sink()
            else:
                self._sink = None
            self._backlog.release()
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
            self._overflow(record)
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

    def _overflow(self, record: Record) -> None:
        """The buffer is full: spill its oldest records to the spool, then queue ``record``.

        Costs the caller one spill (a batch written in one go) per ``_chunk`` records.
        """
        try:
            backlog = self._backlog
            if backlog.owner != threading.get_ident():
                # (Owned by this thread: a signal handler or finalizer inside a spill. The
                # record then goes past capacity rather than wait for ourselves.)
                with backlog.held():
                    if len(self._buf) >= self._capacity:
                        backlog.spill(self._chunk, self._capacity)
            self._buf.append(record)
            self._wake_writer()
        except Exception:  # never into the caller's code
            log.exception("jobtrace: spilling records to the spool failed")

    def record_control(self, record: Record) -> None:
        """Queue a record that must not be dropped (job snapshots), even past capacity."""
        if self.record is _record_nothing:
            return
        if record[0] == JOB:
            # Kept to re-send with drop counts should records of an ended job be dropped.
            self.losses.note_snapshot(record)
        self._buf.append(record)
        if self._thread is None:
            self._start_thread()

    def records_dropped(self, job_id: str) -> dict[str, int] | None:
        """Records of ``job_id`` dropped in this process, by kind (``None``: none)."""
        return self.losses.for_job(job_id)

    @property
    def dropped(self) -> int:
        """Records dropped in this process (the spool full), all kinds together."""
        return self.losses.total

    @property
    def dropped_by_kind(self) -> dict[str, int]:
        """Records dropped in this process, by kind."""
        return dict(self.losses.by_kind)

    @property
    def spooled(self) -> int:
        """Records this process wrote to the spool (sink down, buffer full, flush timeout)."""
        return self._backlog.spooled

    @property
    def spilled(self) -> int:
        """Records this process spilled to the spool because its buffer was full."""
        return self._backlog.spilled

    def _refresh_snapshots(self) -> bool:
        """Queue new snapshots of ended jobs that lost records since their last one."""
        updates = self.losses.updates()
        for snapshot in updates:
            self.record_control(snapshot)
        return bool(updates)

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
            self._service_sink()
            now = time.time()
            for ticker in self._tickers:
                try:
                    ticker(now)
                except Exception:
                    log.exception("jobtrace: recorder ticker %r failed", ticker)

    def _service_sink(self) -> None:
        """Let a sink with a connection to keep alive (``service()``: AMQP heartbeats) do
        so on every tick, busy or idle; skipped while a flush on another thread holds it."""
        service = getattr(self._sink, "service", None)
        if service is None:
            return
        try:
            with self._locked(0) as acquired:
                if acquired:
                    service()
        except Exception:  # a bug in a sink must not stop the writer thread
            log.exception("jobtrace: servicing the sink's connection failed")

    @contextlib.contextmanager
    def _locked(self, timeout: float | None) -> Iterator[bool]:
        """Hold the write lock (yields False if ``timeout`` passed), noting the owner so a
        signal handler on the same thread knows not to wait for it."""
        acquired = self._write_lock.acquire(timeout=-1 if timeout is None else max(0, timeout))
        if not acquired:
            yield False
            return
        self._lock_owner = threading.get_ident()
        try:
            yield True
        finally:
            self._lock_owner = None
            self._write_lock.release()
            self._run_deferred_signal()

    def _run_deferred_signal(self) -> None:
        deferred = self._deferred_signal
        if (
            deferred is not None
            and self._lock_owner is None
            and self._backlog.owner is None
            and threading.current_thread() is threading.main_thread()
        ):
            self._deferred_signal = None
            self._on_signal(*deferred)

    def flush(self, timeout: float | None = DEFAULT, *, retry: bool = True) -> bool:
        """Write everything recorded so far; False if the sink was too slow for ``timeout``.

        ``timeout`` defaults to the ``flush_timeout`` setting (``JOBTRACE_FLUSH_TIMEOUT``,
        30 s); ``None`` waits as long as it takes. Whatever is not written when it returns
        is in the spool (on disk), to be written later. An explicit flush tries a sink that
        is down at once (``retry``); the background thread waits for the backoff delay
        instead. Never raises.
        """
        if os.getpid() != self._pid:  # a fork hook has not run (e.g. os.fork from C)
            self._after_fork_in_child()
        if timeout == DEFAULT:
            timeout = self._settings.flush_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        if retry:
            self._retry_at = 0.0
        try:
            done = True
            for _ in range(2):  # again for snapshots re-sent with drop counts
                target = self._backlog.target()
                done = self._drain(target, deadline) and done
                if not done:
                    self._backlog.spill_until(target, self._chunk)
                if not self._refresh_snapshots():
                    break
        except Exception:  # a bug in a sink or the spool must not reach the caller
            log.exception("jobtrace: recorder flush failed")
            done = False
        export = self._export
        if retry and export is not None:
            # An explicit flush (not the writer's tick): the export gets what the store just
            # took, within the time left (none left: its spool keeps it for later).
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done = export.flush(left) and done
        return done

    def spool_if_down(self) -> None:
        """With the sink down, move what waits in memory to the spool now, as the exit
        flush would; with the sink up (only slow), leave it for the writer. Never raises."""
        if self._sink_down_since is None or os.getpid() != self._pid:
            return
        try:
            self._backlog.spill_until(self._backlog.target(), self._chunk)
        except Exception:  # a bug in the spool must not reach the caller
            log.exception("jobtrace: spooling for a sink that is down failed")

    def deliver(self, timeout: float) -> bool:
        """Write what was recorded so far if the writer gets to it within ``timeout``;
        True when all of it reached the sink.

        Unlike :meth:`flush`, running out of time spills nothing (the writer thread simply
        carries on) and a sink that is down is not retried early, so a caller that only
        wants to read its records back (a job's report) never changes what the recorder
        keeps or drops, and waits at most ``timeout`` behind a stuck sink. Never raises.
        """
        if os.getpid() != self._pid:
            return False
        try:
            done = self._drain(self._backlog.target(), time.monotonic() + timeout)
            return done and self._sink_down_since is None
        except Exception:  # a bug in a sink or the spool must not reach the caller
            log.exception("jobtrace: recorder delivery failed")
            return False

    def _drain(self, target: int, deadline: float | None) -> bool:
        """Deliver, oldest first, everything taken or to be taken before ``target``; False
        if ``deadline`` passed first. The write lock is taken per batch, so a flush on
        another thread can take its turn between two batches of the writer thread."""
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            with self._locked(remaining) as acquired:
                if not acquired:
                    return False
                if not self._spool_checked:
                    self._spool_checked = True
                    self._backlog.adopt()  # what earlier processes left for this URL
                if not self._step(target):
                    return True

    def _step(self, target: int) -> bool:
        """Deliver (or spool) the oldest batch or file before ``target`` (the write lock is
        held); False when nothing before ``target`` is left to do."""
        waiting = self._sink_down_since is not None and time.monotonic() < self._retry_at
        backlog = self._backlog
        unit = backlog.next(
            target, files=not waiting and not self._closed, batch_size=self._batch_size
        )
        if unit is None:
            return False
        if isinstance(unit, SpooledFile):
            self._deliver_file(unit)
        elif waiting:
            backlog.inflight = None
            backlog.spool_batch(unit, sync=True, locked=False)
        else:
            self._deliver_batch(unit)
        return True

    def _deliver_batch(self, batch: Batch) -> None:
        try:
            self._write(batch.records, batch.batch_id)
        except Exception as exc:
            if not isinstance(exc, BatchRefusedError):
                self._on_sink_failure(exc)
            self._backlog.spool_batch(batch, sync=True, locked=False)
        else:
            self.written += len(batch.records)
            if self._sink_down_since is not None:
                self._mark_up()
        finally:
            self._backlog.inflight = None

    def _deliver_file(self, entry: SpooledFile) -> None:
        try:
            delivered = entry.spool.deliver(entry.path, self._write)
        except Exception as exc:
            self._on_sink_failure(exc)
            return
        self._backlog.delivered(entry)
        if delivered is None:
            self.quarantined += 1
        else:
            self.replayed += delivered
            if self._sink_down_since is not None:
                self._mark_up()

    def _write(self, batch: Sequence[Record], batch_id: str | None) -> None:
        sink = self._sink
        if sink is None:
            sink = self._sink = open_sink(self._settings.url)
        with _losses.attributing(self.losses):
            write_batch(sink, batch, batch_id)
        export = self._export
        if export is not None:
            export.forward(batch)

    def _on_sink_failure(self, exc: BaseException) -> None:
        self._close_sink()
        now = time.monotonic()
        if self._sink_down_since is None:
            self._sink_down_since = now
            log.warning(
                "jobtrace: cannot write to %s (%s); spooling records to %s until it is back",
                mask_url(self._settings.url),
                one_line(exc),
                self._spool.directory,
            )
        else:
            self._retry_delay = min(self._retry_delay * 2, MAX_RETRY_DELAY)
        # A server that said when to come back (HTTP Retry-After) is not asked sooner.
        asked = getattr(exc, "retry_after", None) or 0.0
        self._retry_at = now + max(self._retry_delay, asked)

    def _mark_up(self) -> None:
        log.warning(
            "jobtrace: %s is reachable again; replaying spooled records",
            mask_url(self._settings.url),
        )
        self._sink_down_since = None
        self._retry_delay = 0.5
        self._backlog.adopt()  # other processes' leftovers too, now that it is up

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
        me = threading.get_ident()
        if me in (self._lock_owner, self._backlog.owner):
            # The signal interrupted a flush or a spill on this very thread: waiting for
            # its lock would wait for ourselves. Let it finish; it handles the signal.
            self._deferred_signal = (signum, frame)
            return
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        fatal = previous in (signal.SIG_DFL, None)
        for listener in self._terminate_listeners:
            try:
                listener(signum, fatal)
            except Exception:
                log.exception("jobtrace: terminate listener failed")
        # The process may be killed hard soon: what is in memory goes to disk first (fast,
        # local), then the sink gets what it takes before the deadline.
        self._backlog.spill_until(self._backlog.target(), self._chunk)
        self.flush()  # bounded; what the sink does not take by then stays in the spool
        if callable(previous):
            previous(signum, frame)
        elif fatal:
            self._backlog.release()
            # Die by the signal as if we had never been here, so the parent sees -SIGTERM.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def close(self) -> None:
        """Flush and stop the writer thread (the recorder records nothing afterwards)."""
        self.record = _record_nothing
        self.flush()
        self._closed = True
        self._wake.set()
        with self._locked(self._settings.flush_timeout) as acquired:
            if acquired:
                self._close_sink()
        self._backlog.release()
        if self._export is not None:
            self._export.close()

    def _at_exit(self) -> None:
        if os.getpid() != self._pid:
            return
        try:
            if not self.flush():
                log.warning(
                    "jobtrace: %s did not take every record within %.0f s at exit; the rest "
                    "stays in the spool %s and is written by the next run that uses it",
                    mask_url(self._settings.url),
                    self._settings.flush_timeout,
                    self._spool.directory,
                )
            self._finish()
        except Exception:
            log.exception("jobtrace: final flush failed")

    def _finish(self) -> None:
        """After the exit flush: stop, close the sinks, let go of the spool."""
        self._closed = True
        with self._locked(0) as acquired:
            if acquired:
                self._close_sink()
        self._backlog.release()
        if self._export is not None:
            self._export._finish()

    def _before_fork(self) -> None:
        # The writer opens its sink under the write lock, importing the sink's modules the
        # first time. A fork in the middle of that import leaves the child with a module
        # lock that nobody will release, and the child's first flush hangs on it; so the
        # fork waits for a write in progress (briefly: a slow sink must not stall the
        # program's fork for long, and a write is then more likely I/O than an import).
        if self._lock_owner != threading.get_ident():
            self._held_for_fork = self._write_lock.acquire(timeout=_FORK_WAIT)
        if self._export is not None:
            self._export._before_fork()
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

    def _after_fork_in_parent(self) -> None:
        if self._held_for_fork:
            self._held_for_fork = False
            self._write_lock.release()
        if self._export is not None:
            self._export._after_fork_in_parent()

    def _after_fork_in_child(self) -> None:
        self._held_for_fork = False  # the child gets a lock of its own
        sink = self._sink
        self._init_process_state()
        after_fork = getattr(sink, "after_fork", None)
        if after_fork is not None:
            # Drop inherited connections without closing the parent's sockets.
            after_fork()
        if self._export is not None:
            self._export._after_fork_in_child()


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
                after_in_parent=lambda: _call(ref, "_after_fork_in_parent"),
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


def flush(timeout: float | None = DEFAULT) -> bool:
    """Write every record buffered so far to the sink; never raises.

    Waits at most ``timeout`` seconds (default: ``JOBTRACE_FLUSH_TIMEOUT``, 30 s; ``None``:
    as long as it takes). Returns False if the sink did not take everything by then: the
    rest is in the spool on local disk, written later by this process or the next one.
    """
    return get_recorder().flush(timeout)
