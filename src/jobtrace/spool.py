"""The spool: batches a sink could not take, kept on local disk until it can.

Each sink URL has its own directory under ``$JOBTRACE_DIR/spool/`` (named by a hash of the
URL, with the URL in ``url.txt``). A batch becomes one JSON-lines file, written under a
temporary name and renamed into place so a reader never sees half a file. A replaying
process claims a file by renaming it (atomic), so two processes never replay the same file;
a claim left by a process that died is taken over. Replays are idempotent anyway: every
store write is an upsert on the record's identity, and a batch spooled with a batch id
keeps it in its file name, so a sink that deduplicates by id (``http://``) sees the same
id on every attempt.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from jobtrace._config import mask_url
from jobtrace.model import Record, RecordError, from_dict
from jobtrace.sinks.file import encode_lines, json_loads

log = logging.getLogger("jobtrace.spool")

_SUFFIX = ".jsonl"
_CLAIM = ".claimed-"
#: Separates the time-ordered part of a file name from the batch id.
_ID_SEP = "~"
_counter = itertools.count()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    """Spooled batches for one sink URL."""

    def __init__(self, base: Path, url: str) -> None:

        # Two 32-bit checksums name the directory: enough to keep URLs apart, and zlib is
        # already loaded where hashlib would cost every recorded job ~4 ms of OpenSSL import.
        data = url.encode()
        digest = f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"
        self.directory = base / digest
        self.url = url

    def write(self, records: Sequence[Record], batch_id: str | None = None) -> Path:
        """Store a batch (with its id, if any); raises ``OSError`` if the disk refuses too."""
        self.directory.mkdir(parents=True, exist_ok=True)
        url_file = self.directory / "url.txt"
        if not url_file.exists():
            url_file.write_text(mask_url(self.url) + "\n")
        # Names sort by time, so replay keeps the order batches were recorded in.
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_counter)}"
        if batch_id is not None and _safe_id(batch_id):
            name += _ID_SEP + batch_id
        tmp = self.directory / (name + ".tmp")
        with tmp.open("wb") as out:
            out.write(encode_lines(records))
            # On disk before it is named as spooled: a crash (or power loss) must not leave
            # an empty file where acknowledged records should be. Spooling is the rare path.
            out.flush()
            os.fsync(out.fileno())
        final = self.directory / (name + _SUFFIX)
        tmp.rename(final)
        return final

    def pending(self) -> list[Path]:
        """Spooled files not claimed by a live process, oldest first."""
        try:
            names = [p.name for p in self.directory.iterdir()]
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if name.endswith(_SUFFIX):
                found.append(self.directory / name)
            elif _CLAIM in name:
                pid_text = name.rsplit(_CLAIM, 1)[1]
                if pid_text.isdigit() and not _pid_alive(int(pid_text)):
                    found.append(self.directory / name)
        return sorted(found, key=lambda p: p.name)

    def claim(self, path: Path) -> Path | None:
        """Take a file for replay; ``None`` if another process got it first."""
        base = path.name.split(_CLAIM, 1)[0]
        claimed = self.directory / f"{base}{_CLAIM}{os.getpid()}"
        try:
            path.rename(claimed)
        except FileNotFoundError:
            return None
        return claimed

    def release(self, claimed: Path) -> None:
        """Give a claimed file back (its replay failed)."""
        base = claimed.name.split(_CLAIM, 1)[0]
        with contextlib.suppress(FileNotFoundError):
            claimed.rename(self.directory / base)

    @staticmethod
    def read(path: Path) -> list[Record]:
        """The records of a spooled file; a damaged line is logged and skipped."""
        return list(_read_lines(path))

    @staticmethod
    def batch_id(path: Path) -> str | None:
        """The batch id a file was spooled with (pending or claimed), or ``None``."""
        name = path.name.split(_CLAIM, 1)[0].removesuffix(_SUFFIX)
        return name.split(_ID_SEP, 1)[1] if _ID_SEP in name else None

    @staticmethod
    def done(claimed: Path) -> None:
        claimed.unlink(missing_ok=True)

    def count(self) -> int:
        return len(self.pending())


def _safe_id(batch_id: str) -> bool:
    """Whether an id can go into a file name as it is (recorder ids always can)."""
    if not 0 < len(batch_id) <= 128:
        return False
    return all(c.isascii() and (c.isalnum() or c in "-_.") for c in batch_id)


def _read_lines(path: Path) -> Iterator[Record]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield from_dict(json_loads(line))
            except (ValueError, RecordError) as exc:
                log.warning("jobtrace: skipping damaged line %d of %s: %s", number, path, exc)
