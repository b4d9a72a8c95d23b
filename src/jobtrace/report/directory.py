"""The report directory of a job: ``<reports dir>/<job id>/report.json`` (and, from
:mod:`jobtrace.report.job_report`, ``report.html`` and ``profile.json``).

``report.json`` holds Sciagraph's fields (``start_time_secs_since_epoch``, ``duration_ms``,
``id``, ``peak_memory_kb`` in KiB) and every other field of the job.

The reports directory is bounded like a rotated log: when writing a report takes it past
``keep`` report directories (``JOBTRACE_REPORTS_KEEP``, 1,000 by default; 0 keeps all), the
oldest are removed, down to nine tenths of ``keep``. Finding the oldest takes a ``stat`` of
every report, so this is done once in a while (every hundredth job with the default) rather
than at every job's end, where a thousand of them would add milliseconds to every job.
Nothing is lost with them: ``report.json`` holds the job's fields, which
the store keeps (``jobtrace jobs show <id>``). Only directories holding a ``report.json``
are ever removed, so anything else put there is left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

__all__ = ["REPORT_FILE", "prune_reports", "write_report", "write_report_json"]

REPORT_FILE = "report.json"


def write_report(directory: Path, job: dict[str, Any], *, keep: int = 0) -> Path:
    """Write ``report.json`` for ``job`` (a dict of job fields) atomically; return its dir.

    With ``keep`` > 0, then remove the oldest report directories beyond ``keep``.
    """
    out = directory / str(job["id"])
    write_report_json(out, job)
    if keep > 0:
        prune_reports(directory, keep, spare=out)
    return out


def write_report_json(out: Path, job: Mapping[str, Any]) -> None:
    """Write ``out/report.json`` for ``job`` atomically (``out`` is created if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "id": job["id"],
        "start_time_secs_since_epoch": job["start_time"],
        "duration_ms": (job["duration"] or 0.0) * 1000.0,
        "peak_memory_kb": job["peak_memory_kb"],
        **{k: v for k, v in job.items() if k not in {"id", "seq", "report_dir"}},
        "report_dir": str(out),
    }
    tmp = out / f".{REPORT_FILE}.{os.getpid()}.tmp"
    tmp.write_bytes(
        orjson.dumps(document, default=repr, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    tmp.replace(out / REPORT_FILE)


def prune_reports(directory: Path, keep: int, *, spare: Path | None = None) -> int:
    """Once more than ``keep`` report directories are under ``directory``, remove the
    oldest (by the time their ``report.json`` was written) so that nine tenths of ``keep``
    remain (all of ``keep`` below ten); return how many went.

    ``spare`` (the report just written) is never removed. Safe against other processes
    pruning at the same time: a directory another one removed first is skipped.
    """
    try:
        with os.scandir(directory) as entries:
            names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return 0
    if len(names) <= keep:
        return 0  # the common case: one listing, no stat per report
    dated: list[tuple[int, str]] = []
    for name in names:
        with contextlib.suppress(OSError):  # not a report, or removed meanwhile
            dated.append(((directory / name / REPORT_FILE).stat().st_mtime_ns, name))
    dated.sort()
    removed = 0
    for _, name in dated[: max(0, len(dated) - (keep - keep // 10))]:
        path = directory / name
        if spare is not None and path == spare:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed
