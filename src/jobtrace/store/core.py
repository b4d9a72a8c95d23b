"""The :class:`Store`: SQLAlchemy for reading and migrating, the batch writers for writing."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from jobtrace._config import mask_url
from jobtrace.errors import JobtraceError, StoreError, StoreNotFoundError
from jobtrace.model import Record
from jobtrace.store import items as item_queries
from jobtrace.store import jobs as job_queries
from jobtrace.store import sqlite
from jobtrace.store import traces as trace_queries
from jobtrace.store.engine import create_engine
from jobtrace.store.migrate import current_revision, upgrade
from jobtrace.store.queries import StoreQueries
from jobtrace.store.writer import BatchWriter, PartialWrite, PostgresWriter, SQLiteWriter

if TYPE_CHECKING:
    from jobtrace.batch.summary import BatchSummary
    from jobtrace.profiles.folded import JobProfile
    from jobtrace.store.trace_search import TraceSearch

__all__ = ["Store", "describe_error"]

R = TypeVar("R")


def describe_error(exc: BaseException) -> str:
    """A one-line description of a database error (the driver's message, not SQLAlchemy's)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Store(StoreQueries):
    """A jobtrace store at ``url``; metric, experiment and paged job queries come from
    :class:`~jobtrace.store.queries.StoreQueries`.

    ``create=False`` refuses to create a missing SQLite file (readers use it, so a typo in a
    path is an error rather than a new empty store). ``migrate=False`` skips the schema
    check, for ``jobtrace db upgrade`` which migrates explicitly.
    """

    def __init__(self, url: str, *, create: bool = True, migrate: bool = True) -> None:
        self.url = url
        scheme = url.split("://", 1)[0].lower()
        self.is_sqlite = scheme == "sqlite"
        self._writer: BatchWriter | None = None
        # Writers are not thread-safe (one sqlite3 connection); callers may be (a server).
        self._write_lock = threading.Lock()
        if self.is_sqlite:
            path = self.path = sqlite.path_of(url)
            if not path.exists():
                if not create:
                    raise StoreNotFoundError(f"no jobtrace store at {path} (nothing recorded yet?)")
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create {path.parent}: {exc.strerror}") from exc
        self.engine = create_engine(url)
        try:
            if migrate:
                upgrade(self.engine)
        except StoreError:
            self.engine.dispose()
            raise
        except Exception as exc:
            self.engine.dispose()
            raise StoreError(f"cannot open store {self.safe_url}: {describe_error(exc)}") from exc

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for messages."""
        return mask_url(self.url)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, records: Sequence[Record], batch_id: str | None = None) -> bool:
        """Write a batch in one transaction; False if ``batch_id`` was already written.

        With a ``batch_id`` it is all or nothing: records the database refuses raise
        :class:`~jobtrace.store.writer.RecordsRefused` naming them, and nothing is stored.
        """
        return self._with_writer(lambda writer: writer.write(records, batch_id))

    def write_partial(self, records: Sequence[Record], batch_id: str | None = None) -> PartialWrite:
        """Write a batch minus the records the database refuses, in one transaction, and
        say which those were (:meth:`~jobtrace.store.writer.BatchWriter.write_partial`)."""
        return self._with_writer(lambda writer: writer.write_partial(records, batch_id))

    def _with_writer(self, fn: Callable[[BatchWriter], R]) -> R:
        try:
            with self._write_lock:
                if self._writer is None:
                    self._writer = (
                        SQLiteWriter(self.path) if self.is_sqlite else PostgresWriter(self.engine)
                    )
                return fn(self._writer)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot write to {self.safe_url}: {describe_error(exc)}") from exc

    def upgrade(self) -> str:
        """Apply pending migrations; return the revision reached."""
        try:
            return upgrade(self.engine)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot migrate {self.safe_url}: {describe_error(exc)}") from exc

    def revision(self) -> str | None:
        """The schema revision the store is at (None: an empty database)."""
        try:
            with self.engine.connect() as conn:
                return current_revision(conn)
        except Exception as exc:
            raise StoreError(f"cannot open {self.safe_url}: {describe_error(exc)}") from exc

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self.engine.dispose()

    def _read(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        try:
            with self.engine.connect() as conn:
                return fn(conn, *args, **kwargs)
        except Exception as exc:
            if isinstance(exc, JobtraceError):  # a query's own verdict: not found, bad input
                raise
            raise StoreError(f"cannot read {self.safe_url}: {describe_error(exc)}") from exc

    def _transact(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run ``fn(conn, …)`` in one transaction, committed unless it raises."""
        try:
            with self.engine.begin() as conn:
                return fn(conn, *args, **kwargs)
        except Exception as exc:
            if isinstance(exc, JobtraceError):
                raise
            raise StoreError(f"cannot write to {self.safe_url}: {describe_error(exc)}") from exc

    def list_jobs(
        self,
        *,
        experiment: str | None = None,
        status: str | None = None,
        limit: int | None = 50,
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """Jobs, newest first, with ``lost`` worked out from stale heartbeats."""
        result: list[dict[str, Any]] = self._read(
            job_queries.list_jobs, experiment=experiment, status=status, limit=limit, now=now
        )
        return result

    def get_job(self, job_id: str, *, now: float | None = None) -> dict[str, Any] | None:
        """One job by id (or by a unique prefix of it), or ``None``."""
        result: dict[str, Any] | None = self._read(job_queries.get_job, job_id, now=now)
        return result

    def get_trace(self, trace_id: str) -> list[dict[str, Any]] | None:
        """Every span of one trace (by id or a unique prefix of it), ordered by start, or
        ``None`` if no span has that trace id."""
        result: list[dict[str, Any]] | None = self._read(trace_queries.get_trace, trace_id)
        return result

    def list_traces(
        self,
        *,
        job_id: str | None = None,
        search: TraceSearch | None = None,
        limit: int | None = 50,
    ) -> list[dict[str, Any]]:
        """Summaries of the newest traces (root name and service, job, start, duration,
        span and error counts), newest first; only traces with a span in job ``job_id``,
        and with a span meeting every condition of ``search``, if given::

            store.list_traces(search=TraceSearch.parse(service="api", min_duration="250ms"))
        """
        result: list[dict[str, Any]] = self._read(
            trace_queries.list_traces, job_id=job_id, search=search, limit=limit
        )
        return result

    def job_trace_ids(self, job_id: str) -> list[str]:
        """The ids of every trace with a span in job ``job_id``, newest first."""
        result: list[str] = self._read(trace_queries.job_trace_ids, job_id)
        return result

    def resolve_batch_id(self, batch_id: str) -> str | None:
        """The full id of a batch (given whole or as a unique job id prefix), or ``None``."""
        result: str | None = self._read(item_queries.resolve_batch_id, batch_id)
        return result

    def batch_summary(self, batch_id: str) -> BatchSummary | None:
        """The summary of batch ``batch_id`` (id or unique prefix), aggregated in SQL, or
        ``None`` if nothing was recorded under that id."""
        from jobtrace.batch.summary import BatchSummary

        def read(conn: Any) -> BatchSummary | None:
            full_id = item_queries.resolve_batch_id(conn, batch_id)
            if full_id is None:
                return None
            return BatchSummary.from_stats(full_id, item_queries.batch_stats(conn, full_id))

        result: BatchSummary | None = self._read(read)
        return result

    def list_items(
        self,
        batch_id: str,
        *,
        status: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Items of batch ``batch_id`` (a full id), in the order they were recorded."""
        result: list[dict[str, Any]] = self._read(
            item_queries.list_items, batch_id, status=status, limit=limit, offset=offset
        )
        return result

    def iter_items(
        self, batch_id: str, *, status: str | None = None, page_size: int = 5000
    ) -> Iterator[dict[str, Any]]:
        """Items of batch ``batch_id`` (a full id) in the order they were recorded, fetched
        ``page_size`` rows at a time: memory stays flat however large the batch."""
        try:
            with self.engine.connect() as conn:
                yield from item_queries.iter_items(
                    conn, batch_id, status=status, page_size=page_size
                )
        except Exception as exc:
            if isinstance(exc, JobtraceError):
                raise
            raise StoreError(f"cannot read {self.safe_url}: {describe_error(exc)}") from exc

    def count_items(self, batch_id: str, *, status: str | None = None) -> int:
        """How many items batch ``batch_id`` (a full id) has, with ``status`` if given."""
        result: int = self._read(item_queries.count_items, batch_id, status=status)
        return result

    def job_profile(self, job_id: str) -> JobProfile:
        """The folded profiles (wall, CPU, memory, timeline) of job ``job_id`` (exact id);
        raises :class:`~jobtrace.errors.JobNotFoundError` if no such job. A job recorded
        without profiling gives an empty profile (``.empty``)."""
        from jobtrace.store import profiles as profile_queries

        result: JobProfile = self._read(profile_queries.job_profile, job_id)
        return result

    def put_bundle(self, key: str, job_id: str | None, data: bytes, created_at: float) -> bool:
        """Keep an encrypted report bundle under ``key``; False if the key is taken."""
        from jobtrace.store import profiles as profile_queries

        stored: bool = self._transact(profile_queries.put_bundle, key, job_id, data, created_at)
        return stored

    def get_bundle(self, key: str) -> dict[str, Any]:
        """The encrypted bundle stored under ``key``; raises
        :class:`~jobtrace.errors.NotFoundError` if none."""
        from jobtrace.store import profiles as profile_queries

        result: dict[str, Any] = self._read(profile_queries.get_bundle, key)
        return result
