"""The sampler: one thread per process that records where a job's threads spend their time.

About ``sample_hz`` times a second the thread reads every thread's stack
(``sys._current_frames()``) and credits it with two weights:

- **wall time**: the time elapsed since that thread's previous sample. Counting samples
  would hide a thread that holds the GIL in a long C call (the sampler cannot run during the
  call, so it takes no samples); weighting by elapsed time credits the whole gap to the
  stack seen when the sampler gets the GIL back, which is the C call's caller, on the line
  of the call. (Should a third thread also be waiting for the GIL when the call returns and
  get it first, the caller may run on before the sampler looks; that part of the call then
  goes to whatever the caller runs next.)
- **CPU time**: the growth of that thread's own CPU clock since its previous sample.

So one pass yields a wall-time profile and a CPU-time profile; wall minus CPU is time spent
waiting (I/O, locks, sleep). The same thread samples the process's RSS and CPU use for the
timeline. jobtrace's own threads (``jobtrace-*``) are left out.

Stacks are aggregated in memory and handed to the recorder as
:func:`~jobtrace.profiles.folded.stacks_record` deltas (each stack's text sent once) and
:func:`~jobtrace.profiles.folded.timeline_record` points: every flush interval at first,
then less often as the job ages (at most every :data:`MAX_EMIT_INTERVAL` seconds), so an
hour-long job stores a few hundred small records. The last records are handed over when the
job ends, on SIGTERM, and when a ``multiprocessing`` child exits.

One job is profiled per process at a time: a job started while another is profiled here
(nested jobs, concurrent decorated calls) gets no profile of its own. Child processes
(``fork``, and ``spawn``/``forkserver`` through :mod:`jobtrace.profiles.children`) carry on
profiling for the same job, labelled by process, so their stacks merge into its profile.
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
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, Final

from jobtrace.profiles import folded
from jobtrace.profiles.frames import FrameNamer

__all__ = ["DEFAULT_HZ", "ProfileSession", "current_session", "process_label", "start"]

log = logging.getLogger("jobtrace.profiles")

#: Samples per second when none is configured.
DEFAULT_HZ: Final = 100.0
#: Longest time between two handovers of records to the recorder, for a long job.
MAX_EMIT_INTERVAL: Final = 10.0
#: Timeline points every this many seconds in the job's first 10 s (so a short job's chart
#: has a shape), then every TIMELINE_EARLY seconds in its first minute, then every second.
TIMELINE_START: Final = 0.1
TIMELINE_EARLY: Final = 0.5
TIMELINE_LATE: Final = 1.0
#: Deeper stacks keep their root-most frames (recursion past Python's default limit).
MAX_DEPTH: Final = 2048

_LINUX = sys.platform.startswith("linux")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4

Clock = Callable[[], float]


def _thread_cpu_clock(native_id: int | None) -> int | None:
    """The CPU-time clock id of the kernel thread ``native_id`` (Linux), else None.

    Linux encodes a thread's CPU clock in the clock id itself: this is what
    ``pthread_getcpuclockid`` returns for the thread, computed from the kernel thread id.
    ``time.pthread_getcpuclockid(ident)`` itself would read the thread's ``pthread``
    descriptor, memory that may already be gone when the thread exits between the stack
    read and the clock read; the kernel just refuses an id whose thread is gone (EINVAL).
    """
    if not _LINUX or native_id is None:
        return None
    return ((~native_id) << 3) | 6  # CPUCLOCK_PERTHREAD_MASK (4) | CPUCLOCK_SCHED (2)


def _block_signals() -> None:
    """Keep process-directed signals away from the calling (sampler) thread.

    The kernel hands such a signal to any thread that does not block it. Python runs the
    handler on the main thread anyway, but only once that thread gets back to Python code:
    a main thread blocked in a system call (a pool worker waiting for its next task) is
    interrupted only if the signal lands on it.
    """
    if not hasattr(signal, "pthread_sigmask"):
        return
    names = (
        "SIGTERM",
        "SIGINT",
        "SIGHUP",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGALRM",
        "SIGCHLD",
        "SIGWINCH",
        "SIGPROF",
        "SIGVTALRM",
    )
    wanted = {getattr(signal, name) for name in names if hasattr(signal, name)}
    with contextlib.suppress(OSError, ValueError):  # exotic platforms: sample anyway
        signal.pthread_sigmask(signal.SIG_BLOCK, wanted)


def _hold_signals() -> set[int | signal.Signals] | None:
    """Block SIGTERM and SIGINT on this thread; the previous mask, to restore (None: none
    was changed). Blocked signals stay pending and are handled once unblocked."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    try:
        return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    except (OSError, ValueError):
        return None


