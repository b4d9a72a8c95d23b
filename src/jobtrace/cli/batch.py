"""``jobtrace batch``: the summary and the items of a recorded batch, read from the store."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.text import Text

    from jobtrace.batch.summary import BatchSummary
    from jobtrace.store.reader import Reader

from jobtrace.cli._common import (
    fail,
    handle_errors,
    json_option,
    open_store,
    plain_console,
    print_json,
    store_option,
)
from jobtrace.cli.jobs import status_text
from jobtrace.model import ITEM_STATUSES
from jobtrace.report.result import human_bytes, human_duration
from jobtrace.report.traces import format_ms

ITEM_STATUS_STYLE = {"success": "green", "error": "bold red", "skipped": "yellow"}
#: Items the table shows when --limit is not given (JSON and CSV give them all).
TABLE_ROWS = 50

csv_option = click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")


@click.group()
def batch() -> None:
    """Run a command over files as a batch; show the summary and items of recorded batches.

    \b
        jobtrace batch run -w 4 -c 'gzip -k {}' logs/*.log
        jobtrace batch stats <batch id>
        jobtrace batch items <batch id> --status error
    """


def _resolve(store: Reader, batch_id: str) -> str:
    full_id = store.resolve_batch_id(batch_id)
    if full_id is None:
        fail(f"no batch {batch_id!r} in {store.safe_url}")
    assert full_id is not None
    return full_id


def _one_format(as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other")


@batch.command("stats")
@click.argument("batch_id")
@json_option
@csv_option
@store_option
@handle_errors
def stats(batch_id: str, as_json: bool, as_csv: bool, store_url: str | None) -> None:
    """Show the summary of one batch (BATCH_ID may be a unique prefix): counts, timing per
    file, throughput and errors by type, computed in the store."""
    _one_format(as_json, as_csv)
    with open_store(store_url) as store:
        summary = store.batch_summary(batch_id)
        if summary is None:
            fail(f"no batch {batch_id!r} in {store.safe_url}")
            return
        job = store.get_job(summary.batch_id)
    data = summary.to_dict()
    if as_json:
        print_json(data)
        return
    if as_csv:
        import csv

        from jobtrace.batch.summary import summary_row

        row = summary_row(data)
        writer = csv.DictWriter(sys.stdout, fieldnames=list(row), lineterminator="\n")
        writer.writeheader()
        writer.writerow(row)
        return
    _print_summary(summary, job)


def _seconds(value: float) -> str:
    return human_duration(value) if value >= 60 else format_ms(value * 1000)


def _rate(value: float, unit: str) -> str:
    return f"{value:,.1f} {unit}/s" if value < 100 else f"{value:,.0f} {unit}/s"


def _print_summary(summary: BatchSummary, job: dict[str, Any] | None) -> None:
    from rich.table import Table
    from rich.text import Text

    t, tp, errors = summary.timing, summary.throughput, summary.errors
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [("batch", Text(summary.batch_id))]
    if job is not None:
        rows += [("name", Text(job["name"] or "")), ("status", status_text(job["status"]))]
    rows += [
        (
            "files",
            f"{summary.total_files} in all: {summary.processed_count} processed, "
            f"{summary.error_count} failed, {summary.skip_count} skipped "
            f"({summary.success_rate * 100:.2f} % succeeded)",
        ),
        ("total time", _seconds(t.total_duration)),
        (
            "per file",
            f"mean {_seconds(t.average_per_file)}, median {_seconds(t.median_per_file)}, "
            f"min {_seconds(t.min_per_file)}, max {_seconds(t.max_per_file)}, "
            f"stddev {_seconds(t.stddev_per_file)}",
        ),
        (
            "throughput",
            ", ".join(
                [
                    _rate(tp.files_per_second, "files"),
                    _rate(tp.samples_per_second, "samples"),
                    _rate(tp.measurements_per_second, "measurements"),
                    f"{human_bytes(tp.bytes_per_second / 1024)}/s",
                ]
            ),
        ),
        ("errors", f"{errors.total} ({errors.rate * 100:.2f} % of files)"),
    ]
    rows += [(f"  {name}", Text(str(count))) for name, count in errors.by_type.items()]
    rows += [("started", summary.start_time or "-"), ("ended", summary.end_time or "-")]
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else Text(value))
    plain_console().print(table)


@batch.command("items")
@click.argument("batch_id")
@click.option(
    "--status", "-s", type=click.Choice(ITEM_STATUSES), help="Only items with this status."
)
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1),
    help=f"Show at most this many items [default: {TABLE_ROWS} in a table, all as JSON or CSV].",
)
@json_option
@csv_option
@store_option
@handle_errors
def items(
    batch_id: str,
    status: str | None,
    limit: int | None,
    as_json: bool,
    as_csv: bool,
    store_url: str | None,
) -> None:
    """List the items (files) of one batch in the order they were recorded."""
    from jobtrace.batch.summary import file_metrics, write_file_metrics_csv

    _one_format(as_json, as_csv)
    if limit is None and not (as_json or as_csv):
        limit = TABLE_ROWS
    with open_store(store_url) as store:
        full_id = _resolve(store, batch_id)
        if as_csv and limit is None:
            # Every item of a batch of any size: streamed from the store a page at a time.
            streamed = store.iter_items(full_id, status=status)
            write_file_metrics_csv(map(file_metrics, streamed), sys.stdout)
            return
        rows = store.list_items(full_id, status=status, limit=limit)
        more = store.count_items(full_id, status=status) - len(rows) if limit else 0
    if as_json:
        print_json([{"id": r["id"], **file_metrics(r)} for r in rows])
        return
    if as_csv:
        write_file_metrics_csv(map(file_metrics, rows), sys.stdout)
        return
    _print_items(rows, more, status)


def _print_items(rows: list[dict[str, Any]], more: int, status: str | None) -> None:
    from rich.table import Table
    from rich.text import Text

    console = plain_console()
    if not rows:
        console.print(f"No {status} items in this batch." if status else "No items in this batch.")
        return
    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    table.add_column("FILE", overflow="ellipsis", no_wrap=True, min_width=12, ratio=2)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("DURATION", justify="right", no_wrap=True)
    table.add_column("SAMPLES", justify="right", no_wrap=True)
    table.add_column("BYTES", justify="right", no_wrap=True)
    table.add_column("PEAK MEM", justify="right", no_wrap=True)
    table.add_column("ERROR / REASON", overflow="ellipsis", no_wrap=True, ratio=3)
    for r in rows:
        reason = r["error_message"] or ""
        if r["error_type"]:
            reason = f"{r['error_type']}: {reason}"
        peak = r["memory_peak_kb"]
        table.add_row(
            Text(r["name"]),
            Text(r["status"], style=ITEM_STATUS_STYLE.get(r["status"], "")),
            _seconds(r["duration"]),
            str(r["samples"] or 0),
            human_bytes((r["bytes"] or 0) / 1024),
            "-" if peak is None else human_bytes(peak),
            Text(reason),
        )
    console.print(table)
    if more > 0:
        console.print(f"… and {more} more (--limit N to show more, --json or --csv for all)")


@batch.command("run")
@click.option(
    "--command",
    "-c",
    "command",
    required=True,
    metavar="COMMAND",
    help="Command to run for each file, split like a shell would; {} stands for the file "
    "(appended when no argument holds {}).",
)
@click.option(
    "--files-from",
    type=click.File("r"),
    metavar="PATH",
    help="Read more files from PATH, one per line ('-': standard input).",
)
@click.option(
    "--workers", "-w", type=click.IntRange(min=1), default=4, show_default=True,
    help="Commands running at once.",
)  # fmt: skip
@click.option("--name", metavar="NAME", help="Batch (job) name [default: the command's name].")
@click.option("--batch-id", metavar="ID", help="Batch id [default: a new time-ordered id].")
@click.option(
    "--experiment",
    "-e",
    metavar="NAME",
    envvar="JOBTRACE_EXPERIMENT",
    help="Experiment the batch's job belongs to.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress and no summary line.")
@store_option
@click.argument("files", nargs=-1, metavar="[FILE]...")
@handle_errors
def run(
    *,
    command: str,
    files_from: IO[str] | None,
    workers: int,
    name: str | None,
    batch_id: str | None,
    experiment: str | None,
    quiet: bool,
    store_url: str | None,
    files: tuple[str, ...],
) -> None:
    """Run COMMAND once per FILE as a recorded batch, WORKERS at a time.

    Each file is an item: its duration, the command's own memory peak, the file's size,
    and for a non-zero exit the status and the last line of stderr. The commands' standard
    output is discarded. Exits with status 1 when any file failed.

    \b
    Examples:
        jobtrace batch run -w 4 -c 'gzip -k {}' logs/*.log
        find data -name '*.csv' | jobtrace batch run -c 'python check.py {}' --files-from -
    """
    import shlex
    import shutil

    import jobtrace.batch
    from jobtrace import _config
    from jobtrace.batch.command import run_command

    try:
        template = shlex.split(command)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--command") from None
    if not template:
        raise click.BadParameter("the command is empty", param_hint="--command")
    if shutil.which(template[0]) is None:
        fail(f"command not found: {template[0]}", 2)
    paths = list(files)
    if files_from is not None:
        paths += [line.rstrip("\n") for line in files_from if line.strip()]
    if not paths:
        fail("no files given (as arguments or with --files-from)", 2)
    _config.configure(url=store_url)
    results = jobtrace.batch.map(
        functools.partial(run_command, template),
        paths,
        workers=workers,
        name=name or Path(template[0]).name,
        batch_id=batch_id,
        experiment=experiment,
        progress=False if quiet else None,
    )
    if not quiet:
        s = results.summary()
        click.echo(
            f"jobtrace: batch {results.batch_id}: {s.processed_count} of {s.total_files} files "
            f"succeeded, {s.error_count} failed; jobtrace batch stats {results.batch_id}",
            err=True,
        )
    from jobtrace.recorder import get_recorder

    get_recorder().flush()  # bounded by JOBTRACE_FLUSH_TIMEOUT
    sys.exit(1 if results.failures else 0)
