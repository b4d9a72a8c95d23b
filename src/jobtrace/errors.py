"""The package's exception hierarchy: one root, a few kinds users can catch.

Readers (the CLI, the REST server) map the query errors to responses: :class:`NotFoundError`
to 404, :class:`ConflictError` to 409, :class:`SearchError` to 422 and any other
:class:`QueryError` to 400.
"""

from __future__ import annotations

__all__ = [
    "BatchRefusedError",
    "ConfigurationError",
    "ConflictError",
    "ExperimentNotFoundError",
    "JobNotFoundError",
    "JobtraceError",
    "NotFoundError",
    "QueryError",
    "SearchError",
    "StoreError",
    "StoreNotFoundError",
    "one_line",
]


class JobtraceError(Exception):
    """Root of every exception jobtrace raises on purpose."""


class ConfigurationError(JobtraceError, ValueError):
    """A setting is wrong: the message names the bad value and how to fix it."""


class StoreError(JobtraceError):
    """A store could not be opened, migrated, read or written."""

    #: Seconds the destination asked to wait before it is tried again (an HTTP server's
    #: ``Retry-After``), or None: the recorder waits at least that long.
    retry_after: float | None = None


class StoreNotFoundError(StoreError):
    """A reader (``create=False``) was pointed at a SQLite file that does not exist."""


class BatchRefusedError(StoreError):
    """A sink refused a batch for a reason that retrying will not change (its records can
    never be stored as they are). A spooled batch that raises it is quarantined, not
    retried forever; a sink raises any other exception for a failure that may pass."""


class QueryError(JobtraceError, ValueError):
    """A query's parameters are wrong (a negative page index, an unknown sort field…)."""


class SearchError(QueryError):
    """A search string could not be parsed, or names a field the searched thing lacks.

    ``reason`` says what is wrong and ``position`` where (a 0-based character offset into
    ``query``), so a user interface can point at it.
    """

    def __init__(self, reason: str, position: int, query: str) -> None:
        super().__init__(f"{reason} (at character {position + 1} of the search)")
        self.reason = reason
        self.position = position
        self.query = query


class NotFoundError(JobtraceError, LookupError):
    """The thing a query names does not exist."""


class JobNotFoundError(NotFoundError):
    """No job has this id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}")
        self.job_id = job_id


class ExperimentNotFoundError(NotFoundError):
    """No experiment has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no experiment {name!r}")
        self.name = name


class ConflictError(JobtraceError):
    """Creating something failed because it already exists."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
