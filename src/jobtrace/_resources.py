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
import resource
import sys
from typing import NamedTuple

log = logging.getLogger("jobtrace.resources")

_KIB = 1 if sys.platform.startswith("linux") else 1024  # ru_maxrss unit divisor to KiB
_CLEAR_REFS = "/proc/self/clear_refs"


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


def tree_rss_kb() -> int | None:
    """Current RSS of this process plus all its live descendants, or None if unknown."""
    try:
        import psutil

        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue
        return int(total // 1024)
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
