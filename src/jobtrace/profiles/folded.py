"""Folded stacks: the job profile's data model, its record form, and merging.

A profile is a mapping from a *stack* — frames root first, each a string such as
``"train (model.py:12)"`` — to an integer weight: microseconds for ``wall`` and ``cpu``,
bytes for ``memory``. Every stack starts with a process frame (``"process 1234 (main)"``)
so the stacks of a job's child processes merge into one profile, labelled by process.

Profiles travel as ``profile`` records (:data:`jobtrace.model.PROFILE`:
``id, job_id, type, format, data, created_at``) whose ``data`` is compact JSON:

- ``type="stacks"``, ``format="folded-delta/1"``: what one process's sampler saw since its
  previous record. ``{"process": label, "new": {"7": "a;b;c"}, "samples": [[7, wall_us,
  cpu_us], …], "start": t0, "end": t1}``. Stack ids are small ints scoped to the process
  label; a stack's text is sent once, in the first record that uses it, so a long job stores
  each distinct stack once per process.
- ``type="timeline"``, ``format="timeline/1"``: ``{"process": label, "points": [[t, rss_kb,
  cpu_percent], …]}``, ``t`` in epoch seconds.
- ``type="memory"``, ``format="peak/1"``: the memory live at the process's peak by the stack
  that allocated it. ``{"process": label, "mode": "approximate"|"exact", "peak_kb": n,
  "time": t, "stacks": [["a;b;c", bytes], …]}``. A later memory record of the same process
  replaces an earlier one (the peak only grows).

:func:`load_job_profile` folds a job's records back into a :class:`JobProfile`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from jobtrace import model

__all__ = [
    "KINDS",
    "JobProfile",
    "Profile",
    "format_frame",
    "load_job_profile",
    "memory_record",
    "stacks_record",
    "timeline_record",
]

#: The profiles a job has, and their units.
KINDS: Final = {"wall": "us", "cpu": "us", "memory": "bytes"}

Stack = tuple[str, ...]


def format_frame(function: str, filename: str, line: int) -> str:
    """One frame's text: ``"function (file:line)"`` with ``;`` (the folded separator) removed."""
    return f"{function} ({filename}:{line})".replace(";", ",")


@dataclass
class Profile:
    """One kind of profile: stacks (root first) to integer weights in ``unit``."""

    kind: str
    unit: str
    stacks: dict[Stack, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.stacks.values())

    def add(self, stack: Stack, weight: int) -> None:
        if weight:
            self.stacks[stack] = self.stacks.get(stack, 0) + weight

    def folded(self) -> str:
        """One stack a line, frames root first joined by ``;``, a space, the weight."""
        return "".join(
            f"{';'.join(stack)} {weight}\n" for stack, weight in sorted(self.stacks.items())
        )


@dataclass
class JobProfile:
    """A job's profiles as read back from the store."""

    wall: Profile = field(default_factory=lambda: Profile("wall", "us"))
    cpu: Profile = field(default_factory=lambda: Profile("cpu", "us"))
    memory: Profile = field(default_factory=lambda: Profile("memory", "bytes"))
    #: process label -> [(epoch seconds, rss_kb, cpu_percent), …] in time order.
    timeline: dict[str, list[tuple[float, int, float]]] = field(default_factory=dict)
    #: process label -> peak RSS in KiB at the memory profile's peak.
    peak_kb: dict[str, int] = field(default_factory=dict)
    memory_mode: str | None = None

    def get(self, kind: str) -> Profile:
        if kind not in KINDS:
            raise ValueError(f"unknown profile kind {kind!r}; expected one of {', '.join(KINDS)}")
        profile: Profile = getattr(self, kind)
        return profile

    @property
    def empty(self) -> bool:
        return not (self.wall.stacks or self.memory.stacks or self.timeline)


def _record(
    job_id: str, type_: str, format_: str, data: Mapping[str, Any], now: float
) -> tuple[Any, ...]:
    text = orjson.dumps(data).decode()
    return (model.PROFILE, uuid.uuid4().hex, job_id, type_, format_, text, now)


def stacks_record(
    job_id: str,
    process: str,
    new: Mapping[int, str],
    samples: Iterable[tuple[int, int, int]],
    start: float,
    end: float,
) -> tuple[Any, ...]:
    """A ``stacks`` record: ``new`` maps stack ids first used here to their folded text."""
    data = {
        "process": process,
        "new": {str(k): v for k, v in new.items()},
        "samples": [list(s) for s in samples],
        "start": start,
        "end": end,
    }
    return _record(job_id, "stacks", "folded-delta/1", data, end)


def timeline_record(
    job_id: str, process: str, points: Iterable[tuple[float, int, float]], now: float
) -> tuple[Any, ...]:
    return _record(
        job_id,
        "timeline",
        "timeline/1",
        {"process": process, "points": [list(p) for p in points]},
        now,
    )


def memory_record(
    job_id: str,
    process: str,
    mode: str,
    peak_kb: int,
    stacks: Mapping[str, int],
    when: float,
) -> tuple[Any, ...]:
    """A ``memory`` record: ``stacks`` maps folded text (root first, no process frame) to bytes."""
    data = {
        "process": process,
        "mode": mode,
        "peak_kb": peak_kb,
        "time": when,
        "stacks": [[k, v] for k, v in sorted(stacks.items(), key=lambda kv: -kv[1]) if v > 0],
    }
    return _record(job_id, "memory", "peak/1", data, when)


def load_job_profile(rows: Iterable[tuple[str, str, str, float]]) -> JobProfile:
    """Fold ``(type, format, data, created_at)`` rows of one job into a :class:`JobProfile`.

    Rows may come in any order; unknown types or formats are skipped (a newer writer).
    """
    out = JobProfile()
    texts: dict[str, dict[int, str]] = {}
    pending: list[tuple[str, list[list[int]]]] = []
    memory: dict[str, tuple[float, dict[str, Any]]] = {}
    for type_, format_, data, created_at in rows:
        doc = orjson.loads(data)
        process = str(doc.get("process", "process"))
        if type_ == "stacks" and format_ == "folded-delta/1":
            known = texts.setdefault(process, {})
            known.update({int(k): v for k, v in doc["new"].items()})
            pending.append((process, doc["samples"]))
        elif type_ == "timeline" and format_ == "timeline/1":
            out.timeline.setdefault(process, []).extend(
                (float(t), int(rss), float(cpu)) for t, rss, cpu in doc["points"]
            )
        elif type_ == "memory" and format_ == "peak/1":
            previous = memory.get(process)
            if previous is None or previous[0] <= created_at:
                memory[process] = (created_at, doc)
    for process, samples in pending:
        known = texts[process]
        for stack_id, wall_us, cpu_us in samples:
            text = known.get(stack_id)
            stack = (process, *text.split(";")) if text else (process, "[unknown stack]")
            out.wall.add(stack, wall_us)
            out.cpu.add(stack, cpu_us)
    for points in out.timeline.values():
        points.sort()
    for process, (_, doc) in memory.items():
        out.memory_mode = doc.get("mode")
        out.peak_kb[process] = int(doc["peak_kb"])
        for text, size in doc["stacks"]:
            out.memory.add((process, *text.split(";")), int(size))
    return out
