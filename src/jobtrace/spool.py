"""The spool: records a sink could not take yet, kept on local disk until it can.

Records land here when the sink is down and when producers outrun the writer (a full
in-memory buffer spills its oldest records here instead of dropping them). Each sink URL
has its own directory under ``$JOBTRACE_DIR/spool/`` (named by a hash of the URL, with the
URL, password masked, in ``url.txt``). One file holds one batch:

- ``<key>~<batch id>.spool``: a header and one marshalled list of record tuples, with its
  record count and CRC. Cheap to write (~0.2 µs a record, no per-record encoding step) and
  exact for every value a record holds (NaN, 128-bit span ids).
- ``<key>~<batch id>.jsonl``: JSON lines (:func:`jobtrace.model.to_dict`), for a batch
  marshal cannot hold (a foreign object in a span's info), and as older versions wrote.

``<key>`` is ``<time ns>-<pid>-<counter>``, taken when the records left memory, so file
names sort in the order records were recorded and replay keeps it. A file is written under
a temporary name and renamed into place, so nobody sees half a file; a failed write
removes its temporary file, and temporary files of dead processes are removed on the next
scan.

Ownership: a live process's own files carry ``.claimed-<pid>`` from birth, so no other
process replays them while their owner may still deliver newer records with the same key
(a later metric value must never be overwritten by an older one replayed afterwards). A
recorder releases its files (drops the suffix) when it closes; files claimed by a process
that died are taken over. Replays are idempotent anyway: every store write is an upsert on
the record's identity, and the batch id rides in the file name, so a sink that deduplicates
by id (``http://``) stores a batch once however often it is replayed.

Past a size cap (``JOBTRACE_SPOOL_MAX_BYTES``) writes raise :class:`SpoolFullError`, and
the recorder counts the records it drops. A file that cannot be read, or that the sink
refuses for good (:class:`jobtrace.errors.BatchRefusedError`), is moved to ``quarantine/``
and never retried.

For tools (``jobtrace spool status|replay``): :func:`spools` finds every spool under a
directory, :meth:`Spool.files` lists a spool's files with their state, size and record
count, and :meth:`Spool.replay` delivers the pending ones through any ``write`` callable.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import marshal
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from jobtrace._config import DEFAULT_SPOOL_MAX_BYTES, mask_url
from jobtrace.errors import BatchRefusedError
from jobtrace.model import Record, RecordError, complete, from_dict
from jobtrace.sinks.file import encode_lines, json_loads

__all__ = ["Spool", "SpoolDamagedError", "SpoolFile", "SpoolFullError", "new_key", "spools"]

log = logging.getLogger("jobtrace.spool")

_SUFFIX = ".spool"
_JSONL = ".jsonl"
_SUFFIXES = (_SUFFIX, _JSONL)
_CLAIM = ".claimed-"
_TMP = ".tmp"
QUARANTINE = "quarantine"
#: Separates the time-ordered part of a file name from the batch id.
_ID_SEP = "~"
#: ``.spool`` files: magic, then record count, payload length and CRC-32 of the payload.
_MAGIC = b"JTSPOOL1"
_HEADER = struct.Struct("<8sIII")
#: Records per part when a file is replayed in parts (ids of parts depend on it).
REPLAY_PART = 20_000
#: How often (seconds) a spool re-reads its size from disk (other processes write it too).
_RESCAN_AFTER = 5.0

_counter = itertools.count()
#: Names of the files this process owns (wrote as claimed), so a claim bearing this pid
#: that is *not* here is a leftover of an earlier process that had the same pid.
_owned: set[str] = set()
#: Temporary files this process is writing right now (never cleaned up under its feet).
_writing: set[str] = set()


class SpoolFullError(OSError):
    """Writing would take the spool past its size cap."""


class SpoolDamagedError(ValueError):
    """A spooled file cannot be read (a torn or corrupted write, an unknown format)."""


class SpoolFile(NamedTuple):
    """One file of a spool, as :meth:`Spool.files` lists it."""

    path: Path
    #: ``pending`` (any process may replay it), ``owned`` (a live process, maybe this one,
    #: will replay it), or ``quarantined`` (never replayed; kept for a human to look at).
    state: str
    size: int
    #: Records in the file (``None`` when the file cannot be read).
    records: int | None
    batch_id: str | None


_last_key_ns = [0]


def new_key() -> str:
    """A file key: sorts by time, increasing in this process even if the clock steps back
    (taken when records leave memory, so it orders them as they were recorded)."""
    ns = max(time.time_ns(), _last_key_ns[0] + 1)
    _last_key_ns[0] = ns
    return f"{ns:020d}-{os.getpid()}-{next(_counter)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claimed_by_live_other(name: str) -> bool:
    """Whether ``name`` is claimed by a process that is alive and is not an earlier
    holder of this process's pid."""
    pid_text = name.rsplit(_CLAIM, 1)[1]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return name in _owned
    return _pid_alive(pid)


