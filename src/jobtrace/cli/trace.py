"""``jobtrace trace``: list recorded traces and show one as a tree, JSON, HTML or DOT."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

from jobtrace.cli._common import (
    fail,
    handle_errors,
    json_option,
    open_store,
    plain_console,
    print_json,
    store_option,
)
from jobtrace.report.traces import format_ms, iso_utc, trace_json

#: ``--connection-string URI``: OSProfiler's CLI spells the store option so.
connection_string_option = click.option(
    "--connection-string",
    "connection_string",
    metavar="URI",
    help="OSProfiler's name for --store (its `trace` commands spell it so); give one of them.",
)


def _store_or_connection_string(store_url: str | None, connection_string: str | None) -> str | None:
    """The store to read: --connection-string, unless --store was given too (an error)."""
    if connection_string is None:
        return store_url
    source = click.get_current_context().get_parameter_source("store_url")
    if store_url is not None and source is not click.core.ParameterSource.ENVIRONMENT:
        raise click.UsageError("give --store or --connection-string, not both")
    return connection_string


#: The widest the service column of ``trace list`` gets (longer names end in an ellipsis).
SERVICE_WIDTH = 20

#: The terminal view lists at most this many span names in its statistics table.
STATS_ROWS = 20


def _local(epoch_ns: int) -> datetime:
    return datetime.fromtimestamp(epoch_ns / 1e9).astimezone()


def _file_console(file: io.StringIO) -> Console:
    """A console writing plain text (no colours, fixed width) for --out files."""
    from rich.console import Console

    return Console(
        file=file, emoji=False, highlight=False, markup=False, color_system=None, width=120
    )


def summary_json(row: dict[str, Any]) -> dict[str, Any]:
    """A trace summary for JSON output: the start as ISO 8601 UTC, the duration in ms."""
    return {
        "trace_id": row["trace_id"],
        "name": row["name"],
        "service": row.get("service"),
        "job_id": row["job_id"],
        "start": iso_utc(row["start_ns"]),
        "start_ns": row["start_ns"],
        "duration_ms": row["duration_ns"] / 1e6,
        "spans": row["spans"],
        "errors": row["errors"],
        "dropped_spans": row["dropped_spans"],
    }


@click.group()
def trace() -> None:
    """List recorded traces and show one as a tree, JSON, HTML or a Graphviz graph.

    \b
        jobtrace trace list --job <job id>
        jobtrace trace list --service api --name 'db.*' --min-duration 250ms --since 1h
        jobtrace trace show <trace id>
        jobtrace trace show <trace id> --html --out trace.html
    """


@trace.command("list")
@click.option("--service", "-s", metavar="NAME", help="A span ran in this service.")
@click.option(
    "--name",
    metavar="GLOB",
    help="A span's name matches this glob (* any text, ? one character; case-sensitive).",
)
@click.option(
    "--min-duration", metavar="DURATION", help="A span took at least this long: 250ms, 1.5s, 2m."
)
@click.option(
    "--max-duration", metavar="DURATION", help="A span took at most this long: 250ms, 1.5s, 2m."
)
@click.option("--error", "-e", is_flag=True, help="A span ended with an error.")
@click.option(
    "--since",
    metavar="TIME",
    help="A span started at or after TIME: ISO 8601 (2026-12-07T10:00, local unless it "
    "has an offset) or a time ago (30m, 1h, 2d).",
)
@click.option("--until", metavar="TIME", help="A span started at or before TIME (as --since).")
@click.option("--job", "-j", "job_id", metavar="ID", help="A span belongs to this job.")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Show at most this many traces.",
)
@json_option
@store_option
@connection_string_option
@handle_errors
def list_traces(
    service: str | None,
    name: str | None,
    min_duration: str | None,
    max_duration: str | None,
    error: bool,
    since: str | None,
    until: str | None,
    job_id: str | None,
    limit: int,
    as_json: bool,
    store_url: str | None,
    connection_string: str | None,
) -> None:
    """List traces, newest first; search them as Jaeger's search form does.

    A trace is listed when one of its spans meets every condition given: --service api
    --name 'db.*' --min-duration 250ms lists traces with a db span of the api service that
    took 250 ms or more. Each row shows the trace id, the start time, the total duration,
    how many spans were recorded and how many failed, its root span's service and name,
    and the job.
    """
    from jobtrace.store.trace_search import TraceSearch

    search = TraceSearch.parse(
        service=service,
        name=name,
        min_duration=min_duration,
        max_duration=max_duration,
        error=error,
        since=since,
        until=until,
        job_id=job_id,
    )
    store_url = _store_or_connection_string(store_url, connection_string)
    with open_store(store_url) as store:
        rows = store.list_traces(search=search, limit=limit)
    if as_json:
        print_json([summary_json(r) for r in rows])
        return
    from rich.table import Table
    from rich.text import Text

    console = plain_console()
    if not rows:
        console.print("No matching traces." if search else "No traces recorded yet.")
        return
    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    # Ids never wrap (people copy them). The fixed-width columns come first and the names
    # last, so a narrow terminal folds names instead of losing columns.
    today = datetime.now().astimezone().date()
    recent = all(_local(r["start_ns"]).date() == today for r in rows)
    table.add_column("TRACE ID", no_wrap=True, min_width=32)
    table.add_column("STARTED", no_wrap=True)
    table.add_column("DURATION", justify="right", no_wrap=True)
    table.add_column("SPANS", justify="right", no_wrap=True)
    table.add_column("ERRORS", justify="right", no_wrap=True)
    # The root span's service: short names (a process's role), cut rather than wrapped.
    service_width = min(SERVICE_WIDTH, max(len(r.get("service") or "-") for r in rows))
    table.add_column("SERVICE", overflow="ellipsis", no_wrap=True, max_width=SERVICE_WIDTH)
    table.add_column("ROOT", overflow="ellipsis", no_wrap=True, min_width=8, ratio=1)
    # The job column is redundant under --job, and left out (with a note) when the
    # terminal leaves too little room for both names and jobs to stay readable.
    fixed = 32 + (8 if recent else 11) + 8 + 8 + 6 + 6 + max(service_width, 7) + 1
    has_jobs = job_id is None and any(r["job_id"] for r in rows)
    show_job = has_jobs and console.width - fixed >= 2 * 12
    if show_job:
        table.add_column("JOB", overflow="ellipsis", no_wrap=True, min_width=8, ratio=1)
    for r in rows:
        errors = r["errors"]
        spans = Text(str(r["spans"]))
        if r["dropped_spans"]:
            spans.append(f" (+{r['dropped_spans']})", style="yellow")
        cells: list[str | Text] = [
            Text(r["trace_id"]),
            _local(r["start_ns"]).strftime("%H:%M:%S" if recent else "%m-%d %H:%M"),
            format_ms(r["duration_ns"] / 1e6),
            spans,
            Text(str(errors), style="bold red") if errors else "0",
            Text(r.get("service") or "-"),
            Text(r["name"]),
        ]
        if show_job:
            cells.append(Text(r["job_id"] or "-"))
        table.add_row(*cells)
    console.print(table)
    notes = []
    if any(r["dropped_spans"] for r in rows):
        notes.append("(+N): spans dropped by the per-trace cap")
    if has_jobs and not show_job:
        notes.append("jobs left out: the terminal is too narrow (see --json)")
    for note in notes:
        console.print(Text(note, style="dim"))


@trace.command("show")
@click.argument("trace_id")
@click.option("--json", "as_json", is_flag=True, help="Print the trace report as JSON.")
@click.option("--html", "as_html", is_flag=True, help="Write a self-contained HTML page.")
@click.option("--dot", "as_dot", is_flag=True, help="Write the call tree as a Graphviz graph.")
@click.option(
    "--osprofiler",
    is_flag=True,
    help="Print OSProfiler start/stop notifications (JSON) instead of the report.",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to FILE instead of standard output.",
)
@store_option
@connection_string_option
@handle_errors
def show_trace(
    trace_id: str,
    as_json: bool,
    as_html: bool,
    as_dot: bool,
    osprofiler: bool,
    out: Path | None,
    store_url: str | None,
    connection_string: str | None,
) -> None:
    """Show one trace as a tree, JSON, HTML or DOT.

    TRACE_ID may be a unique prefix of the id. By default the terminal shows the call
    tree with each span's time (inclusive, self, and start offset) and per-name
    statistics. --json prints the report (spans in tree order with times in ms, and
    per-name count, total, self, min, p50, p95, max); --html writes one page with a
    waterfall that works offline; --dot writes the call tree for `dot -Tsvg`;
    --osprofiler prints the spans as OSProfiler start/stop notifications. --out writes
    any of them to a file.

    TRACE_ID may also be an OSProfiler base id (a UUID with its dashes, or any text given
    to profiler.init), found as the OSProfiler layer stored it.
    """
    formats = (("--json", as_json), ("--html", as_html), ("--dot", as_dot))
    chosen = [name for name, on in formats if on]
    if len(chosen) > 1:
        raise click.UsageError(f"choose one output format, not {' and '.join(chosen)}")
    if osprofiler and (as_html or as_dot):
        raise click.UsageError("--osprofiler prints JSON; it cannot go with --html or --dot")
    store_url = _store_or_connection_string(store_url, connection_string)
    with open_store(store_url) as store:
        from jobtrace.compat.osprofiler.profiler import trace_id_for

        # An OSProfiler base id (a UUID, or text hashed to a trace id) is tried first as a
        # whole id, so that a short base id never resolves as the prefix of another trace.
        mapped = trace_id_for(trace_id)
        spans = store.get_trace(mapped) if mapped != trace_id.lower() else None
        if spans is None:
            spans = store.get_trace(trace_id)
    if spans is None:
        fail(f"no trace {trace_id!r} in {store.safe_url}")
        return
    if osprofiler:
        from jobtrace.report.traces import osprofiler_messages

        _emit_json(osprofiler_messages(spans), out, "OSProfiler notifications")
        return
    report = trace_json(spans)
    if as_json:
        _emit_json(report, out, "JSON report")
    elif as_html:
        from jobtrace.report.html import render_trace_html

        _emit_text(render_trace_html(report), out, "HTML report")
    elif as_dot:
        from jobtrace.report.dot import render_trace_dot

        _emit_text(render_trace_dot(report), out, "DOT graph")
    elif out is None:
        _print_tree(report, plain_console())
    else:
        buffer = io.StringIO()
        _print_tree(report, _file_console(buffer))
        _emit_text(buffer.getvalue(), out, "trace tree")


def _emit_json(data: Any, out: Path | None, what: str) -> None:
    if out is None:
        print_json(data)
        return
    import orjson

    text = orjson.dumps(data, default=repr, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    _emit_text(text.decode("utf-8") + "\n", out, what)


def _emit_text(text: str, out: Path | None, what: str) -> None:
    if out is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    click.echo(f"Wrote the {what} to {out}")


def _span_label(span: dict[str, Any], service: str | None) -> Text:
    """A span's line in the tree; ``service``, when given, is shown before its name (at
    roots and where a span's service differs from its parent's, as Jaeger marks them)."""
    from rich.text import Text

    failed = bool(span["error_type"])
    label = Text()
    if service:
        label.append(f"[{service}] ", style="magenta")
    label.append(span["name"], style="bold red" if failed else "bold")
    label.append(f"  {format_ms(span['duration_ms'])}", style="cyan")
    details = [f"+{format_ms(span['offset_ms'])}"]
    if span["child_count"]:
        details.insert(0, f"self {format_ms(span['self_ms'])}")
    label.append(f"  ({', '.join(details)})", style="dim")
    if span["depth"] == 0 and span["parent_id"] is not None:
        label.append(f"  parent {span['parent_id']} not in this trace", style="yellow")
    if failed:
        message = span["error_message"]
        label.append(f"  {span['error_type']}" + (f": {message}" if message else ""), style="red")
    return label


def _print_tree(report: dict[str, Any], console: Console) -> None:
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

    header = Text()
    header.append(report["name"], style="bold")
    header.append(f"  trace {report['trace_id']}", style="dim")
    facts = [
        f"started {_local(report['start_ns']):%Y-%m-%d %H:%M:%S}",
        f"duration {format_ms(report['duration_ms'])}",
        f"{report['span_count']} span{'s' if report['span_count'] != 1 else ''}",
    ]
    if report["job_id"]:
        facts.insert(0, f"job {report['job_id']}")
    if report.get("services"):
        names = report["services"]
        facts.insert(0, f"service{'s' if len(names) != 1 else ''} {', '.join(names)}")
    console.print(header)
    console.print(Text(" · ".join(facts), style="dim"))
    if report["error_count"]:
        errors = report["error_count"]
        console.print(Text(f"{errors} span{'s' if errors != 1 else ''} failed", style="bold red"))
    if report["dropped_spans"]:
        console.print(
            Text(f"{report['dropped_spans']} spans dropped by the per-trace cap", style="yellow")
        )
    console.print()
    # Spans come in pre-order with depths: a stack of open tree nodes rebuilds the nesting
    # without recursion.
    forest = Tree(Text("spans", style="dim"), hide_root=True, guide_style="dim")
    stack: list[Tree] = [forest]
    services: list[str | None] = [None]  # the service of each open node, as `stack`
    for span in report["spans"]:
        del stack[span["depth"] + 1 :]
        del services[span["depth"] + 1 :]
        service = span.get("service")
        shown = service if service != services[-1] or span["depth"] == 0 else None
        stack.append(stack[-1].add(_span_label(span, shown)))
        services.append(service)
    console.print(forest)
    stats = report["stats"]
    if not stats:
        return
    table = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
    table.add_column("NAME", overflow="ellipsis", no_wrap=True)
    for column in ("COUNT", "ERRORS", "TOTAL", "SELF", "MIN", "P50", "P95", "MAX"):
        table.add_column(column, justify="right", no_wrap=True)
    for stat in stats[:STATS_ROWS]:
        errors = stat["errors"]
        table.add_row(
            Text(stat["name"]),
            str(stat["count"]),
            Text(str(errors), style="bold red") if errors else "0",
            *(format_ms(stat[key]) for key in ("total_ms", "self_ms", "min_ms", "p50_ms")),
            *(format_ms(stat[key]) for key in ("p95_ms", "max_ms")),
        )
    console.print()
    console.print(table)
    if len(stats) > STATS_ROWS:
        more = len(stats) - STATS_ROWS
        console.print(Text(f"… and {more} more names (see --json or --html)", style="dim"))
