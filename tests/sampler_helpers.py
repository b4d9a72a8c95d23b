"""Reading job profiles back for the profile tests: from a store URL, or from a memory sink."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from jobtrace import model
from jobtrace.profiles.folded import JobProfile, Profile, load_job_profile
from jobtrace.sinks.memory import MemorySink
from jobtrace.store import Store


def stored_profile(store_url: str, job_id: str) -> JobProfile:
    """The job's profile as its ``profiles`` rows in the store fold back into."""
    with Store(store_url) as store, store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT type, format, data, created_at FROM profiles WHERE job_id = :j"),
            {"j": job_id},
        ).all()
    return load_job_profile([tuple(row) for row in rows])  # type: ignore[misc]


def sink_profile(sink: MemorySink, job_id: str) -> JobProfile:
    """The job's profile from the records a memory sink received."""
    fields = model.FIELDS[model.PROFILE]
    rows = []
    for record in sink.of_kind(model.PROFILE):
        row = dict(zip(fields, record[1:], strict=True))
        if row["job_id"] == job_id:
            rows.append((row["type"], row["format"], row["data"], row["created_at"]))
    return load_job_profile(rows)


def weight(profile: Profile, *frames: str, leaf: bool = False) -> int:
    """Total weight of stacks holding a frame that starts with each of ``frames`` (with
    ``leaf``, the last of them must be the stack's leaf)."""
    total = 0
    for stack, value in profile.stacks.items():
        if all(any(f.startswith(want) for f in stack) for want in frames) and (
            not leaf or stack[-1].startswith(frames[-1])
        ):
            total += value
    return total


def processes(profile: Profile) -> set[str]:
    return {stack[0] for stack in profile.stacks}


def as_dict(profile: JobProfile) -> dict[str, Any]:
    """A readable summary for assertion messages."""
    return {
        kind: sorted(
            (
                (weight, ";".join(stack[-3:]))
                for stack, weight in getattr(profile, kind).stacks.items()
            ),
            reverse=True,
        )[:12]
        for kind in ("wall", "cpu")
    }
