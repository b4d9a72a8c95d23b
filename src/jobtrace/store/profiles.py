"""Profile queries: read a job's ``profiles`` rows back, and keep encrypted report bundles.

A job's profile is stored as many small records (one per sampler flush, see
:mod:`jobtrace.profiles.folded`); reading it folds them in one pass, in whatever order
they arrive. Report bundles are what a client uploads to a jobtrace server at a job's end
(:mod:`jobtrace.report.bundle`): ciphertext only, found by a random download key.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from jobtrace.errors import NotFoundError
from jobtrace.profiles.folded import JobProfile, load_job_profile
from jobtrace.store.jobs import require_job
from jobtrace.store.schema import profiles, report_bundles

__all__ = ["get_bundle", "job_profile", "profile_rows", "put_bundle"]


def profile_rows(conn: sa.Connection, job_id: str) -> list[tuple[str, str, str, float]]:
    """The ``(type, format, data, created_at)`` rows of job ``job_id`` (exact id)."""
    query = (
        sa.select(profiles.c.type, profiles.c.format, profiles.c.data, profiles.c.created_at)
        .where(profiles.c.job_id == job_id)
        .order_by(profiles.c.created_at)
    )
    return [(r[0], r[1], r[2], r[3]) for r in conn.execute(query)]


def job_profile(conn: sa.Connection, job_id: str) -> JobProfile:
    """The folded profile of job ``job_id``; :class:`JobNotFoundError` if no such job.

    A job recorded without profiling has an empty profile (``JobProfile.empty``)."""
    rows = profile_rows(conn, job_id)
    if not rows:
        require_job(conn, job_id)
    return load_job_profile(rows)


def put_bundle(
    conn: sa.Connection, key: str, job_id: str | None, data: bytes, created_at: float
) -> bool:
    """Store an encrypted bundle under ``key``; False if the key is taken (nothing stored)."""
    if conn.execute(sa.select(report_bundles.c.key).where(report_bundles.c.key == key)).first():
        return False
    conn.execute(
        report_bundles.insert().values(
            key=key, job_id=job_id, data=data, size=len(data), created_at=created_at
        )
    )
    return True


def get_bundle(conn: sa.Connection, key: str) -> dict[str, Any]:
    """The bundle stored under ``key``: ``{"key", "job_id", "data", "created_at"}``.

    Raises :class:`~jobtrace.errors.NotFoundError` for a missing key (a 404 to the API)."""
    row = conn.execute(
        sa.select(
            report_bundles.c.key,
            report_bundles.c.job_id,
            report_bundles.c.data,
            report_bundles.c.created_at,
        ).where(report_bundles.c.key == key)
    ).first()
    if row is None:
        raise NotFoundError(f"no report bundle with download key {key!r}")
    return {"key": row[0], "job_id": row[1], "data": bytes(row[2]), "created_at": row[3]}
