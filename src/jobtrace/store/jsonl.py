"""A ``file://`` JSON-lines file (what the file sink writes) read as a store.

The records are loaded into a temporary SQLite store through the store's one write path,
so every read method answers exactly as it would on the database the records were meant
for; the temporary store is deleted on :meth:`JSONLStore.close`. Loading costs about what
recording did (hundreds of thousands of records a second).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

from jobtrace._config import mask_url
from jobtrace.errors import StoreError, StoreNotFoundError
from jobtrace.store.core import Store

__all__ = ["JSONLStore"]

#: Records written per transaction while loading.
_CHUNK = 10_000


class JSONLStore(Store):
    """The records of the JSON-lines file at ``url`` (``file:///path.jsonl``), in a
    temporary SQLite store; damaged lines are logged and skipped, and records the store
    would refuse are left out, as a server's lenient ingest does."""

    def __init__(self, url: str) -> None:
        from jobtrace.sinks.file import path_of
        from jobtrace.spool import read_lines

        source = path_of(url)
        if not source.is_file():
            raise StoreNotFoundError(f"no JSON-lines file at {source} (nothing recorded yet?)")
        self.source_url = url
        self._directory = Path(tempfile.mkdtemp(prefix="jobtrace-jsonl-"))
        try:
            super().__init__(f"sqlite:///{self._directory / 'jobtrace.db'}")
            records = read_lines(source)
            while chunk := list(itertools.islice(records, _CHUNK)):
                self.write_partial(chunk)
        except OSError as exc:
            self.close()
            raise StoreError(f"cannot read {source}: {exc.strerror or exc}") from exc
        except BaseException:
            self.close()
            raise

    @property
    def safe_url(self) -> str:
        """The file's URL (not the temporary store's), for messages."""
        return mask_url(self.source_url)

    def close(self) -> None:
        try:
            if hasattr(self, "engine"):
                super().close()
        finally:
            shutil.rmtree(self._directory, ignore_errors=True)