def _rss_kb() -> int:
    try:
        with open("/proc/self/statm", "rb") as handle:  # noqa: PTH123 - hot, procfs
            return int(handle.read().split()[1]) * _PAGE_KB
    except (OSError, ValueError, IndexError):
        import resource

        # Elsewhere: the high-water mark, the closest cheap figure (KiB on Linux, bytes on macOS).
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak // 1024) if sys.platform == "darwin" else int(peak)


class StackTable:
    """The distinct stacks one process saw for one job, and their weights since the last
    :meth:`take`. Stack ids are small ints; a stack's text is handed out once."""

    __slots__ = ("_ids", "_namer", "_pending", "_unsent")

    def __init__(self, namer: FrameNamer) -> None:
        self._namer = namer
        self._ids: dict[tuple[CodeType, ...], int] = {}
        self._unsent: dict[int, str] = {}
        self._pending: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: tuple[CodeType, ...], wall_us: int, cpu_us: int) -> None:
        stack_id = self._ids.get(key)
        if stack_id is None:
            stack_id = self._ids[key] = len(self._ids) + 1
            name = self._namer.name
            self._unsent[stack_id] = ";".join([name(code) for code in key])
        weights = self._pending.get(stack_id)
        if weights is None:
            self._pending[stack_id] = [wall_us, cpu_us]
        else:
            weights[0] += wall_us
            weights[1] += cpu_us

    def take(self) -> tuple[dict[int, str], list[tuple[int, int, int]]]:
        """(texts of stacks not handed out yet, [(stack id, wall µs, cpu µs), …]) since the
        last call; only stacks with weight are included."""
        samples = [(k, w, c) for k, (w, c) in self._pending.items() if w or c]
        new = {k: self._unsent.pop(k) for k, _, _ in samples if k in self._unsent}
        self._pending = {}
        return new, samples


