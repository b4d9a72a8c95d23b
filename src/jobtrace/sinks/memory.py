"""``memory://name``: records kept in a list in this process — the fake sink for tests.

Sinks with the same name share one list, so a test can configure ``memory://t`` and read
``MemorySink.named("t").records``. Setting :attr:`MemorySink.fail_with` makes writes raise,
to exercise spooling and replay.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import ClassVar

from jobtrace.model import Record


class MemorySink:
    """Keeps written records in :attr:`records`; shared by name across opens."""

    _shared: ClassVar[dict[str, MemorySink]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str = "memory://") -> None:
        self.name = url.split("://", 1)[1] if "://" in url else url
        with MemorySink._shared_lock:
            existing = MemorySink._shared.get(self.name)
        self.records: list[Record] = existing.records if existing else []
        self.batches: list[int] = existing.batches if existing else []
        self.fail_with: BaseException | None = existing.fail_with if existing else None
        with MemorySink._shared_lock:
            MemorySink._shared.setdefault(self.name, self)

    @classmethod
    def named(cls, name: str) -> MemorySink:
        """The shared sink called ``name`` (created empty if needed)."""
        with cls._shared_lock:
            found = cls._shared.get(name)
        return found if found is not None else cls(f"memory://{name}")

    @classmethod
    def reset(cls) -> None:
        """Forget every named sink (test fixtures call this)."""
        with cls._shared_lock:
            cls._shared.clear()

    def write(self, records: Sequence[Record]) -> None:
        shared = MemorySink.named(self.name)
        if shared.fail_with is not None:
            raise shared.fail_with
        shared.records.extend(records)
        shared.batches.append(len(records))

    def close(self) -> None:
        pass

    def of_kind(self, kind: str) -> list[Record]:
        """The records of one kind, in write order."""
        return [r for r in MemorySink.named(self.name).records if r[0] == kind]
