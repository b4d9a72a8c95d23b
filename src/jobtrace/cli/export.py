"""``jobtrace jobs list --csv/--json``: the listed jobs with every field and the chosen
columns, to stdout or a file."""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from jobtrace import model
from jobtrace.cli._common import fail, json_bytes
from jobtrace.cli.jobs import job_json
from jobtrace.model import encode_float

if TYPE_CHECKING:
    from jobtrace.runs import Column
    from jobtrace.store.metrics import JobMetrics

__all__ = ["export_rows", "write_runs"]


def export_rows(runs: Sequence[JobMetrics], columns: Sequence[Column]) -> list[dict[str, Any]]:
    """Each job as ``jobs list --json`` gives it, plus a key per chosen column (its label)
    holding the param, tag or latest metric value (NaN and infinities as strings)."""
    from jobtrace.runs import column_value

    rows = []
    for run in runs:
        row = job_json(run.job)
        for column in columns:
            value = column_value(column, run)
            row[column.label] = encode_float(value) if isinstance(value, float) else value
        rows.append(row)
    return rows


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return encode_float(value)
    if isinstance(value, dict | list | bool):
        return json_bytes(value, indent=False).decode()  # as JSON spells it: true, {"a": 1}
    return value


def write_runs(
    runs: Sequence[JobMetrics], columns: Sequence[Column], fmt: str, out: str | None
) -> None:
    """Write the rows as ``fmt`` (``csv`` or ``json``) to ``out`` (a path; stdout if None
    or ``-``). CSV has a header line, then a line per job."""
    rows = export_rows(runs, columns)
    if fmt == "json":
        data = json_bytes(rows)
    else:
        # A job as a reader sees it: its record's fields but ``seq`` (jobs.find_jobs).
        names = dict.fromkeys(f for f in model.FIELDS[model.JOB] if f != "seq")
        for row in rows:
            names.update(dict.fromkeys(row))
        names.update(dict.fromkeys(c.label for c in columns))
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(names)
        for row in rows:
            writer.writerow([_csv_cell(row.get(name)) for name in names])
        data = text.getvalue().encode()
    if out is None or out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        Path(out).write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    click.echo(f"wrote {len(rows)} jobs to {out}", err=True)