class ProfileSession:
    """Profiles one process for one job: a sampler thread, its stacks and its timeline."""

    def __init__(
        self,
        job_id: str,
        hz: float = DEFAULT_HZ,
        *,
        child: bool = False,
        flush_interval: float = 1.0,
        clock: Clock = time.perf_counter,
        wall_clock: Clock = time.time,
        record: Callable[[Any], None] | None = None,
    ) -> None:
        self.job_id = job_id
        self.hz = hz
        self.child = child
        self.interval = 1.0 / hz
        self._flush_interval = flush_interval
        self._clock = clock
        self._wall_clock = wall_clock
        self._record = record
        self._pid = os.getpid()
        self._label: str | None = None
        # Reentrant: finish() may run in a signal handler on a thread inside a tick.
        self._lock = threading.RLock()
        self.running = False
        self._namer = _namer()
        self._table = StackTable(self._namer)
        # Per thread (by ident): when it was last sampled, its CPU clock then, its clock id.
        self._last_wall: dict[int, float] = {}
        self._last_cpu: dict[int, float] = {}
        self._cpu_clocks: dict[int, int | None] = {}
        self._natives: dict[int, int | None] = {}
        self._skip: set[int] = set()
        # The thread that starts the session knows its own kernel id. After a fork,
        # threading (before 3.12) still holds the parent's id for the forking thread.
        self._starter = threading.current_thread()
        self._starter_native = threading.get_native_id()
        self._own: int | None = None
        self._points: list[tuple[float, int, float]] = []
        self._errors = 0

    # -- life cycle ------------------------------------------------------------------------

    @property
    def label(self) -> str:
        """The process frame at the root of this process's stacks."""
        if self._label is None:
            kind = "main"
            if self.child:
                mp = sys.modules.get("multiprocessing")
                name = mp.current_process().name if mp is not None else "MainProcess"
                kind = name if name != "MainProcess" else "child"
            self._label = f"process {self._pid} ({kind})"
        return self._label

    def begin(self, *, thread: bool = True) -> None:
        """Take the baselines (every thread's CPU clock now) and start the sampler thread."""
        now = self._clock()
        self._started = self._prev = now
        self._window_start = self._wall_clock()
        self._next_emit = now + self._flush_interval
        self._next_point = now
        self._proc_cpu = time.process_time()
        self._proc_wall = now
        self._refresh_threads()
        for ident in list(sys._current_frames()):
            self._last_wall[ident] = now
            self._last_cpu[ident] = self._thread_cpu(ident) or 0.0
        self._point(now)
        self.running = True
        if self.child and self._record is None:
            from jobtrace.recorder import get_recorder

            # A multiprocessing pool's workers end by SIGTERM: hand the last records over
            # before the recorder's signal handler flushes.
            get_recorder().add_terminate_listener(self._on_terminate)
        if thread:
            sampler = threading.Thread(target=self._run, name="jobtrace-sampler", daemon=True)
            sampler.start()

    def _run(self) -> None:
        self._own = threading.get_ident()
        _block_signals()
        sleep, interval, lock = time.sleep, self.interval, self._lock
        while True:
            # A plain sleep: drift does no harm, since every sample is weighted by the
            # time that actually passed.
            sleep(interval)
            with lock:
                if not self.running or os.getpid() != self._pid:
                    return
                try:
                    self.tick()
                except Exception:
                    self._errors += 1
                    if self._errors == 1:
                        log.exception("jobtrace: the profile sampler failed; it carries on")
                    elif self._errors > 100:
                        log.warning("jobtrace: the profile sampler keeps failing; it stops")
                        self.running = False
                        return

    def finish(self, timeout: float = 2.0) -> None:
        """Take the last sample and hand every record over; the sampler thread then ends.

        Waits at most ``timeout`` seconds for a tick in progress; never raises.
        """
        if not self._lock.acquire(timeout=timeout):
            self.running = False
            return
        # A process often ends by SIGTERM while it is ending anyway (a pool's workers): the
        # records taken for handing over live in this frame's locals until handed over,
        # and the handler, which ends the process, would never see them. The signals wait.
        held = _hold_signals()
        try:
            if not self.running or os.getpid() != self._pid:
                return
            now = self._clock()
            # The calling thread is in jobtrace's own code now; its last few milliseconds
            # went to whatever it ran before, which this sample cannot see.
            self.tick(now, skip=threading.get_ident())
            self._point(now)
            self.emit(now)
            # Only now: a SIGTERM handler that interrupts this (the recorder's, which flushes
            # and then ends the process) finds the session running and hands the records
            # over itself, rather than return and let the process die with them.
            self.running = False
        except Exception:
            self.running = False
            log.exception("jobtrace: the profile's last records were lost")
        finally:
            if held is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
            self._lock.release()

    # -- sampling ------------------------------------------------------------------------

    def _refresh_threads(self) -> None:
        """Learn the kernel ids of the process's threads, and which are jobtrace's own."""
        natives: dict[int, int | None] = {}
        for thread in threading.enumerate():
            ident = thread.ident
            if ident is None:
                continue
            native = self._starter_native if thread is self._starter else thread.native_id
            natives[ident] = native
            if thread.name.startswith("jobtrace-"):
                self._skip.add(ident)
        for ident, native in natives.items():
            if self._natives.get(ident, native) != native:
                # A new thread that got an exited one's ident: start its CPU afresh.
                self._last_cpu.pop(ident, None)
            self._cpu_clocks[ident] = _thread_cpu_clock(native)
        self._natives = natives

    def _thread_cpu(self, ident: int) -> float | None:
        clock_id = self._cpu_clocks.get(ident)
        if clock_id is None:
            return None
        try:
            return time.clock_gettime(clock_id)
        except OSError:  # the thread ended since its stack was read
            return None

    def tick(self, now: float | None = None, *, skip: int | None = None) -> None:
        """Sample every thread once (the sampler thread calls this ``hz`` times a second)."""
        if now is None:
            now = self._clock()
        # The frames go at once, before anything here can release the GIL: a frame object
        # held while its function returns keeps the function's locals (a big buffer, say)
        # alive, which would delay their release and raise the job's peak memory.
        frames = sys._current_frames()
        stack, own, skipped = self._stack, self._own, self._skip
        stacks = [
            (ident, stack(frame))
            for ident, frame in frames.items()
            if ident not in (own, skip) and ident not in skipped
        ]
        seen = frames.keys() - {own}
        del frames
        if any(ident not in self._natives for ident in seen):
            self._refresh_threads()
        previous = self._prev
        last_wall, last_cpu = self._last_wall, self._last_cpu
        for ident, key in stacks:
            if ident in self._skip:  # learnt just now, by _refresh_threads
                continue
            # (Negative only when a signal handler's tick ran inside this one.)
            wall = max(0.0, now - last_wall.get(ident, previous))
            last_wall[ident] = now
            cpu_now = self._thread_cpu(ident)
            cpu = 0.0
            if cpu_now is not None:
                # A thread first seen here started since the previous tick: all its CPU
                # time so far is new.
                cpu = max(0.0, cpu_now - last_cpu.get(ident, 0.0))
                last_cpu[ident] = cpu_now
            self._table.add(key, int(wall * 1e6), int(cpu * 1e6))
        if len(last_wall) > len(seen):
            for ident in [i for i in last_wall if i not in seen]:
                del last_wall[ident]
                last_cpu.pop(ident, None)
        self._prev = now
        if now >= self._next_point:
            self._point(now)
        if now >= self._next_emit:
            self.emit(now)

    def _stack(self, frame: FrameType | None) -> tuple[CodeType, ...]:
        codes: list[CodeType] = []
        append = codes.append
        while frame is not None:
            append(frame.f_code)
            frame = frame.f_back
        if len(codes) > MAX_DEPTH:
            del codes[: len(codes) - MAX_DEPTH]
        codes.reverse()
        # `jobtrace run` (click, runpy, the CLI) sits at the root of the main thread:
        # trimmed, so the job's stacks start at the script, as under `python script.py`.
        start, last, launcher = 0, len(codes) - 1, self._namer.is_launcher
        while start < last and launcher(codes[start]):
            start += 1
        return tuple(codes[start:]) if start else tuple(codes)

    def _point(self, now: float) -> None:
        """A timeline point: RSS and the process's CPU use since the previous point."""
        cpu = time.process_time()
        elapsed = now - self._proc_wall
        percent = 100.0 * (cpu - self._proc_cpu) / elapsed if elapsed > 0 else 0.0
        self._proc_cpu, self._proc_wall = cpu, now
        self._points.append((round(self._wall_clock(), 3), _rss_kb(), round(percent, 1)))
        age = now - self._started
        step = TIMELINE_START if age < 10.0 else TIMELINE_EARLY if age < 60.0 else TIMELINE_LATE
        # On the schedule, not a step after each late tick (which would drift by a tick a
        # point); a sampler held up for long starts the schedule afresh rather than burst.
        due = self._next_point + step
        self._next_point = due if due > now else now + step

    # -- records -------------------------------------------------------------------------

    def emit(self, now: float) -> None:
        """Hand the recorder what was sampled since the previous call."""
        end = self._wall_clock()
        new, samples = self._table.take()
        points, self._points = self._points, []
        start, self._window_start = self._window_start, end
        # Every flush interval at first; a long job less often (a job's age / 60, capped),
        # so an hour stores a few hundred records rather than thousands.
        age = now - self._started
        self._next_emit = now + max(self._flush_interval, min(MAX_EMIT_INTERVAL, age / 60.0))
        record = self._record
        if record is None:
            from jobtrace.recorder import get_recorder

            record = get_recorder().record
        label = self.label
        if samples:
            record(folded.stacks_record(self.job_id, label, new, samples, start, end))
        if points:
            record(folded.timeline_record(self.job_id, label, points, end))

    def _on_terminate(self, signum: int, fatal: bool) -> None:
        if os.getpid() == self._pid:
            self.finish()


# -- the process's session ---------------------------------------------------------------------

_shared_namer: FrameNamer | None = None


def _namer() -> FrameNamer:
    """One namer per process: the names of a process's code objects outlive its jobs."""
    global _shared_namer
    if _shared_namer is None:
        _shared_namer = FrameNamer()
    return _shared_namer


_session: ProfileSession | None = None
_session_lock = threading.Lock()
_hooks_installed = False


def current_session() -> ProfileSession | None:
    """The session profiling this process now, or None."""
    session = _session
    return session if session is not None and session.running else None


def process_label() -> str:
    """The process frame at the root of this process's stacks (``"process 1234 (main)"``),
    for other profiles of the job (peak memory) to merge with its time profiles."""
    session = current_session()
    if session is not None and session._pid == os.getpid():
        return session.label
    return ProfileSession("", child=os.getpid() != _first_pid).label


_first_pid = os.getpid()


def start(job_id: str, hz: float = DEFAULT_HZ, *, child: bool = False) -> ProfileSession | None:
    """Start profiling this process for ``job_id``; None if another job is profiled here
    (or the sampler could not start — never raises)."""
    global _session
    try:
        with _session_lock:
            if current_session() is not None:
                return None
            from jobtrace import _config

            session = ProfileSession(
                job_id, hz, child=child, flush_interval=_config.current().flush_interval
            )
            session.begin()
            _session = session
        _install_hooks()
    except Exception:
        log.exception("jobtrace: cannot start the profile sampler; the job runs unprofiled")
        return None
    return session


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
    # Registered after the recorder's own exit hook, so it runs first (atexit is LIFO).
    atexit.register(_at_exit)
    from jobtrace.profiles import children

    children.install()


