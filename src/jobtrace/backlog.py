"""The recorder's backlog: records taken off its in-memory buffer and not delivered yet.

A record leaves the buffer in one of two ways: the writer takes a batch to deliver, or a
full buffer spills its oldest records to the spool. Either way the records are numbered as
they leave (``first``: how many left before them), and the backlog keeps this process's
spooled files sorted by that number, so the writer can always deliver the oldest thing
first — files of earlier processes (numbered -1), then this process's files, then the
buffer — and a later value is never overwritten by an older one delivered after it.

One lock orders everything that takes records off the buffer or changes the file list. It
is held for a local disk write at most (a spill), never across network I/O.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from jobtrace._ids import time_ordered_id
from jobtrace._losses import Losses
from jobtrace.model import JOB, Record
from jobtrace.spool import Spool, SpoolFullError, new_key

__all__ = ["Backlog", "Batch", "SpooledFile"]

log = logging.getLogger("jobtrace.recorder")


class Batch:
    """Records taken off the buffer, named (key, id) when taken so that they keep their
    place in the order of delivery wherever they go (sink, spool, spool at exit)."""

    __slots__ = ("batch_id", "first", "key", "records", "spool", "spooled")

    def __init__(self, records: list[Record], first: int, spool: Spool) -> None:
        self.key = new_key()
        self.batch_id = time_ordered_id()
        self.records = records
        #: How many records had left the buffer before these (orders batches and files).
        self.first = first
        self.spool = spool
        self.spooled = False


class SpooledFile:
    """A spooled file this process owns and will deliver, in its place in the order."""

    __slots__ = ("first", "path", "spool")

    def __init__(self, path: Path, first: int, spool: Spool) -> None:
        self.path = path
        self.first = first  # -1: spooled by an earlier process, older than anything here
        self.spool = spool

    def __lt__(self, other: SpooledFile) -> bool:
        return (self.first, self.path.name) < (other.first, other.path.name)


class Backlog:
    """The ordered backlog of one recorder in one process (made again after ``fork``).

    ``after_release`` runs whenever the lock is released (the recorder handles a signal it
    had to defer while this thread held the lock).
    """

    def __init__(
        self, buf: deque[Record], spool: Spool, losses: Losses, after_release: Callable[[], None]
    ) -> None:
        self.buf = buf
        #: Where new files go (the current sink URL's spool).
        self.spool = spool
        self.losses = losses
        self._after_release = after_release
        self._lock = threading.Lock()
        #: The thread holding the lock, if any.
        self.owner: int | None = None
        #: Records taken off the buffer so far (delivered, spooled or dropped).
        self.taken = 0
        #: This process's spooled files, oldest first.
        self.files: list[SpooledFile] = []
        #: The batch a sink write is working on (a copy is spooled if a flush gives up).
        self.inflight: Batch | None = None
        self.spilling = False
        #: Records written to the spool, and of those, spilled from a full buffer.
        self.spooled = 0
        self.spilled = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock (never across network I/O)."""
        self._lock.acquire()
        self.owner = threading.get_ident()
        try:
            yield
        finally:
            self.owner = None
            self._lock.release()
            self._after_release()

    def target(self) -> int:
        """The number every record in the buffer now will have left it by."""
        with self.held():
            return self.taken + len(self.buf)

    def pop(self, n: int) -> Batch:
        """Take the ``n`` oldest records off the buffer (the lock is held)."""
        popleft = self.buf.popleft
        records = [popleft() for _ in range(n)]
        batch = Batch(records, self.taken, self.spool)
        self.taken += n
        return batch

    def spill(self, n: int, capacity: int) -> None:
        """Move the ``n`` oldest records (at most) to the spool, unsynced: the caller's
        thread pays for one write per ``n`` records (the lock is held)."""
        n = min(n, len(self.buf))
        if n <= 0:
            return
        batch = self.pop(n)
        if not self.spilling:
            self.spilling = True
            log.info(
                "jobtrace: the writer is behind; spilling records past the buffer (%d) to %s",
                capacity,
                self.spool.directory,
            )
        self.spool_batch(batch, sync=False, locked=True)
        self.spilled += n

    def spill_until(self, target: int, chunk: int) -> None:
        """Spool every record taken before ``target`` that is neither delivered nor on
        disk: what is left in the buffer, and the batch a sink write is stuck on."""
        with self.held():
            inflight = self.inflight
            if inflight is not None and not inflight.spooled and inflight.first < target:
                self.spool_batch(inflight, sync=True, locked=True)
            while self.taken < target and self.buf:
                n = min(chunk, target - self.taken, len(self.buf))
                self.spool_batch(self.pop(n), sync=True, locked=True)

    def next(self, target: int, *, files: bool, batch_size: int) -> SpooledFile | Batch | None:
        """The oldest thing to deliver before ``target``: a file (if ``files``; else the
        sink is down and only the buffer is taken, to be spooled) or a batch off the buffer
        (noted as in flight). ``None``: nothing before ``target`` is left."""
        with self.held():
            head = self.files[0] if self.files else None
            if head is not None and head.first < target and files:
                return head
            if self.taken < target and self.buf:
                batch = self.pop(min(len(self.buf), target - self.taken, batch_size))
                self.inflight = batch
                return batch
            return None

    def delivered(self, entry: SpooledFile) -> None:
        """``entry`` was delivered (or quarantined): forget it."""
        with self.held():
            with contextlib.suppress(ValueError):
                self.files.remove(entry)
            if not self.files:
                self.spilling = False

    def spool_batch(self, batch: Batch, *, sync: bool, locked: bool) -> None:
        """Write a batch to its spool (as this process's file); count drops if it cannot.
        ``locked``: the caller holds the lock."""
        if batch.spooled:
            return
        # A batch of the spool in use becomes one of this process's files; one left over
        # from before a reconfigure goes to the old URL's spool for any process to replay.
        own = batch.spool is self.spool
        path: Path | None
        try:
            path = batch.spool.write(
                batch.records, batch.batch_id, key=batch.key, own=own, sync=sync
            )
        except Exception as exc:  # a full disk, the cap, or a bug: counted, never raised
            path = self._drop(batch, exc)
        else:
            batch.spooled = True
            self.spooled += len(batch.records)
            self.losses.spooled(batch.spool.directory)
        if own and path is not None:
            entry = SpooledFile(path, batch.first, batch.spool)
            if locked:
                bisect.insort(self.files, entry)
            else:
                with self.held():
                    bisect.insort(self.files, entry)

    def _drop(self, batch: Batch, exc: Exception) -> Path | None:
        """Count a batch the spool refused; spool its job snapshots anyway, past the cap (a
        job's final state matters more than the cap). Returns their file, if any."""
        reason = "its cap is reached" if isinstance(exc, SpoolFullError) else str(exc)
        self.losses.count(batch.records, batch.spool.directory, reason)
        snapshots = [r for r in batch.records if r[0] == JOB]
        if not snapshots:
            return None
        try:
            return batch.spool.write(
                snapshots, None, key=batch.key, own=batch.spool is self.spool, force=True
            )
        except Exception as exc2:
            # One line (a full disk fails every write after it); the traceback at debug.
            log.error(
                "jobtrace: lost %d job snapshot(s): the disk refuses (%s)", len(snapshots), exc2
            )
            log.debug("jobtrace: spooling job snapshots failed", exc_info=True)
            return None

    def adopt(self) -> None:
        """Make the files no live process owns (earlier runs') this process's, first in line."""
        spool = self.spool
        adopted = []
        for path in spool.pending():
            claimed = spool.claim(path)
            if claimed is not None:
                adopted.append(SpooledFile(claimed, -1, spool))
        if adopted:
            with self.held():
                self.files.extend(adopted)
                self.files.sort()

    def release(self) -> None:
        """Give this process's files to any process (at exit, on reconfigure)."""
        with self.held():
            files, self.files = self.files, []
        for entry in files:
            with contextlib.suppress(OSError):
                entry.spool.release(entry.path)
