"""``jobtrace jobs``: list and show recorded jobs."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from jobtrace.cli import LazyGroup

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

from jobtrace._clock import iso
from jobtrace.cli._common import (
    fail,
    handle_errors,
    json_option,
    open_store,
    plain_console,
    print_json,
    store_option,
)
from jobtrace.model import JOB_STATUSES
from jobtrace.report.result import human_bytes, human_duration

STATUS_STYLE = {
    "running": "cyan",
    "succeeded": "green",
    "failed": "bold red",
    "killed": "yellow",
    "lost": "magenta",
}
_TIME_FIELDS = ("start_time", "end_time", "last_heartbeat")


def job_json(job: dict[str, Any]) -> dict[str, Any]:
    """A job for JSON output: times as ISO-8601 with an offset, durations in seconds."""
    out = dict(job)
    for field in _TIME_FIELDS:
        out[field] = iso(out.get(field))
    return out


def local_time(epoch: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if epoch is None:
        return "-"
    try:
        return datetime.fromtimestamp(epoch).astimezone().strftime(fmt)
    except (OverflowError, OSError, ValueError):  # a time an older version let be stored
        return "?"


def status_text(status: str) -> Text:
    from rich.text import Text

    return Text(status, style=STATUS_STYLE.get(status, ""))


@click.group(cls=LazyGroup, lazy={"compare": "jobtrace.cli.compare:compare"})
def jobs() -> None:
    """List, inspect and compare recorded jobs."""


@jobs.command("list")
@click.option("--experiment", "-e", help="Only jobs of this experiment.")
@click.option("--status", "-s", type=click.Choice(JOB_STATUSES), help="Only jobs with this status.")
@click.option(
    "--search",
    "-q",
    metavar="TEXT",
    help="Only jobs matching TEXT, e.g. 'metric.loss<0.5, param.lr>0.01, tag.team:ds'.",
)
@click.option(
    "--sort",
    "sort_by",
    metavar="FIELD",
    help="Sort by a job field (duration, peak_memory_kb, name, …) or metric.NAME  "
    "[default: newest first]",
)
@click.option("--desc", "descending", is_flag=True, default=None, help="Sort descending.")
@click.option(
    "--columns",
    "-c",
    metavar="LIST",
    help="Add columns, comma-separated: param.NAME, metric.NAME (latest value), tag.NAME "
    "or a job field, e.g. 'param.lr,metric.loss,tag.team' (in place of STARTED and PEAK "
    "MEM; name start_time or peak_memory_kb to keep them).",
)
@click.option(
    "--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True, help="Jobs shown."
)
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: every job field and the columns.")
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    help="Write the --csv or --json output to this file (its .csv or .json suffix is "
    "enough to choose) instead of stdout.",
)
@store_option
@handle_errors
def list_jobs(
    experiment: str | None,
    status: str | None,
    search: str | None,
    sort_by: str | None,
    descending: bool | None,
    columns: str | None,
    limit: int,
    as_json: bool,
    as_csv: bool,
    out: str | None,
    store_url: str | None,
) -> None:
    """List jobs, newest first, or those a search finds, sorted as asked.

    --sort takes a job field or any column (numbers sort as numbers, jobs without the
    value last); --csv and --json export the rows listed, with every job field.

    \b
        jobtrace jobs list --status failed
        jobtrace jobs list --search 'param.lr>0.01, metric.loss<0.5' --sort metric.loss
        jobtrace jobs list --columns param.lr,metric.loss,tag.team --sort param.lr
        jobtrace jobs list --columns param.lr,metric.loss --csv --out runs.csv
    """
    from jobtrace.runs import parse_columns

    chosen = parse_columns(columns) if columns is not None else []
    export = _export_format(as_json, as_csv, out)
    from jobtrace.store.metrics import JobMetrics

    with open_store(store_url) as store:
        # Latest metrics are read only when a column shows one.
        find = (
            store.find_job_metrics
            if any(column.kind == "metric" for column in chosen)
            else store.find_jobs
        )
        page = find(
            experiment=experiment,
            status=status,
            search=search,
            sort_by=sort_by,
            descending=descending,
            limit=limit,
        )
    runs: list[JobMetrics] = [
        run if isinstance(run, JobMetrics) else JobMetrics(run, []) for run in page.data
    ]
    rows = [run.job for run in runs]
    if export is not None:
        from jobtrace.cli.export import write_runs

        write_runs(runs, chosen, export, out)
        if not page.is_complete:
            click.echo(f"({page.total - len(rows)} more; raise --limit to export them)", err=True)
        return
    from rich.table import Table
    from rich.text import Text

    from jobtrace.runs import column_value

    console = plain_console()
    if not rows:
        console.print(
            "No matching jobs." if experiment or status or search else "No jobs recorded yet."
        )
        return
    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    # Ids and times never wrap: people copy ids, and a wrapped time reads as two rows.
    # Columns that would be empty are left out so the table fits an 80-column terminal;
    # chosen columns take the place of STARTED and PEAK MEM (columns too, if asked for).
    show_experiment = any(r["experiment"] for r in rows)
    show_exit = any(r["exit_code"] not in (None, 0) for r in rows)
    roomy = not chosen
    table.add_column("ID", no_wrap=True, min_width=26)
    table.add_column("NAME", overflow="ellipsis", no_wrap=True, min_width=8)
    if show_experiment:
        table.add_column("EXPERIMENT", overflow="ellipsis", no_wrap=True, min_width=8)
    table.add_column("STATUS", no_wrap=True, min_width=9)
    if roomy:
        table.add_column("STARTED", no_wrap=True, min_width=11)
    table.add_column("DURATION", justify="right", no_wrap=True, min_width=8)
    if roomy:
        table.add_column("PEAK MEM", justify="right", no_wrap=True, min_width=9)
    if show_exit:
        table.add_column("EXIT", justify="right", no_wrap=True)
    for column in chosen:
        table.add_column(
            column.label,
            justify="right",
            overflow="ellipsis",
            no_wrap=True,
            min_width=min(len(column.label), 10),
        )
    for run in runs:
        r = run.job
        cells: list[str | Text] = [Text(r["id"]), Text(r["name"] or "")]
        if show_experiment:
            cells.append(Text(r["experiment"] or ""))
        cells.append(status_text(r["status"]))
        if roomy:
            cells.append(_job_cell("start_time", r["start_time"]))
        cells.append(_job_cell("duration", r["duration"]))
        if roomy:
            cells.append(_job_cell("peak_memory_kb", r["peak_memory_kb"]))
        if show_exit:
            cells.append("" if r["exit_code"] is None else str(r["exit_code"]))
        for column in chosen:
            value = column_value(column, run)
            shown = _job_cell(column.key, value) if column.kind == "field" else cell_text(value)
            cells.append(Text(shown))
        table.add_row(*cells)
    console.print(table)
    if not page.is_complete:
        console.print(f"({page.total - len(rows)} more; raise --limit to see them)")


@jobs.command("show")
@click.argument("job_id")
@json_option
@store_option
@handle_errors
def show_job(job_id: str, as_json: bool, store_url: str | None) -> None:
    """Show every recorded field of one job (JOB_ID may be a unique prefix)."""
    with open_store(store_url) as store:
        row = store.get_job(job_id)
    if row is None:
        fail(f"no job {job_id!r} in {store.safe_url}")
        return
    if as_json:
        print_json(job_json(row))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    display: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "experiment": row["experiment"],
        "status": status_text(row["status"]),
        "started": local_time(row["start_time"]),
        "ended": local_time(row["end_time"]),
        "duration": human_duration(row["duration"]) if row["duration"] is not None else "-",
        "peak memory": f"{human_bytes(row['peak_memory_kb'])} ({row['peak_memory_kb']} KiB)"
        if row["peak_memory_kb"] is not None
        else "-",
        "cpu user/sys": _cpu(row),
        "exit code": row["exit_code"],
        "error": f"{row['error_type']}: {row['error_message']}" if row["error_type"] else None,
        "host / pid": f"{row['host']} / {row['pid']}",
        "argv": " ".join(map(str, row["argv"] or [])),
        "tags": _pairs(row["tags"]),
        "params": _pairs(row["params"]),
        "last heartbeat": local_time(row["last_heartbeat"]),
        "report": row["report_dir"],
        "records lost": _lost(row.get("records_dropped")),
    }
    for key, value in display.items():
        if value is None or value == "":
            continue
        table.add_row(key, value if isinstance(value, Text) else Text(str(value)))
    console = plain_console()
    console.print(table)
    if row.get("traceback"):
        _print_traceback(console, row["traceback"])


def _print_traceback(console: Console, text: str) -> None:
    """A failed job's traceback under its fields: highlighted on a terminal, and as
    stored (lines whole, for grep and copy) anywhere else."""
    console.print()
    from rich.text import Text

    console.print(Text("traceback", style="bold"))
    if not console.is_terminal:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return
    from rich.syntax import Syntax

    syntax = Syntax(text, "pytb", theme="ansi_dark", word_wrap=True, background_color="default")
    console.print(syntax)


def _export_format(as_json: bool, as_csv: bool, out: str | None) -> str | None:
    """``json``, ``csv`` or None (a table), from the flags or else from --out's suffix."""
    if as_json and as_csv:
        fail("choose one of --json and --csv")
    if as_json or as_csv:
        return "json" if as_json else "csv"
    if out is None:
        return None
    suffix = out.rsplit(".", 1)[-1].lower() if "." in out else ""
    if suffix not in {"csv", "json"}:
        fail(f"--out {out}: add --csv or --json (or name a .csv or .json file)")
    return suffix


