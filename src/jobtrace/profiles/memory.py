"""Peak-memory profiles: the memory live at a process's peak, by the stack that allocated it.

These are Fil's and Sciagraph's semantics: not "who allocated the most over the job's life"
but "what was in memory when it was fullest", the question to answer when a job runs out of
memory. Three modes (``jobtrace run --memory MODE``, ``jobtrace.job(memory=MODE)``,
``JOBTRACE_MEMORY``):

``approximate`` (default)
    :mod:`jobtrace._memtrack` samples allocations by bytes (every ~256 KiB on average, so
    every large buffer is seen) in CPython's raw allocator and numpy's array-data handler,
    and keeps each stack's live bytes and a snapshot of them at the peak. Small objects (up
    to 512 bytes) are counted by the 1 MiB arenas pymalloc takes for them: a new arena
    goes, whole, to the stack that needed it. Totals are right; the split is approximate
    when one function's objects fill the room another function's freed objects left.
    Hooking every small object instead measured 5-9 % on call- and allocation-heavy code;
    this way costs nothing measurable, cheap enough to leave on. Without the compiled
    extension (no compiler at install time, or ``JOBTRACE_NO_EXTENSIONS=1``) the profile
    holds the peak only, as one ``[not attributed]`` frame: the alternative, tracemalloc,
    slows a program about 13 times.
``exact``
    memray (``pip install jobtrace[memray]``) records every allocation; its high-water mark
    records are read back into jobtrace's format when the job ends. About as slow as memray.
``off``
    No memory profile; the job's peak RSS is still recorded.

Either way the profile's total equals the process's peak: what the tracker attributed,
plus an ``[untracked: …]`` frame for the rest of the peak resident memory (the interpreter,
native libraries, fragmentation). Memory that was allocated but never touched is not
resident; when the tracked peak exceeds the peak RSS, the peak is the tracked one, as in
Fil. The job's ``peak_memory_kb`` is taken from the same figure, so the report and the
profile agree.

Each profile is one :func:`jobtrace.profiles.folded.memory_record` per process, emitted when
the job ends and, while it runs, at heartbeats when the peak has grown by a tenth (so a
killed job keeps a recent profile). ``multiprocessing`` children started by fork record
their own peak profile when they exit, labelled by process.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Protocol

from jobtrace import _config, _resources, model
from jobtrace.profiles import folded, frames, sampler

__all__ = [
    "DEFAULT_MODE",
    "MODES",
    "MemorySession",
    "begin",
    "fold",
]

log = logging.getLogger("jobtrace.profiles.memory")

MODES: Final = _config.MEMORY_MODES
DEFAULT_MODE: Final = "approximate"
#: Mean bytes between two sampled allocations in approximate mode.
SAMPLE_BYTES: Final = 256 * 1024
UNTRACKED: Final = "[untracked: interpreter, native libraries, fragmentation]"
NOT_ATTRIBUTED: Final = "[not attributed: allocation tracking unavailable]"
NO_FRAME: Final = "[no Python frame]"
SMALLER: Final = "[smaller stacks]"
#: Most stacks one memory record keeps (see :func:`_compact`).
MAX_STACKS: Final = 2000
#: Peak growth (fraction) that makes a heartbeat emit a fresh memory record.
_REEMIT_GROWTH = 0.1

# Frames of the machinery that runs the user's code (`jobtrace run`, runpy, click, and
# jobtrace's own) are cut from the root of every stack: the same in every stack, they say
# nothing.
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent) + os.sep
# Frames dropped anywhere in a stack, as Python's tracebacks drop them: the import system's
# (an import shows as the importing line calling the imported module) and this module's.
_HIDDEN = ("<frozen importlib._bootstrap", __file__)


def _is_runner(filename: str) -> bool:
    return filename.startswith(_PACKAGE_DIR) or frames.is_launcher_file(filename)


def fold(stack: Sequence[tuple[str, str, int]], names: dict[str, str] | None = None) -> str:
    """``(file, function, line)`` frames, root first, as folded text without the runners'
    leading frames; files are named as the time profiles name them
    (:func:`jobtrace.profiles.frames.short_filename`), ``names`` caching them."""
    start = 0
    while start < len(stack) and _is_runner(stack[start][0]):
        start += 1
    if start == len(stack):
        return NO_FRAME
    names = {} if names is None else names
    parts = []
    for filename, function, line in stack[start:]:
        if filename.startswith(_HIDDEN):
            continue
        short = names.get(filename)
        if short is None:
            short = names[filename] = frames.short_filename(filename)
        parts.append(folded.format_frame(function, short, line))
    return ";".join(parts) or NO_FRAME


# -- trackers -----------------------------------------------------------------------------------


if TYPE_CHECKING:  # a Protocol class costs a little to build; only the checker needs it

    class _Tracker(Protocol):
        mode: str

        def peak(self) -> tuple[int, dict[str, int]]: ...  # (peak bytes, stack -> bytes)
        def reset_peak(self) -> None: ...
        def close(self) -> tuple[int, dict[str, int]]: ...  # the final peak; stops tracking


class _SampledTracker:
    """The approximate mode, on :mod:`jobtrace._memtrack`."""

    mode = "approximate"

    def __init__(self, ext: ModuleType) -> None:
        self._ext = ext
        # Without pymalloc, small objects never reach the arenas: hook the domains instead.
        domains = os.environ.get("PYTHONMALLOC", "").strip() in {"malloc", "malloc_debug"}
        ext.start(float(SAMPLE_BYTES), domains)
        _NumpyWatcher.arm(ext)

    def peak(self) -> tuple[int, dict[str, int]]:
        total, stacks = self._ext.peak()
        out: dict[str, int] = {}
        names: dict[str, str] = {}
        for stack, size in stacks:
            text = fold(stack, names)
            out[text] = out.get(text, 0) + int(size)
        return int(total), out

    def reset_peak(self) -> None:
        self._ext.reset_peak()

    def close(self) -> tuple[int, dict[str, int]]:
        try:
            return self.peak()
        finally:
            self._ext.stop()


class _PeakOnlyTracker:
    """The approximate mode without the extension: the peak RSS alone, unattributed."""

    mode = "approximate"

    def peak(self) -> tuple[int, dict[str, int]]:
        return 0, {}

    def reset_peak(self) -> None:
        return None

    def close(self) -> tuple[int, dict[str, int]]:
        return 0, {}


class _MemrayTracker:
    """The exact mode: a memray capture of the job, read back at its end."""

    mode = "exact"

    def __init__(self) -> None:
        import tempfile

        import memray

        self._memray = memray
        self._dir = tempfile.mkdtemp(prefix="jobtrace-memray-")
        self._path = Path(self._dir) / "capture.bin"
        # Aggregated captures keep only what the peak and leak reports need: far smaller
        # files and less work per allocation than the full event stream.
        self._tracker = memray.Tracker(
            self._path, file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS
        )
        _in_thread(self._tracker.__enter__)

    def peak(self) -> tuple[int, dict[str, int]]:
        return 0, {}  # memray's figures are readable only once its capture is closed

    def reset_peak(self) -> None:
        return None

    def close(self) -> tuple[int, dict[str, int]]:
        import shutil

        try:
            _in_thread(lambda: self._tracker.__exit__(None, None, None))
            reader = self._memray.FileReader(self._path)
            try:
                out: dict[str, int] = {}
                names: dict[str, str] = {}
                for rec in reader.get_high_watermark_allocation_records(merge_threads=True):
                    # memray lists frames innermost first, as (function, file, line).
                    stack = [(f, fn, ln) for fn, f, ln in reversed(rec.stack_trace())]
                    text = fold(stack, names)
                    out[text] = out.get(text, 0) + int(rec.size)
                peak = int(reader.metadata.peak_memory)
            finally:
                reader.close()
            return peak, out
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


def _in_thread(action: Callable[[], object]) -> None:
    """Run ``action`` in a short-lived thread and re-raise what it raised.

    memray is started and stopped from another thread on purpose: started in this one, it
    tracks the stack from the starting frame down, and once the job's ``start()`` returns,
    above that frame, it attributes every allocation to no frame at all; started elsewhere
    it captures this thread's whole stack and follows it correctly.
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="jobtrace-memray", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


