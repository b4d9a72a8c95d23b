"""Experiment queries: create, get and list named groups of jobs, with their job counts.

An experiment's name is its id. Jobs that name an experiment create it as they are written
(see :mod:`jobtrace.store.writer`), so creating one explicitly is only needed to give it a
description or tags before its first job.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from jobtrace import limits, model
from jobtrace.errors import ConflictError, ExperimentNotFoundError, QueryError
from jobtrace.store.paging import DEFAULT_PAGE_LENGTH, Page, check_paging, order_by
from jobtrace.store.schema import experiments, jobs
from jobtrace.store.search import SearchFields, compile_search, field_key

__all__ = [
    "EXPERIMENT_SORT_FIELDS",
    "Experiment",
    "create_experiment",
    "find_experiments",
    "get_experiment",
    "insert_if_absent",
    "require_experiment",
]

#: Longest experiment name (the column's width).
MAX_NAME: Final = 256


@dataclass(frozen=True, slots=True)
class Experiment:
    """A named group of jobs."""

    name: str
    description: str | None
    tags: dict[str, Any]
    created_at: float
    job_count: int


_job_count = (
    sa.select(sa.func.count())
    .where(jobs.c.experiment == experiments.c.name)
    .correlate(experiments)
    .scalar_subquery()
)

#: Fields ``sort_by`` accepts (camelCase spellings too).
EXPERIMENT_SORT_FIELDS: Final[dict[str, sa.ColumnElement[Any]]] = {
    "name": experiments.c.name,
    "created_at": experiments.c.created_at,
    "job_count": _job_count,
}

_SEARCH = SearchFields(
    text={"name": experiments.c.name, "description": experiments.c.description},
    free_text=(experiments.c.name, experiments.c.description),
    numbers={"created_at": experiments.c.created_at, "job_count": _job_count},
    documents={"tag": experiments.c.tags},
)


def _from_row(row: sa.Row[Any]) -> Experiment:
    data = row._mapping
    return Experiment(
        data["name"], data["description"], data["tags"] or {}, data["created_at"], data["job_count"]
    )


def _select() -> sa.Select[Any]:
    return sa.select(
        experiments.c.name,
        experiments.c.description,
        experiments.c.tags,
        experiments.c.created_at,
        _job_count.label("job_count"),
    )


def insert_if_absent(conn: sa.Connection, table: sa.Table, values: Mapping[str, Any]) -> bool:
    """Insert one row unless its primary key exists; True if it was inserted.

    One statement (``ON CONFLICT DO NOTHING``), so two creators racing cannot both win and
    neither sees a constraint error.
    """
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).on_conflict_do_nothing()
    # RETURNING rather than rowcount, which psycopg reports as -1 here.
    key = next(iter(table.primary_key))
    return conn.execute(stmt.values(**values).returning(key)).first() is not None


def check_name(name: object, what: str = "experiment name", limit: int = MAX_NAME) -> str:
    """``name`` cleaned for the store; :class:`QueryError` if it is not 1-``limit`` characters."""
    if not isinstance(name, str) or not name.strip():
        raise QueryError(f"{what} must be a non-empty string, got {name!r}")
    if len(name) > limit:
        raise QueryError(f"{what} is longer than {limit} characters")
    return model.clean_text(name)


def create_experiment(
    conn: sa.Connection,
    name: str,
    *,
    description: str | None = None,
    tags: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> Experiment:
    """Create an experiment; :class:`ConflictError` if one has this name already.

    Run it in a transaction (``engine.begin()``): it does not commit.
    """
    name = check_name(name)
    if description is not None and not isinstance(description, str):
        raise QueryError(f"description must be a string, got {type(description).__name__}")
    if tags is not None and not isinstance(tags, Mapping):
        raise QueryError(f"tags must be an object, got {type(tags).__name__}")
    created_at = time.time() if now is None else now
    values = {
        "name": name,
        "description": None
        if description is None
        else model.clean_text(description, limits.MAX_TEXT),
        "tags": model.clean(dict(tags or {})),
        "created_at": created_at,
    }
    if not insert_if_absent(conn, experiments, values):
        raise ConflictError(f"experiment {name!r} exists already")
    return Experiment(name, values["description"], values["tags"], created_at, 0)


def get_experiment(conn: sa.Connection, name: str) -> Experiment:
    """One experiment with its job count; :class:`ExperimentNotFoundError` if unknown."""
    row = conn.execute(_select().where(experiments.c.name == name)).first()
    if row is None:
        raise ExperimentNotFoundError(name)
    return _from_row(row)


def require_experiment(conn: sa.Connection, name: str) -> None:
    """Raise :class:`ExperimentNotFoundError` unless the experiment exists."""
    found = conn.execute(sa.select(experiments.c.name).where(experiments.c.name == name)).first()
    if found is None:
        raise ExperimentNotFoundError(name)


def find_experiments(
    conn: sa.Connection,
    *,
    search: str | None = None,
    sort_by: str | None = None,
    descending: bool | None = None,
    index: int = 0,
    limit: int | None = DEFAULT_PAGE_LENGTH,
) -> Page[Experiment]:
    """Experiments matching ``search``, sorted by ``sort_by`` (``name``, ``created_at``,
    ``job_count``; default newest first), paged from element ``index``."""
    check_paging(index, limit)
    key = EXPERIMENT_SORT_FIELDS.get(field_key(sort_by or "created_at"))
    if key is None:
        fields = ", ".join(EXPERIMENT_SORT_FIELDS)
        raise QueryError(f"cannot sort experiments by {sort_by!r}; expected one of {fields}")
    desc = (sort_by is None) if descending is None else descending
    condition = compile_search(search, _SEARCH)
    where = [] if condition is None else [condition]
    total = conn.execute(sa.select(sa.func.count()).select_from(experiments).where(*where))
    count = int(total.scalar_one())
    if index >= count:
        return Page([], index, limit, count)
    query = (
        _select()
        .where(*where)
        .order_by(*order_by([key, experiments.c.name], desc))
        .offset(index)
        .limit(limit)
    )
    return Page([_from_row(r) for r in conn.execute(query)], index, limit, count)
