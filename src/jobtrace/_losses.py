"""What the recorder had to drop, by record kind and by job, and how a job learns of it.

Records are dropped only when the spool is full (its cap) or the disk refuses, or when the
destination refuses one record for good (the store's database or a server says it can never
be stored; the sink drops it alone, see :func:`jobtrace.sinks.count_refused`). Each drop is
counted per kind for the process and per kind for the record's job; a job's snapshots carry
its counts (``records_dropped``), and a job that has already ended when its records are
dropped gets its last snapshot sent again with the counts (see :meth:`Losses.updates`).
Spool drops are logged once per episode: one error when drops start, one warning when the
spool takes records again (sinks log the records they refuse themselves).

A recorder's writer thread writes to its sink inside :func:`attributing`, so a record its
sink refuses is counted by that recorder's :class:`Losses` (:func:`refused`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from jobtrace.model import FIELDS, JOB, Record

log = logging.getLogger("jobtrace.recorder")

#: Jobs whose latest snapshot is kept, to report drops that come after a job ended.
SNAPSHOTS_KEPT: Final = 4096
#: Tuple position of ``job_id`` in each record kind that has one (kind at 0).
_JOB_POSITION: Final = {
    kind: fields.index("job_id") + 1 for kind, fields in FIELDS.items() if "job_id" in fields
}
_SEQ: Final = FIELDS[JOB].index("seq") + 1
_STATUS: Final = FIELDS[JOB].index("status") + 1
_DROPPED: Final = FIELDS[JOB].index("records_dropped") + 1


class Losses:
    """Drop counts of one process (reset after ``fork``: a child counts its own)."""

    def __init__(self) -> None:
        # Reentrant: a signal handler may count drops while this thread is counting.
        self._lock = threading.RLock()
        #: Every record dropped, all kinds together.
        self.total = 0
        #: Records dropped, by kind.
        self.by_kind: dict[str, int] = {}
        self._by_job: dict[str, dict[str, int]] = {}
        self._dirty: set[str] = set()
        self._snapshots: dict[str, Record] = {}
        self._episode = False

    def note_snapshot(self, record: Record) -> None:
        """Remember a job's latest snapshot (called for every job record)."""
        snapshots = self._snapshots
        snapshots.pop(record[1], None)
        snapshots[record[1]] = record
        if len(snapshots) > SNAPSHOTS_KEPT:
            # The oldest job first (dicts keep insertion order); a race with another thread
            # at worst forgets one more.
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                del snapshots[next(iter(snapshots))]

    def count(self, records: Sequence[Record], spool: Path, reason: str) -> None:
        """Count ``records`` as dropped by the spool (job snapshots excepted: they are
        never dropped)."""
        self._add(records)
        with self._lock:
            first, self._episode = not self._episode, True
        if first:
            log.error(
                "jobtrace: the spool %s cannot take more records (%s): dropping records "
                "until it has room; they are counted on their jobs (records_dropped). Raise "
                "JOBTRACE_SPOOL_MAX_BYTES or free disk space to keep them",
                spool,
                reason,
            )

    def _add(self, records: Sequence[Record]) -> None:
        with self._lock:
            for record in records:
                kind = record[0]
                if kind == JOB:
                    continue
                self.total += 1
                self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
                position = _JOB_POSITION.get(kind)
                job_id = record[position] if position is not None else None
                if isinstance(job_id, str):
                    counts = self._by_job.setdefault(job_id, {})
                    counts[kind] = counts.get(kind, 0) + 1
                    self._dirty.add(job_id)

    def spooled(self, spool: Path) -> None:
        """The spool took records: an episode of drops, if any, is over."""
        if not self._episode:
            return
        with self._lock:
            self._episode = False
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.by_kind.items()))
        log.warning(
            "jobtrace: the spool %s has room again; records dropped so far: %s", spool, counts
        )

    def for_job(self, job_id: str) -> dict[str, int] | None:
        """Records of ``job_id`` dropped, by kind (``None``: none)."""
        with self._lock:
            counts = self._by_job.get(job_id)
            return dict(counts) if counts else None

    def updates(self) -> list[Record]:
        """New snapshots for ended jobs that lost records since their last one: the last
        snapshot with the counts and a ``seq`` one higher (a running job's next heartbeat
        carries its counts by itself)."""
        if not self._dirty:
            return []
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            counts = {job_id: dict(self._by_job[job_id]) for job_id in dirty}
        out = []
        for job_id, dropped in counts.items():
            last = self._snapshots.get(job_id)
            if last is None or last[_STATUS] == "running" or last[_DROPPED] == dropped:
                continue
            snapshot = list(last)
            snapshot[_SEQ] = last[_SEQ] + 1
            snapshot[_DROPPED] = dropped
            out.append(tuple(snapshot))
        return out


_attributed = threading.local()


@contextlib.contextmanager
def attributing(losses: Losses) -> Iterator[None]:
    """Count the records a sink refuses in this thread, meanwhile, in ``losses``."""
    previous = getattr(_attributed, "losses", None)
    _attributed.losses = losses
    try:
        yield
    finally:
        _attributed.losses = previous


def refused(record: Record) -> None:
    """A sink dropped ``record`` because its destination refused it for good: count it on
    its job, in the :class:`Losses` of the recorder writing in this thread (if any)."""
    losses: Losses | None = getattr(_attributed, "losses", None)
    if losses is not None:
        losses._add((record,))
