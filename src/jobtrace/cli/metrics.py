"""``jobtrace metrics``: a job's latest metric values, or one metric's history as a chart."""

from __future__ import annotations

import math
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
from jobtrace.cli.jobs import local_time
from jobtrace.model import encode_float
from jobtrace.wire import metric_summary_out, point_out

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import Console
    from rich.text import Text

    from jobtrace.store.reader import Reader

#: Columns taken by the chart's y-axis labels and their separator.
_AXIS_WIDTH = 12


def format_value(value: float | None) -> str:
    """A metric value for people: 6 significant digits, ``nan``/``inf``/``-inf`` as such."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(encode_float(value))
    return f"{value:.6g}"


@click.group()
def metrics() -> None:
    """Look at the metrics jobs logged with jobtrace.log_metric."""


@metrics.command("show")
@click.argument("job_id", metavar="JOB")
@click.argument("name", required=False)
@click.option(
    "--height",
    type=click.IntRange(min=2, max=100),
    default=12,
    show_default=True,
    help="Lines of the chart (with NAME).",
)
@click.option(
    "--max-points",
    type=click.IntRange(min=2),
    help="With NAME and --json: downsample the history to at most this many points, "
    "keeping the first, the last and the extremes.",
)
@json_option
@store_option
@handle_errors
def show_metrics(
    job_id: str,
    name: str | None,
    height: int,
    max_points: int | None,
    as_json: bool,
    store_url: str | None,
) -> None:
    """Show the latest value of each metric of JOB, or the history of metric NAME.

    JOB may be a unique prefix of a job id. Without NAME: a table of each metric's latest
    value (the value at its highest step). With NAME: the history as a chart in the
    terminal, downsampled to its width, and a summary. --json prints every point instead
    (values NaN and infinity as "nan", "inf", "-inf").

    \b
        jobtrace metrics show 01jd3x4k
        jobtrace metrics show 01jd3x4k loss
        jobtrace metrics show 01jd3x4k loss --json
    """
    with open_store(store_url) as store:
        job = store.get_job(job_id)
        if job is None:
            fail(f"no job {job_id!r} in {store.safe_url}")
            return
        if name is None:
            _show_latest(store, job, as_json)
        else:
            _show_history(store, job, name, height, max_points, as_json)


def chart_width(console: Console) -> int:
    """Characters a chart may take in ``console`` beside its y-axis labels."""
    return max(10, min(console.width, 200) - _AXIS_WIDTH)


def _axis_label(value: float) -> str:
    """A y-axis label that fits its margin: fewer digits where six would not."""
    text = format_value(value)
    if len(text) > _AXIS_WIDTH - 2:
        text = f"{value:.{max(1, _AXIS_WIDTH - 9)}g}"
    return text


def print_chart(
    lines: Sequence[Text], low: float, high: float, first_step: object, last_step: object
) -> None:
    """Print chart lines (top first) with the y range on the left and the steps below."""
    from rich.text import Text

    console = plain_console()
    for i, line in enumerate(lines):
        label = _axis_label(high) if i == 0 else _axis_label(low) if i == len(lines) - 1 else ""
        console.print(Text(f"{label:>{_AXIS_WIDTH - 2}} ┤").append_text(line))
    width = max((len(line) for line in lines), default=0)
    first, last = f"step {first_step}", f"step {last_step}"
    console.print(" " * _AXIS_WIDTH + first + last.rjust(max(1, width - len(first))))


def _show_latest(store: Reader, job: dict[str, Any], as_json: bool) -> None:
    points = store.latest_metrics(job["id"])
    if as_json:
        print_json({"jobId": job["id"], "metrics": [point_out(p) for p in points]})
        return
    from rich.table import Table
    from rich.text import Text

    console = plain_console()
    if not points:
        console.print(f"Job {job['id']} logged no metrics.")
        return
    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    table.add_column("METRIC", overflow="ellipsis", no_wrap=True)
    table.add_column("VALUE", justify="right", no_wrap=True)
    table.add_column("STEP", justify="right", no_wrap=True)
    table.add_column("LOGGED", no_wrap=True)
    for p in points:
        table.add_row(Text(p.name), format_value(p.value), str(p.step), local_time(p.timestamp))
    console.print(Text(f"Latest metrics of job {job['id']} ({job['name'] or '-'})", "bold"))
    console.print(table)


def _show_history(
    store: Reader,
    job: dict[str, Any],
    name: str,
    height: int,
    max_points: int | None,
    as_json: bool,
) -> None:
    job_id = job["id"]
    summary = store.metric_summary(job_id, name)
    if summary.count == 0:
        fail(f"job {job_id} has no metric {name!r}")
        return
    if as_json:
        if max_points is None:
            points = store.metric_history(job_id, name, limit=None).data
        else:
            points = store.metric_series(job_id, name, max_points=max_points)
        print_json(
            {
                "jobId": job_id,
                "name": name,
                "summary": metric_summary_out(summary),
                "points": [point_out(p) for p in points],
            }
        )
        return
    from rich.text import Text

    from jobtrace.cli.chart import render_chart

    console = plain_console()
    width = chart_width(console)
    # Two dot columns per character: two points per column keep each one's min and max.
    series = store.metric_series(job_id, name, max_points=max(4, 4 * width))
    lines, low, high = render_chart([(p.step, p.value) for p in series], width, height)
    console.print(Text(f"{name} of job {job_id} ({job['name'] or '-'})", "bold"))
    print_chart(
        [Text(line, "cyan") for line in lines], low, high, summary.first_step, summary.last_step
    )
    latest = summary.latest
    parts = [
        f"{summary.count} points",
        f"min {format_value(summary.min)}",
        f"max {format_value(summary.max)}",
    ]
    if latest is not None:
        parts.append(f"latest {format_value(latest.value)} at step {latest.step}")
    if summary.nan_count or summary.inf_count:
        parts.append(f"{summary.nan_count} NaN, {summary.inf_count} infinite (not drawn)")
    console.print(", ".join(parts))
