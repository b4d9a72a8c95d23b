"""``count://name``: a sink that counts the records it receives per kind and keeps none of
them, for tests and benchmarks of memory (a ``memory://`` sink would hold every record).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Sequence
from typing import ClassVar

from jobtrace import _config
from jobtrace.model import Record
from jobtrace.sinks import register_sink

__all__ = ["CountingSink", "rss_kb", "use_counting_sink"]


class CountingSink:
    """Counts written records per kind; sinks with one name share their counts."""

    _shared: ClassVar[dict[str, Counter[str]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str = "count://") -> None:
        self.name = url.split("://", 1)[1]
        with CountingSink._lock:
            self.counts = CountingSink._shared.setdefault(self.name, Counter())

    def write(self, records: Sequence[Record]) -> None:
        self.counts.update(r[0] for r in records)

    def close(self) -> None:
        pass


register_sink("count", "tests.counting_sink:CountingSink")


def use_counting_sink(name: str, **settings: object) -> CountingSink:
    """Point the recorder at ``count://name`` (with any other settings) and return it."""
    with CountingSink._lock:
        CountingSink._shared.pop(name, None)
    _config.configure(url=f"count://{name}", install_signal_handlers=False, **settings)
    return CountingSink(f"count://{name}")


def rss_kb() -> int:
    """This process's resident set size now, in KiB (Linux)."""
    with open(f"/proc/{os.getpid()}/statm") as handle:  # noqa: PTH123
        return int(handle.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
