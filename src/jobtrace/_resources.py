"""Peak memory and CPU time of this process and its children.

``ru_maxrss`` is the kernel's high-water mark of resident memory (KiB on Linux, bytes on
macOS); it costs well under a microsecond and never falls. On Linux, writing ``5`` to
``/proc/self/clear_refs`` resets it (and ``VmHWM``) to the current RSS, which lets a
long-lived worker measure each job's own peak. ``RUSAGE_CHILDREN`` reports the largest
waited-for child, not a sum, so live children are also sampled with psutil at heartbeats
to catch a process tree that is large all at once.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from typing import NamedTuple

log = logging.getLogger("jobtrace.resources")

_KIB = 1 if sys.platform.startswith("linux") else 1024  # ru_maxrss unit divisor to KiB
_CLEAR_REFS = "/proc/self/clear_refs"
_PROC = os.path.exists(f"/proc/{os.getpid()}/task")  # noqa: PTH110
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4


def self_peak_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // _KIB)


def children_peak_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // _KIB)


def reset_peak() -> bool:
    """Reset this process's high-water mark to its current RSS (Linux only)."""
    try:
        with open(_CLEAR_REFS, "w") as handle:  # noqa: PTH123 - a procfs control file
            handle.write("5")
    except OSError:
        return False
    return True


def _children_of(pid: int) -> list[int] | None:
    """Direct children of ``pid`` from procfs (all its threads'), or None if unsupported."""
    try:
        kids: list[int] = []
        for task in os.listdir(f"/proc/{pid}/task"):  # noqa: PTH208 - hot, str paths suffice
            with open(f"/proc/{pid}/task/{task}/children") as handle:  # noqa: PTH123
                kids.extend(int(p) for p in handle.read().split())
        return kids
    except FileNotFoundError:
        return [] if not os.path.exists(f"/proc/{pid}") else None  # noqa: PTH110
    except OSError:
        return None


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as handle:  # noqa: PTH123
        return int(handle.read().split()[1]) * _PAGE_KB


def tree_rss_kb() -> int | None:
    """Current RSS of this process plus all its live descendants, or None if unknown.

    Linux reads procfs directly (a few file reads, no import); elsewhere psutil walks the
    process table. With no children it is just this process's RSS.
    """
    me = os.getpid()
    kids = _children_of(me) if _PROC else None
    if kids is not None:
        total, pending = _rss_kb(me), kids
        while pending:
            pid = pending.pop()
            try:
                total += _rss_kb(pid)
            except OSError:  # it exited meanwhile
                continue
            pending.extend(_children_of(pid) or ())
        return total
    try:
        import psutil

        proc = psutil.Process()
        rss = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                rss += child.memory_info().rss
            except psutil.Error:
                continue
        return int(rss // 1024)
    except Exception:
        log.debug("jobtrace: cannot sample the process tree", exc_info=True)
        return None


class CpuTimes(NamedTuple):
    user: float
    sys: float

    @classmethod
    def now(cls) -> CpuTimes:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(me.ru_utime + kids.ru_utime, me.ru_stime + kids.ru_stime)

    def since(self, start: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - start.user, self.sys - start.sys)