class Spool:
    """Spooled batches for one sink URL (see the module docstring for the layout).

    ``max_bytes`` caps the files' total size (``None``: the default cap).
    """

    def __init__(self, base: Path, url: str, max_bytes: int | None = None) -> None:
        # Two 32-bit checksums name the directory: enough to keep URLs apart, and zlib is
        # already loaded where hashlib would cost every recorded job ~4 ms of OpenSSL import.
        data = url.encode()
        digest = f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"
        self.directory = base / digest
        self.url = url
        self.max_bytes = DEFAULT_SPOOL_MAX_BYTES if max_bytes is None else max_bytes
        self._size: int | None = None
        self._scanned_at = 0.0

    # -- writing -------------------------------------------------------------------------

    def write(
        self,
        records: Sequence[Record],
        batch_id: str | None = None,
        *,
        key: str | None = None,
        own: bool = False,
        force: bool = False,
        sync: bool = True,
    ) -> Path:
        """Store a batch; returns its file.

        ``key`` orders it among the other files (default: now); ``own`` names it claimed
        by this process from birth; ``force`` ignores the cap (job snapshots); ``sync``
        makes it reach the disk before it is named (survives power loss, not just a crash
        of this process). Raises :class:`SpoolFullError` past the cap, ``OSError`` if the
        disk refuses; nothing is left behind then.
        """
        data, suffix = _encode(records)
        if not force and self._would_pass_cap(len(data)):
            raise SpoolFullError(
                f"spool {self.directory} would pass its cap of {self.max_bytes} bytes"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        url_file = self.directory / "url.txt"
        if not url_file.exists():
            url_file.write_text(mask_url(self.url) + "\n")
        name = key or new_key()
        if batch_id is not None and _safe_id(batch_id):
            name += _ID_SEP + batch_id
        name += suffix
        final_name = f"{name}{_CLAIM}{os.getpid()}" if own else name
        tmp = self.directory / f"{name}.{os.getpid()}{_TMP}"
        _writing.add(tmp.name)
        try:
            with tmp.open("wb") as out:
                out.write(data)
                if sync:
                    out.flush()
                    os.fsync(out.fileno())
            if own:
                _owned.add(final_name)
            final = self.directory / final_name
            tmp.rename(final)
        except BaseException:
            _owned.discard(final_name)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        finally:
            _writing.discard(tmp.name)
        if self._size is not None:
            self._size += len(data)
        return final

    def _would_pass_cap(self, extra: int) -> bool:
        now = time.monotonic()
        if self._size is None or now - self._scanned_at > _RESCAN_AFTER:
            self._size = self.size()
            self._scanned_at = now
        if self._size + extra <= self.max_bytes:
            return False
        # Others may have replayed files since the last look: look again before refusing.
        self._size = self.size()
        self._scanned_at = now
        return self._size + extra > self.max_bytes

    def size(self) -> int:
        """Bytes in the spool's files (pending, owned and half-written; not quarantined)."""
        total = 0
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if entry.name.endswith(_SUFFIXES) or _CLAIM in entry.name or entry.name.endswith(_TMP):
                with contextlib.suppress(OSError):
                    total += entry.stat().st_size
        return total

    # -- finding and claiming --------------------------------------------------------------

    def pending(self) -> list[Path]:
        """Files no live process owns (any process may replay them now), oldest first.

        Also removes temporary files that dead processes left behind.
        """
        try:
            names = [p.name for p in self.directory.iterdir()]
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if name.endswith(_SUFFIXES):
                found.append(self.directory / name)
            elif _CLAIM in name:
                if not _claimed_by_live_other(name):
                    found.append(self.directory / name)
            elif name.endswith(_TMP):
                self._remove_stale_tmp(name)
        return sorted(found, key=lambda p: p.name)

    def _remove_stale_tmp(self, name: str) -> None:
        pid_text = name.removesuffix(_TMP).rsplit(".", 1)[-1]
        if not pid_text.isdigit() or name in _writing:
            return
        pid = int(pid_text)
        if pid == os.getpid() or not _pid_alive(pid):
            with contextlib.suppress(OSError):
                (self.directory / name).unlink()
                log.info("jobtrace: removed %s, left by an interrupted spool write", name)

    def claim(self, path: Path) -> Path | None:
        """Take a file for replay (it becomes owned); ``None`` if another process got it."""
        base = path.name.split(_CLAIM, 1)[0]
        claimed = self.directory / f"{base}{_CLAIM}{os.getpid()}"
        if claimed == path:
            _owned.add(claimed.name)
            return claimed
        _owned.add(claimed.name)
        try:
            path.rename(claimed)
        except FileNotFoundError:
            _owned.discard(claimed.name)
            return None
        return claimed

    def release(self, claimed: Path) -> Path:
        """Give an owned file back: any process may replay it from now on."""
        _owned.discard(claimed.name)
        base = self.directory / claimed.name.split(_CLAIM, 1)[0]
        with contextlib.suppress(FileNotFoundError):
            claimed.rename(base)
        return base

    def done(self, claimed: Path) -> None:
        """Delete a file whose records were delivered."""
        _owned.discard(claimed.name)
        if self._size is not None:
            with contextlib.suppress(OSError):
                self._size -= claimed.stat().st_size
        claimed.unlink(missing_ok=True)

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move a file that can never be replayed to ``quarantine/`` (with a ``.reason``
        file beside it), logging one line; returns its new path."""
        _owned.discard(path.name)
        folder = self.directory / QUARANTINE
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / path.name.split(_CLAIM, 1)[0]
        path.rename(target)
        target.with_name(target.name + ".reason").write_text(reason + "\n")
        self._size = None
        log.error(
            "jobtrace: quarantined spool file %s (%s); it will not be replayed", target, reason
        )
        return target

    # -- reading -------------------------------------------------------------------------

    @staticmethod
    def read(path: Path) -> list[Record]:
        """The records of a spooled file; raises :class:`SpoolDamagedError` if it cannot be
        read at all (a damaged JSON line is logged and skipped)."""
        name = path.name.split(_CLAIM, 1)[0]
        if name.endswith(_JSONL):
            return list(read_lines(path))
        return _decode(path.read_bytes())

    @staticmethod
    def batch_id(path: Path) -> str | None:
        """The batch id a file was spooled with (pending or claimed), or ``None``."""
        name = path.name.split(_CLAIM, 1)[0]
        for suffix in _SUFFIXES:
            name = name.removesuffix(suffix)
        return name.split(_ID_SEP, 1)[1] if _ID_SEP in name else None

    def count(self) -> int:
        """Files pending replay."""
        return len(self.pending())

    def files(self) -> list[SpoolFile]:
        """Every file of the spool with its state, size and record count, oldest first
        (quarantined files last)."""
        out = []
        for state, folder in (("", self.directory), (QUARANTINE, self.directory / QUARANTINE)):
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            for entry in entries:
                name = entry.name
                if not (name.endswith(_SUFFIXES) or _CLAIM in name):
                    continue
                if state:
                    kind = state + "d"
                elif _CLAIM in name and _claimed_by_live_other(name):
                    kind = "owned"
                else:
                    kind = "pending"
                path = Path(entry.path)
                out.append(
                    SpoolFile(path, kind, entry.stat().st_size, _count(path), self.batch_id(path))
                )
        return out

    # -- replaying -----------------------------------------------------------------------

    def replay(self, write: Callable[[Sequence[Record], str | None], None]) -> tuple[int, int]:
        """Deliver every pending file through ``write(records, batch_id)``, oldest first.

        Stops at the first ``write`` that raises (the file stays pending; the exception
        propagates), except :class:`BatchRefusedError`, which quarantines the file and
        goes on. Returns (records delivered, files quarantined).
        """
        delivered = quarantined = 0
        for path in self.pending():
            claimed = self.claim(path)
            if claimed is None:
                continue
            try:
                outcome = self.deliver(claimed, write)
            except BaseException:
                self.release(claimed)  # pending again, for whoever replays next
                raise
            if outcome is None:
                quarantined += 1
            else:
                delivered += outcome
        return delivered, quarantined

    def deliver(
        self, claimed: Path, write: Callable[[Sequence[Record], str | None], None]
    ) -> int | None:
        """Deliver one owned file and delete it: its record count, or ``None`` if it was
        quarantined (unreadable, or refused for good). If ``write`` raises anything else
        the file is kept (still owned) and the exception propagates."""
        try:
            records = self.read(claimed)
        except (OSError, SpoolDamagedError) as exc:
            if isinstance(exc, FileNotFoundError):
                return 0  # replayed by someone who took it over meanwhile
            self.quarantine(claimed, f"cannot read it: {exc}")
            return None
        batch_id = self.batch_id(claimed)
        # A big file is split into parts of a fixed size, not of today's batch size: a
        # part's id must name the same records on every replay, or a sink that drops
        # repeated ids would drop records never stored.
        size = REPLAY_PART
        try:
            for start in range(0, len(records), size):
                part_id = batch_id
                if batch_id is not None and len(records) > size:
                    part_id = f"{batch_id}:{start}"
                write(records[start : start + size], part_id)
        except BatchRefusedError as exc:
            self.quarantine(claimed, f"the sink refused it: {exc}")
            return None
        self.done(claimed)
        return len(records)


def spools(base: Path) -> list[Spool]:
    """Every spool under ``base`` (``$JOBTRACE_DIR/spool``), by its ``url.txt``.

    The URL there has its password masked: to replay into a store that needs one, open the
    spool again as ``Spool(base, real_url)`` (the directory name is the real URL's hash).
    """
    found = []
    try:
        folders = sorted(p for p in base.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    for folder in folders:
        url_file = folder / "url.txt"
        try:
            url = url_file.read_text().strip()
        except OSError:
            continue
        spool = Spool(base, url)
        spool.directory = folder  # the masked URL hashes elsewhere; keep the real folder
        found.append(spool)
    return found


def _safe_id(batch_id: str) -> bool:
    """Whether an id can go into a file name as it is (recorder ids always can)."""
    if not 0 < len(batch_id) <= 128:
        return False
    return all(c.isascii() and (c.isalnum() or c in "-_.:") for c in batch_id)


def _encode(records: Sequence[Record]) -> tuple[bytes, str]:
    """A batch as a file's bytes and suffix: marshal when it can hold every value."""
    try:
        payload = marshal.dumps(records if type(records) is list else list(records))
    except ValueError:  # an object marshal does not know (a user's type in span info)
        return encode_lines(records), _JSONL
    header = _HEADER.pack(_MAGIC, len(records), len(payload), zlib.crc32(payload))
    return header + payload, _SUFFIX


def _decode(data: bytes) -> list[Record]:
    if len(data) < _HEADER.size:
        raise SpoolDamagedError(f"{len(data)} bytes is too short for a spool file")
    magic, count, length, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise SpoolDamagedError(f"unknown format {magic!r}")
    payload = data[_HEADER.size :]
    if len(payload) != length or zlib.crc32(payload) != crc:
        raise SpoolDamagedError(f"{len(payload)} of {length} bytes, or a bad checksum")
    try:
        records = marshal.loads(payload)
    except (ValueError, EOFError, TypeError) as exc:
        raise SpoolDamagedError(f"cannot decode: {exc}") from exc
    if not isinstance(records, list) or len(records) != count:
        raise SpoolDamagedError("the payload is not the list of records the header announces")
    return complete(records)


def _count(path: Path) -> int | None:
    """Records in a file, read from its header (or its lines), without decoding it."""
    try:
        if path.name.split(_CLAIM, 1)[0].endswith(_JSONL):
            with path.open("rb") as handle:
                return sum(1 for line in handle if line.strip())
        with path.open("rb") as handle:
            head = handle.read(_HEADER.size)
    except OSError:
        return None
    if len(head) < _HEADER.size or head[:8] != _MAGIC:
        return None
    return int(_HEADER.unpack(head)[1])


def read_lines(path: Path) -> Iterator[Record]:
    """The records of a JSON-lines file (a spool's, or a ``file://`` sink's), one at a
    time; a damaged line is logged and skipped."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield from_dict(json_loads(line))
            except (ValueError, RecordError) as exc:
                log.warning("jobtrace: skipping damaged line %d of %s: %s", number, path, exc)


def _forget_after_fork() -> None:
    # The parent's files stay the parent's: the child owns nothing yet.
    _owned.clear()
    _writing.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
