"""The report directory of a job: ``<reports dir>/<job id>/report.json``.

``report.json`` holds Sciagraph's fields (``start_time_secs_since_epoch``, ``duration_ms``,
``id``, ``peak_memory_kb`` in KiB) and every other field of the job.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

REPORT_FILE = "report.json"


def write_report(directory: Path, job: dict[str, Any]) -> Path:
    """Write ``report.json`` for ``job`` (a dict of job fields) atomically; return its dir."""
    out = directory / str(job["id"])
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
    return out