def _at_exit() -> None:
    session = current_session()
    if session is not None and os.getpid() == session._pid:
        session.finish()


class _ChildExit:
    """Registered with multiprocessing's after-fork hooks (a weak registry: kept alive
    here), so a child's exit finalizer is registered after its bootstrap clears them."""

    def arm(self) -> None:
        import multiprocessing.util as mp_util

        # Above the recorder's own finalizer (priority 0), so it runs before that flush.
        mp_util.Finalize(self, finish_child, exitpriority=10)


_CHILD_EXIT = _ChildExit()
_child_exit_registered = False


def register_child_exit() -> None:
    """Have multiprocessing children (already forked or to be) finish their session at exit."""
    global _child_exit_registered
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is None or _child_exit_registered:
        return
    _child_exit_registered = True
    mp_util.register_after_fork(_CHILD_EXIT, _ChildExit.arm)


def finish_child() -> None:
    """A child process ends: its last records, then a flush (``multiprocessing`` children
    leave through ``os._exit``, past ``atexit``)."""
    session = current_session()
    if session is None or os.getpid() != session._pid:
        return
    session.finish()
    try:
        from jobtrace.recorder import get_recorder

        get_recorder().flush()
    except Exception:
        log.exception("jobtrace: flushing a child process's profile failed")


def _before_fork() -> None:
    if current_session() is not None:
        register_child_exit()


def _after_fork_in_child() -> None:
    global _session, _session_lock
    _session_lock = threading.Lock()
    parent, _session = _session, None
    if parent is None or not parent.running:
        return
    # The child carries on for the same job, as a process of its own: fresh stacks (their
    # ids are per process), its one thread's baselines, a sampler thread of its own.
    try:
        session = ProfileSession(
            parent.job_id, parent.hz, child=True, flush_interval=parent._flush_interval
        )
        session.begin()
        _session = session
    except Exception:
        log.exception("jobtrace: cannot profile a forked child")
