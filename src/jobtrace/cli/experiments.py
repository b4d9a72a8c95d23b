"""``jobtrace experiments``: list experiments with their job counts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from jobtrace.cli._common import (
    handle_errors,
    json_option,
    open_store,
    plain_console,
    print_json,
    store_option,
)
from jobtrace.cli.jobs import local_time
from jobtrace.wire import experiment_out

if TYPE_CHECKING:
    from jobtrace.store.experiments import Experiment


def experiment_json(experiment: Experiment) -> dict[str, Any]:
    """An experiment as JSON: the API's form (creation time as ISO-8601) without its ``id``,
    which is the name again."""
    out = experiment_out(experiment)
    del out["id"]
    return out


@click.group()
def experiments() -> None:
    """List experiments (named groups of jobs)."""


@experiments.command("list")
@click.option(
    "--search",
    "-s",
    metavar="TEXT",
    help="Only experiments matching TEXT, e.g. 'name:resnet*' or 'job_count>10'.",
)
@click.option(
    "--sort",
    "sort_by",
    type=click.Choice(["name", "created_at", "job_count"]),
    help="Sort field  [default: newest first]",
)
@click.option("--desc", "descending", is_flag=True, default=None, help="Sort descending.")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Experiments shown.",
)
@json_option
@store_option
@handle_errors
def list_experiments(
    search: str | None,
    sort_by: str | None,
    descending: bool | None,
    limit: int,
    as_json: bool,
    store_url: str | None,
) -> None:
    """List experiments with how many jobs each holds, newest first.

    \b
        jobtrace experiments list
        jobtrace experiments list --search 'name:resnet*' --sort job_count --desc
    """
    with open_store(store_url) as store:
        page = store.find_experiments(
            search=search, sort_by=sort_by, descending=descending, limit=limit
        )
    if as_json:
        print_json([experiment_json(e) for e in page.data])
        return
    from rich.table import Table
    from rich.text import Text

    console = plain_console()
    if not page.data:
        console.print("No matching experiments." if search else "No experiments recorded yet.")
        return
    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    table.add_column("EXPERIMENT", overflow="ellipsis", no_wrap=True, min_width=10)
    table.add_column("JOBS", justify="right", no_wrap=True)
    table.add_column("CREATED", no_wrap=True)
    table.add_column("DESCRIPTION", overflow="ellipsis", no_wrap=True)
    for e in page.data:
        table.add_row(
            Text(e.name),
            str(e.job_count),
            local_time(e.created_at, "%Y-%m-%d %H:%M"),
            Text(e.description or ""),
        )
    console.print(table)
    if not page.is_complete:
        console.print(f"({page.total - len(page.data)} more; raise --limit to see them)")
