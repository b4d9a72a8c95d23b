"""``jobtrace profile``: a job's wall-time, CPU-time or peak-memory profile as a table of
top functions, folded stacks, a speedscope file or the HTML report.

The profile is read from the store (a database, a jobtrace server's REST API or a
JSON-lines file), so it can be looked at long after the job's process is gone.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from jobtrace.cli._common import fail, handle_errors, plain_console, store_option
from jobtrace.profiles.folded import KINDS, JobProfile, Profile

__all__ = ["load_job", "profile"]


def load_job(store_url: str | None, job_id: str) -> tuple[dict[str, Any], JobProfile]:
    """The job ``job_id`` (a unique prefix will do) and its profile, from any store a
    reader opens (a database, a jobtrace server, a JSON-lines file).

    Raises :class:`~jobtrace.errors.JobNotFoundError` for an unknown job."""
    from jobtrace.cli._common import open_store
    from jobtrace.errors import JobNotFoundError

    with open_store(store_url) as store:
        job = store.get_job(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        return job, store.job_profile(job["id"])


def _formatter(unit: str) -> Any:
    from jobtrace.report.result import human_bytes, human_duration

    def fmt(value: int) -> str:
        if not value:
            return "0"
        if unit == "bytes":
            return human_bytes(value / 1024)
        return human_duration(value / 1e6) if value >= 1e6 else f"{value / 1000:.1f} ms"

    return fmt


def print_table(profile: Profile, limit: int, out: Any = None) -> None:
    """The top functions of ``profile`` by self weight, with totals, as a rich table."""
    from rich.table import Table
    from rich.text import Text

    from jobtrace.report.profile_data import top_functions

    console = plain_console() if out is None else out
    total = profile.total
    fmt = _formatter(profile.unit)
    title = {"wall": "wall time", "cpu": "CPU time", "memory": "memory at the peak"}[profile.kind]
    table = Table(
        title=f"Top functions by self {title} (total {fmt(total)})",
        title_justify="left",
        header_style="bold",
        box=None,
        pad_edge=False,
    )
    table.add_column("SELF", justify="right", no_wrap=True)
    table.add_column("SELF %", justify="right", no_wrap=True)
    table.add_column("TOTAL", justify="right", no_wrap=True)
    table.add_column("TOTAL %", justify="right", no_wrap=True)
    table.add_column("FUNCTION", overflow="fold", ratio=1)
    for row in top_functions(profile, limit):
        table.add_row(
            fmt(row.self_weight),
            f"{100 * row.self_weight / total:.1f}%" if total else "-",
            fmt(row.total),
            f"{100 * row.total / total:.1f}%" if total else "-",
            Text(row.frame),
        )
    console.print(table)


def _write(out: Path | None, text: str, default: str) -> None:
    if out is None and default:
        out = Path(default)
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror}")
    click.echo(f"wrote {out}", err=True)


@click.command()
@click.argument("job_id")
@click.option(
    "--kind",
    "-k",
    type=click.Choice(list(KINDS)),
    default="wall",
    show_default=True,
    help="wall: where the time went, waiting included; cpu: time on a CPU; memory: what "
    "was live at the memory peak.",
)
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["table", "folded", "speedscope", "html"]),
    default="table",
    show_default=True,
    help="table: top functions (self and total); folded: one stack a line, frames root "
    "first joined by ';', then the weight (µs, or bytes for memory); speedscope: a file "
    "https://www.speedscope.app opens; html: the job's report page.",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file [default: stdout for table and folded; "
    "JOB_ID.KIND.speedscope.json or JOB_ID.html in the current directory].",
)
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Rows of the table.",
)
@store_option
@handle_errors
def profile(
    job_id: str, kind: str, fmt: str, out: Path | None, limit: int, store_url: str | None
) -> None:
    """Show where job JOB_ID's time or memory went (a unique id prefix is enough).

    \b
        jobtrace profile <job id>                          # top functions by wall time
        jobtrace profile <job id> --kind memory            # ... by memory at the peak
        jobtrace profile <job id> -f folded > job.folded   # for flamegraph.pl, speedscope
        jobtrace profile <job id> -f speedscope            # writes <job id>.wall.speedscope.json
        jobtrace profile <job id> -f html -o report.html

    Works with a --store on a database or on a jobtrace server (http://…).
    """
    job, job_profile = load_job(store_url, job_id)
    full_id = str(job["id"])
    chosen = job_profile.get(kind)
    if fmt != "html" and not chosen.stacks:
        hint = (
            "it recorded no samples"
            if job_profile.wall.stacks or job_profile.memory.stacks
            else "was it run with profiling off, or is it still running?"
        )
        fail(f"job {full_id} has no {kind} profile ({hint})")
    if fmt == "table":
        if out is None:
            print_table(chosen, limit)
            return
        import io

        from rich.console import Console

        buffer = io.StringIO()
        console = Console(file=buffer, color_system=None, width=160, emoji=False, markup=False)
        print_table(chosen, limit, console)
        _write(out, buffer.getvalue(), "")
    elif fmt == "folded":
        _write(out, chosen.folded(), "")
    elif fmt == "speedscope":
        import orjson

        from jobtrace.report.profile_data import speedscope

        doc = speedscope(job_profile, kind, str(job.get("name") or full_id))
        _write(out, orjson.dumps(doc).decode(), f"{full_id}.{kind}.speedscope.json")
    else:
        from jobtrace.report.profile_html import render_profile_html

        _write(out, render_profile_html(job, job_profile), f"{full_id}.html")