class _NumpyWatcher:
    """Hooks numpy's array-data handler as soon as numpy is imported (at once if it is)."""

    _ext: ModuleType | None = None
    _finder: Any = None

    @classmethod
    def arm(cls, ext: ModuleType) -> None:
        cls._ext = ext
        if "numpy" in sys.modules:
            cls.hook()
        elif cls._finder is None:
            cls._finder = _NumpyFinder()
            sys.meta_path.insert(0, cls._finder)

    @classmethod
    def hook(cls) -> None:
        ext = cls._ext
        if ext is None:
            return
        for name in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
            module = sys.modules.get(name)
            api = getattr(module, "_ARRAY_API", None)
            if api is not None:
                try:
                    ext.hook_numpy(api)
                except Exception:
                    log.debug("jobtrace: cannot hook numpy's allocator", exc_info=True)
                return


class _NumpyFinder:
    """A one-shot meta path finder for ``numpy``: it finds numpy as the standard path
    finder would and wraps its loader to hook numpy's allocator right after ``import
    numpy`` has run, then leaves ``sys.meta_path``. (Other names, and a numpy the path
    finder cannot find, are left to the other finders.)"""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "numpy":
            return None
        import importlib.machinery

        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        _NumpyWatcher._finder = None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        exec_module = getattr(loader, "exec_module", None)
        if spec is None or exec_module is None:
            return spec

        def exec_and_hook(module: ModuleType) -> None:
            exec_module(module)
            _NumpyWatcher.hook()

        try:
            loader.exec_module = exec_and_hook  # type: ignore[union-attr]
        except Exception:
            return spec
        return spec


