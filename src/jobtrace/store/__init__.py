"""The store: one schema on SQLite and PostgreSQL, written in batches by sinks and read by
the CLI, the server and reports.

>>> from jobtrace.store import Store
>>> store = Store("sqlite:///.jobtrace/jobtrace.db")      # doctest: +SKIP
>>> store.list_jobs(status="failed")                        # doctest: +SKIP

This package's ``__init__`` stays free of SQLAlchemy: the SQLite write path
(:mod:`jobtrace.store.sqlite`, :mod:`jobtrace.store.writer`) runs on the standard
library's ``sqlite3`` alone, so a recorded job does not pay SQLAlchemy's import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobtrace.store.core import Store, describe_error
    from jobtrace.store.trace_search import TraceSearch

__all__ = ["Store", "TraceSearch", "describe_error"]


def __getattr__(name: str) -> Any:
    if name == "TraceSearch":
        from jobtrace.store import trace_search

        return trace_search.TraceSearch
    if name in __all__:
        from jobtrace.store import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
