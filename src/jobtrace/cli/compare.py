"""``jobtrace jobs compare``: jobs side by side — params and tags with differences marked,
metrics (latest, min, max, step of best) and a metric's curves overlaid in the terminal."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from jobtrace.cli._common import (
    fail,
    handle_errors,
    json_option,
    open_store,
    plain_console,
    print_json,
    store_option,
)
from jobtrace.cli.jobs import cell_text, status_text
from jobtrace.cli.metrics import chart_width, format_value, print_chart
from jobtrace.model import encode_float
from jobtrace.report.result import human_duration

if TYPE_CHECKING:
    from rich.table import Table

    from jobtrace.store.metrics import MetricSummary
    from jobtrace.store.reader import Reader

__all__ = ["compare"]

#: Colours of the compared jobs' columns and curves, in order (repeated past six jobs).
COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red")


@dataclass(frozen=True, slots=True)
class Row:
    """One param or tag: its value in each job (None where a job lacks it)."""

    name: str
    values: tuple[Any, ...]

    @property
    def differs(self) -> bool:
        return len({_same_key(v) for v in self.values}) > 1


def _same_key(value: Any) -> Any:
    """What decides that two values are the same: 64 and 64.0 are, a missing one is not."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return ("number", float(value))
    return ("other", repr(value))


def _rows(documents: Sequence[dict[str, Any] | None]) -> list[Row]:
    names = sorted({key for doc in documents for key in doc or {}})
    return [Row(name, tuple((doc or {}).get(name) for doc in documents)) for name in names]


def _best_step(summary: MetricSummary, maximize: bool) -> int | None:
    return summary.max_step if maximize else summary.min_step


@click.command("compare")
@click.argument("job_ids", metavar="JOB JOB [JOB…]", nargs=-1, required=True)
@click.option("--only-diff", is_flag=True, help="Show only the params and tags that differ.")
@click.option(
    "--maximize",
    multiple=True,
    metavar="NAME",
    help="A metric whose best value is its largest (accuracy, …); repeatable. "
    "The best of every other metric is its smallest (a loss, an error).",
)
@click.option(
    "--metric",
    "-m",
    "chart_metrics",
    multiple=True,
    metavar="NAME",
    help="Overlay this metric's curves of every job in the terminal; repeatable.",
)
@click.option(
    "--height",
    type=click.IntRange(min=2, max=100),
    default=12,
    show_default=True,
    help="Lines of each chart.",
)
@json_option
@store_option
@handle_errors
def compare(
    job_ids: tuple[str, ...],
    only_diff: bool,
    maximize: tuple[str, ...],
    chart_metrics: tuple[str, ...],
    height: int,
    as_json: bool,
    store_url: str | None,
) -> None:
    """Compare jobs side by side: params and tags (those that differ in bold), metrics
    (latest, min, max and the step of the best value) and, with --metric, curves.

    Each JOB is an id or a unique prefix of one. Jobs are numbered #1, #2, … in the order
    given; the best latest value of each metric is marked. --json prints it all as JSON.

    \b
        jobtrace jobs compare 01jd3x4k 01jd3x9q --only-diff
        jobtrace jobs compare 01jd3x4k 01jd3x9q 01jd3y2a --metric loss
        jobtrace jobs compare 01jd3x4k 01jd3x9q --maximize accuracy --json
    """
    with open_store(store_url) as store:
        jobs = _resolve(store, job_ids)
        summaries = [{s.name: s for s in store.metric_summaries(job["id"])} for job in jobs]
        params = _rows([job["params"] for job in jobs])
        tags = _rows([job["tags"] for job in jobs])
        names = sorted({name for found in summaries for name in found})
        goals = {name: name in maximize for name in names}
        if as_json:
            print_json(_json(jobs, params, tags, names, summaries, goals, only_diff))
            return
        console = plain_console()
        console.print(_jobs_table(jobs))
        for title, rows in (("Params", params), ("Tags", tags)):
            _print_values(title, rows, jobs, only_diff)
        _print_metrics(names, summaries, goals, jobs)
        for name in chart_metrics:
            _print_overlay(store, jobs, name, height)