def _job_cell(field: str, value: Any) -> str:
    """A job field in a table cell: times local, durations and sizes for people."""
    if value is None:
        return "-"
    if field in _TIME_FIELDS:
        return local_time(value, "%m-%d %H:%M")
    if field == "duration":
        return human_duration(value)
    if field == "peak_memory_kb":
        return human_bytes(value)
    return cell_text(value)


def cell_text(value: Any) -> str:
    """A param, tag or metric value in a table cell: numbers shortened, missing ``-``."""
    from jobtrace.cli.metrics import format_value

    if value is None:
        return "-"
    if isinstance(value, float):
        return format_value(value)
    if isinstance(value, str):
        return value
    import orjson

    return orjson.dumps(value).decode()  # true, lists and objects as JSON spells them


def _cpu(row: dict[str, Any]) -> str | None:
    if row["cpu_user"] is None:
        return None
    return f"{row['cpu_user']:.2f} s / {row['cpu_sys']:.2f} s"


def _lost(dropped: dict[str, int] | None) -> Text | None:
    """Records the recorder dropped (its spool was full), in red: the job is incomplete."""
    if not dropped:
        return None
    from rich.text import Text

    counts = ", ".join(f"{kind}: {n}" for kind, n in sorted(dropped.items()))
    return Text(f"{sum(dropped.values())} ({counts}); the spool was full", style="bold red")


def _pairs(values: dict[str, Any] | None) -> str | None:
    if not values:
        return None
    return ", ".join(f"{k}={v}" for k, v in values.items())
