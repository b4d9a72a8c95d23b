"""``sqlite:///…`` and ``postgresql://…``: write into a jobtrace store."""

from __future__ import annotations

from collections.abc import Sequence

from jobtrace.model import Record


class StoreSink:
    """Opens (and if needed migrates) the store on construction, then writes batches."""

    def __init__(self, url: str) -> None:
        from jobtrace.store import Store

        self.store = Store(url)

    def write(self, records: Sequence[Record]) -> None:
        self.store.write(records)

    def close(self) -> None:
        self.store.close()