# -- sessions: one per job --------------------------------------------------------------------

_lock = threading.RLock()
_tracker: _Tracker | None = None
# Replaced, never edited (see jobs._active).
_sessions: tuple[MemorySession, ...] = ()


class MemorySession:
    """One job's view of its process's memory tracker (jobs may overlap in a process)."""

    def __init__(self, job_id: str, mode: str, attributing: bool = True) -> None:
        self.job_id = job_id
        self.mode = mode
        self._attributing = attributing
        # The best (largest) peak seen before a later job's start reset the tracker's.
        self._best: tuple[int, dict[str, int]] = (0, {})
        self._emitted_kb = 0

    def _keep(self, peak: tuple[int, dict[str, int]]) -> None:
        if peak[0] > self._best[0]:
            self._best = peak

    def profile(self, rss_peak_kb: int) -> tuple[int, dict[str, int]]:
        """(peak KiB, folded stack -> bytes) with the untracked remainder as a frame."""
        with _lock:  # heartbeats come from the recorder's thread
            tracker = _tracker
            if tracker is not None:
                self._keep(tracker.peak())
            return _complete(self._best, rss_peak_kb, self._attributing)

    def record(self, rss_peak_kb: int, when: float) -> tuple[int, model.Record]:
        peak_kb, stacks = self.profile(rss_peak_kb)
        self._emitted_kb = peak_kb
        # The label is read now, not at the start: a spawned child starts its session
        # before multiprocessing has given the process its name.
        process = sampler.process_label()
        rec = folded.memory_record(self.job_id, process, self.mode, peak_kb, stacks, when)
        return peak_kb, rec

    def heartbeat(self, rss_peak_kb: int, when: float) -> tuple[int, model.Record] | None:
        """A fresh record if the peak grew by a tenth since the last one, else None."""
        if self.mode == "exact" or rss_peak_kb <= self._emitted_kb * (1 + _REEMIT_GROWTH):
            return None
        return self.record(rss_peak_kb, when)

    def finish(self, rss_peak_kb: int, when: float) -> tuple[int, model.Record]:
        """End the session: the final peak (KiB) and its record."""
        global _tracker, _sessions
        with _lock:
            _sessions = tuple(s for s in _sessions if s is not self)
            tracker = _tracker
            if tracker is not None and not _sessions:
                _tracker = None
                try:
                    self._keep(tracker.close())
                except Exception:
                    log.warning("jobtrace: reading the memory profile failed", exc_info=True)
            return self.record(rss_peak_kb, when)