def _resolve(store: Reader, job_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The jobs named (ids or unique prefixes), each once, in the order given."""
    jobs: dict[str, dict[str, Any]] = {}
    for job_id in job_ids:
        job = store.get_job(job_id)
        if job is None:
            fail(f"no job {job_id!r} in {store.safe_url}")
        else:
            jobs.setdefault(job["id"], job)
    if len(jobs) < 2:
        fail("compare needs two or more different jobs")
    return list(jobs.values())


def _header(index: int, job: dict[str, Any]) -> str:
    return f"#{index + 1} {job['name']}" if job["name"] else f"#{index + 1}"


def _table() -> Table:
    from rich.table import Table

    return Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)


def _jobs_table(jobs: Sequence[dict[str, Any]]) -> Table:
    from rich.text import Text

    table = _table()
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("ID", no_wrap=True, min_width=26)
    table.add_column("NAME", overflow="ellipsis", no_wrap=True, min_width=8)
    table.add_column("STATUS", no_wrap=True, min_width=9)
    table.add_column("DURATION", justify="right", no_wrap=True)
    for i, job in enumerate(jobs):
        duration = job["duration"]
        table.add_row(
            Text(f"#{i + 1}", COLOURS[i % len(COLOURS)]),
            Text(job["id"]),
            Text(job["name"] or ""),
            status_text(job["status"]),
            "-" if duration is None else human_duration(duration),
        )
    return table


def _job_columns(table: Table, jobs: Sequence[dict[str, Any]]) -> None:
    for i, job in enumerate(jobs):
        table.add_column(
            _header(i, job),
            header_style=f"bold {COLOURS[i % len(COLOURS)]}",
            justify="right",
            overflow="ellipsis",
            no_wrap=True,
            min_width=6,
        )


def _print_values(
    title: str, rows: Sequence[Row], jobs: Sequence[dict[str, Any]], only_diff: bool
) -> None:
    from rich.text import Text

    console = plain_console()
    shown = [row for row in rows if row.differs or not only_diff]
    console.print()
    if not rows:
        console.print(Text(f"{title}: none", "bold"))
        return
    differ = sum(row.differs for row in rows)
    console.print(Text(f"{title} ({differ} of {len(rows)} differ)", "bold"))
    if not shown:
        return
    table = _table()
    table.add_column(title.upper().rstrip("S"), overflow="ellipsis", no_wrap=True, min_width=8)
    _job_columns(table, jobs)
    for row in shown:
        style = "bold yellow" if row.differs else "dim"
        cells = [Text(cell_text(value), style) for value in row.values]
        table.add_row(Text(("* " if row.differs else "  ") + row.name, style), *cells)
    console.print(table)


def _print_metrics(
    names: Sequence[str],
    summaries: Sequence[dict[str, MetricSummary]],
    goals: dict[str, bool],
    jobs: Sequence[dict[str, Any]],
) -> None:
    from rich.text import Text

    console = plain_console()
    console.print()
    if not names:
        console.print(Text("Metrics: none", "bold"))
        return
    console.print(Text("Metrics (best: the smallest unless --maximize names it)", "bold"))
    table = _table()
    table.add_column("METRIC", overflow="ellipsis", no_wrap=True, min_width=8)
    table.add_column("", no_wrap=True)
    _job_columns(table, jobs)
    for name in names:
        found = [by_name.get(name) for by_name in summaries]
        latest = [None if s is None or s.latest is None else s.latest.value for s in found]
        best = _best_index(latest, goals[name])
        goal = "max" if goals[name] else "min"

        def at(value: float | None, step: int | None) -> str:
            return "-" if value is None else f"{format_value(value)} @{step}"

        table.add_row(
            Text(name),
            "latest",
            *(Text(cell_text(v), "bold green" if i == best else "") for i, v in enumerate(latest)),
        )
        table.add_row("", "min", *(at(s.min, s.min_step) if s else "-" for s in found))
        table.add_row("", "max", *(at(s.max, s.max_step) if s else "-" for s in found))
        steps = [None if s is None else _best_step(s, goals[name]) for s in found]
        table.add_row(
            "", f"best step ({goal})", *("-" if step is None else str(step) for step in steps)
        )
    console.print(table)


def _best_index(values: Sequence[float | None], maximize: bool) -> int | None:
    """Which job's value is the best (the first on a tie), None if none is a number."""
    numbers = [(v, i) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    if len(numbers) < 2:
        return None
    pick = max if maximize else min
    value, _ = pick(numbers, key=lambda pair: pair[0])
    return next(i for v, i in numbers if v == value)


def _print_overlay(store: Reader, jobs: Sequence[dict[str, Any]], name: str, height: int) -> None:
    from rich.text import Text

    from jobtrace.cli.chart import render_overlay

    console = plain_console()
    width = chart_width(console)
    series = [store.metric_series(job["id"], name, max_points=max(4, 4 * width)) for job in jobs]
    if not any(series):
        fail(f"none of the jobs logged a metric {name!r}")
    cells, bounds = render_overlay([[(p.step, p.value) for p in s] for s in series], width, height)
    console.print()
    legend = Text(f"{name}: ", "bold")
    for i, (job, points) in enumerate(zip(jobs, series, strict=True)):
        label = _header(i, job) + ("" if points else " (no points)")
        legend.append(f"━ {label}  ", COLOURS[i % len(COLOURS)])
    console.print(legend)
    lines = []
    for row in cells:
        line = Text()
        for char, owner in row:
            line.append(char, "" if owner is None else COLOURS[owner % len(COLOURS)])
        lines.append(line)
    low, high, first, last = (
        (math.nan, math.nan, "-", "-")
        if bounds is None
        else (bounds[2], bounds[3], int(bounds[0]), int(bounds[1]))
    )
    print_chart(lines, low, high, first, last)


def _json(
    jobs: Sequence[dict[str, Any]],
    params: Sequence[Row],
    tags: Sequence[Row],
    names: Sequence[str],
    summaries: Sequence[dict[str, MetricSummary]],
    goals: dict[str, bool],
    only_diff: bool,
) -> dict[str, Any]:
    def number(value: float | None) -> float | str | None:
        return None if value is None else encode_float(value)

    def values(rows: Sequence[Row]) -> list[dict[str, Any]]:
        return [
            {"name": row.name, "values": list(row.values), "differs": row.differs}
            for row in rows
            if row.differs or not only_diff
        ]

    metrics = []
    for name in names:
        per_job: list[dict[str, Any] | None] = []
        for by_name in summaries:
            s = by_name.get(name)
            per_job.append(
                None
                if s is None
                else {
                    "latest": None if s.latest is None else number(s.latest.value),
                    "latestStep": None if s.latest is None else s.latest.step,
                    "min": number(s.min),
                    "minStep": s.min_step,
                    "max": number(s.max),
                    "maxStep": s.max_step,
                    "bestStep": _best_step(s, goals[name]),
                    "count": s.count,
                }
            )
        metrics.append({"name": name, "best": "max" if goals[name] else "min", "jobs": per_job})
    return {
        "jobs": [
            {k: job[k] for k in ("id", "name", "experiment", "status", "duration")} for job in jobs
        ],
        "params": values(params),
        "tags": values(tags),
        "metrics": metrics,
    }
