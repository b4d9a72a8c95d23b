"""Job queries. A job's stored status stays ``running`` if its process dies without a word;
readers report it as ``lost`` once its heartbeat is stale, worked out at read time."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from jobtrace.errors import StoreError
from jobtrace.model import JOB_STATUSES
from jobtrace.store.schema import jobs

#: A running job is lost when no heartbeat came for this many heartbeat intervals…
LOST_AFTER_INTERVALS = 5
#: …plus this grace (seconds), for a process paused by a busy machine.
LOST_GRACE = 10.0
_DEFAULT_INTERVAL = 2.0


def _stale_before(now: float) -> Any:
    interval = sa.func.coalesce(jobs.c.heartbeat_interval, _DEFAULT_INTERVAL)
    last = sa.func.coalesce(jobs.c.last_heartbeat, jobs.c.start_time)
    return last + interval * LOST_AFTER_INTERVALS + LOST_GRACE < now


def is_stale(row: dict[str, Any], now: float) -> bool:
    interval = row.get("heartbeat_interval") or _DEFAULT_INTERVAL
    last = row.get("last_heartbeat") or row["start_time"]
    return bool(last + interval * LOST_AFTER_INTERVALS + LOST_GRACE < now)


def _to_dict(row: sa.Row[Any], now: float) -> dict[str, Any]:
    data = dict(row._mapping)
    data.pop("seq", None)
    if data["status"] == "running" and is_stale(data, now):
        data["status"] = "lost"
    return data


def _status_filter(status: str, now: float) -> Any:
    if status not in JOB_STATUSES:
        raise StoreError(f"unknown status {status!r}; expected one of {', '.join(JOB_STATUSES)}")
    stale = _stale_before(now)
    if status == "lost":
        return sa.and_(jobs.c.status == "running", stale)
    if status == "running":
        return sa.and_(jobs.c.status == "running", sa.not_(stale))
    return jobs.c.status == status


def list_jobs(
    conn: sa.Connection,
    *,
    experiment: str | None = None,
    status: str | None = None,
    limit: int | None = 50,
    now: float | None = None,
) -> list[dict[str, Any]]:
    now = time.time() if now is None else now
    query = sa.select(jobs).order_by(jobs.c.start_time.desc(), jobs.c.id.desc())
    if experiment is not None:
        query = query.where(jobs.c.experiment == experiment)
    if status is not None:
        query = query.where(_status_filter(status, now))
    if limit is not None:
        query = query.limit(limit)
    return [_to_dict(row, now) for row in conn.execute(query)]


def get_job(conn: sa.Connection, job_id: str, *, now: float | None = None) -> dict[str, Any] | None:
    now = time.time() if now is None else now
    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
    if row is None and job_id:
        # Ids are long; accept a unique prefix as `git` does. substr, not LIKE: LIKE is
        # case-insensitive on SQLite and case-sensitive on PostgreSQL.
        prefix = sa.func.substr(jobs.c.id, 1, len(job_id))
        found = conn.execute(sa.select(jobs).where(prefix == job_id).limit(2)).all()
        if len(found) > 1:
            raise StoreError(f"job id prefix {job_id!r} is ambiguous; give more characters")
        row = found[0] if found else None
    return None if row is None else _to_dict(row, now)