def _complete(
    peak: tuple[int, dict[str, int]], rss_peak_kb: int, attributing: bool
) -> tuple[int, dict[str, int]]:
    """The peak in KiB and its stacks, completed by a frame for what was not attributed,
    so that the stacks add up to the peak (within the rounding to KiB)."""
    total, stacks = peak
    attributed = sum(stacks.values())
    peak_kb = -(-max(rss_peak_kb * 1024, total, attributed) // 1024)
    out = _compact(stacks, peak_kb * 1024)
    rest = peak_kb * 1024 - attributed
    if rest > 0:
        label = UNTRACKED if attributing else NOT_ATTRIBUTED
        out[label] = out.get(label, 0) + rest
    return peak_kb, out


def _compact(stacks: dict[str, int], peak: int) -> dict[str, int]:
    """The stacks that matter, the rest as one ``[smaller stacks]`` frame.

    A big program's import-time allocations alone give hundreds of deep stacks; keeping
    only the :data:`MAX_STACKS` largest and those above 1/10,000 of the peak bounds the
    record (and the flamegraph) without hiding anything a reader could see.
    """
    floor = peak // 10_000
    ranked = sorted(stacks.items(), key=lambda kv: -kv[1])
    out = {text: size for text, size in ranked[:MAX_STACKS] if size >= floor}
    rest = sum(stacks.values()) - sum(out.values())
    if rest > 0:
        out[SMALLER] = out.get(SMALLER, 0) + rest
    return out


def _load_tracker(mode: str) -> _Tracker:
    if mode == "exact":
        try:
            return _MemrayTracker()
        except ImportError:
            log.warning(
                "jobtrace: --memory exact needs memray (pip install 'jobtrace[memray]'); "
                "using the approximate mode"
            )
        except Exception as exc:  # e.g. another memray tracker is active
            log.warning("jobtrace: memray cannot track this job (%s); using approximate", exc)
    ext = _config.load_extension("_memtrack")
    if ext is None:
        return _PeakOnlyTracker()
    return _SampledTracker(ext)


def begin(job_id: str, mode: str) -> MemorySession | None:
    """Start profiling the memory of job ``job_id`` (None for ``off``). Never raises: a
    tracker that cannot start leaves the job with its peak RSS only."""
    global _tracker, _sessions
    if mode == "off":
        return None
    try:
        with _lock:
            tracker = _tracker
            if tracker is None:
                tracker = _tracker = _load_tracker(mode)
            else:
                # A new job's peak starts now; the running jobs keep the peak they had.
                for session in _sessions:
                    session._keep(tracker.peak())
                tracker.reset_peak()
            session = MemorySession(job_id, tracker.mode, not isinstance(tracker, _PeakOnlyTracker))
            _sessions = (*_sessions, session)
            return session
    except Exception:
        log.warning("jobtrace: memory profiling could not start", exc_info=True)
        return None


# -- multiprocessing children -------------------------------------------------------------------


class _ChildHook:
    """Gives fork-started ``multiprocessing`` children their own peak-memory record."""

    def after_fork(self) -> None:
        global _sessions, _tracker
        parents = _sessions
        tracker = _tracker
        if not parents or tracker is None:
            return

        # The child's peak starts at the fork; its records go to the parent's job.
        parent = parents[-1]
        attributing = parent._attributing
        if isinstance(tracker, _MemrayTracker):
            # memray does not follow the fork, and its capture file is the parent's: leave
            # it alone; the child records its peak, unattributed.
            _tracker = None
            attributing = False
        else:
            tracker.reset_peak()
        _resources.reset_peak()
        child = MemorySession(parent.job_id, parent.mode, attributing)
        _sessions = (child,)
        _finish_at_child_exit(child)


_child_hook = _ChildHook()


def current_mode() -> str | None:
    """The memory mode of the process's newest job, None when no job tracks memory."""
    sessions = _sessions
    return sessions[-1].mode if sessions else None


def start_spawned(job_id: str, mode: str) -> None:
    """In a ``multiprocessing`` child started by spawn or forkserver (a fresh interpreter):
    track its memory for the parent's job, recorded when the child's bootstrap ends."""
    session = begin(job_id, mode)
    if session is not None:
        import multiprocessing.util as mp_util

        # A spawned child's bootstrap keeps the exit hooks it finds; a forkserver child's
        # clears them and then runs the after-fork hooks, which arm it again.
        _finish_at_child_exit(session)
        mp_util.register_after_fork(session, _finish_at_child_exit)


def _finish_at_child_exit(session: MemorySession) -> None:
    import multiprocessing.util as mp_util

    # Runs before the recorder's exit flush (exitpriority 0) in the child's bootstrap.
    mp_util.Finalize(session, _finish_child, args=(session,), exitpriority=10)


def _finish_child(session: MemorySession) -> None:
    if session not in _sessions:  # finished already
        return
    try:
        from jobtrace.recorder import get_recorder

        _, rec = session.finish(_resources.self_peak_kb(), _now())
        get_recorder().record(rec)
    except Exception:
        log.debug("jobtrace: the child's memory profile was not recorded", exc_info=True)


def _now() -> float:
    import time

    return time.time()


_child_hook_registered = False


def _before_fork() -> None:
    global _child_hook_registered
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None and _sessions and not _child_hook_registered:
        # Registered lazily, once: multiprocessing runs its after-fork hooks in the child
        # after clearing inherited finalizers, the one place a child's exit hook survives.
        _child_hook_registered = True
        mp_util.register_after_fork(_child_hook, _ChildHook.after_fork)


os.register_at_fork(before=_before_fork)
