"""``file:///path.jsonl``: one JSON object per record, appended to a file.

Each batch is encoded first and written with a single ``write`` on a file opened for
appending, so batches from several processes do not interleave mid-line on local disks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobtrace.limits import cap_record
from jobtrace.model import Record, to_dict


def json_loads(data: bytes | str) -> object:
    import orjson

    return orjson.loads(data)


def encode_lines(records: Sequence[Record]) -> bytes:
    """Records as JSON lines (the spool uses the same format)."""
    import orjson  # imported on the writer thread, keeping `import jobtrace` light

    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
    try:
        return b"".join(dumps(to_dict(r), default=repr, option=option) for r in records)
    except (TypeError, ValueError):
        # Rare: a string orjson refuses (a lone surrogate from a non-UTF-8 file name or
        # argv). Encode record by record, cleaning only the ones that need it.
        return b"".join(_encode_one(r, dumps, option) for r in records)


def _encode_one(record: Record, dumps: Any, option: int) -> bytes:
    try:
        return bytes(dumps(to_dict(record), default=repr, option=option))
    except (TypeError, ValueError):
        return bytes(dumps(to_dict(cap_record(record)), default=repr, option=option))


def path_of(url: str) -> Path:
    """The file a ``file://`` URL names: ``file:///abs/x.jsonl`` or ``file://rel/x.jsonl``."""
    return Path(url.split("://", 1)[1])


class FileSink:
    """Appends records as JSON lines to the URL's path (parent directories are created)."""

    def __init__(self, url: str) -> None:
        self.path = path_of(url)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, records: Sequence[Record]) -> None:
        data = encode_lines(records)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)

    def close(self) -> None:
        pass
