"""``jobtrace spool``: see and deliver what the local spool holds.

The recorder spools records to ``$JOBTRACE_DIR/spool/<one folder per store URL>/`` when its
sink is down or slower than the program, and replays them by itself once the sink is back
(the next process using the same URL replays too). These commands are for a person: what is
waiting, how old it is, and delivering it now, e.g. after a server came back while no job ran.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from jobtrace.cli._common import fail, handle_errors, json_option, plain_console, print_json
from jobtrace.spool import QUARANTINE, Spool, spools

dir_option = click.option(
    "--dir",
    "directory",
    metavar="DIR",
    envvar="JOBTRACE_DIR",
    show_envvar=True,
    help="jobtrace's local directory, whose spool/ folder is read [default: ./.jobtrace]",
)


@click.group()
def spool() -> None:
    """Show and replay records spooled to local disk while a store was unreachable."""


@spool.command()
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    help="Only the spool of this store URL (any scheme) [default: every spool under --dir]",
)
@dir_option
@json_option
@handle_errors
def status(store_url: str | None, directory: str | None, as_json: bool) -> None:
    """List spooled records per store URL: files, records, size, age, quarantined files.

    \b
        jobtrace spool status
        jobtrace spool status --store http://jobtrace.internal:8000 --json
    """
    rows = [_summary(queue) for queue in _spools(store_url, directory)]
    if as_json:
        print_json(rows)
        return
    console = plain_console()
    if not rows:
        console.print("the spool is empty")
        return
    from rich.table import Table

    from jobtrace.report.result import human_bytes, human_duration

    table = Table(box=None, header_style="bold", pad_edge=False)
    for title in ("store", "files", "records", "size", "oldest", "by a live job", "quarantined"):
        table.add_column(title, justify="left" if title == "store" else "right")
    for row in rows:
        age = row["oldest_age_s"]
        table.add_row(
            row["url"],
            str(row["files"]),
            f"{row['records']:,}",
            human_bytes(row["bytes"]),
            "-" if age is None else human_duration(age) + " ago",
            str(row["owned"]),
            str(row["quarantined"]),
        )
    console.print(table)


@spool.command()
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    envvar="JOBTRACE_URL",
    show_envvar=True,
    help="Store whose spool is replayed into it: sqlite:///…, postgresql://…, http(s)://…, "
    "file:///… [default: sqlite:///$JOBTRACE_DIR/jobtrace.db]",
)
@dir_option
@handle_errors
def replay(store_url: str | None, directory: str | None) -> None:
    """Deliver the records spooled for a store URL to it now, oldest first.

    Safe to run while jobs are recording: a file is claimed by one process at a time, a
    live job's own files are left to it, and every batch keeps its id, so nothing is
    stored twice. A file the store refuses for good is quarantined. Exits with status 1
    if the store is still unreachable (the records stay in the spool).

    \b
        jobtrace spool replay
        JOBTRACE_TOKEN=… jobtrace spool replay --store http://jobtrace.internal:8000
    """
    from jobtrace import _config
    from jobtrace._config import mask_url
    from jobtrace.errors import one_line
    from jobtrace.sinks import open_sink, write_batch
    from jobtrace.spool import Spool

    settings = _config.resolve(url=store_url, directory=directory)
    queue = Spool(settings.spool_dir, settings.url)
    before = _summary(queue)
    safe_url = mask_url(settings.url)
    if not before["files"]:
        click.echo(f"nothing spooled for {safe_url}")
        return
    delivered = quarantined = 0
    problem = None
    with plain_console().status(
        f"replaying {before['records']:,} records from {before['files']} files into {safe_url}…"
    ):
        try:
            sink = open_sink(settings.url)
            try:
                delivered, quarantined = queue.replay(
                    lambda records, batch_id: write_batch(sink, records, batch_id)
                )
            finally:
                sink.close()
        except Exception as exc:  # the store is down or refuses: the files stay spooled
            problem = one_line(exc)
    click.echo(f"replayed {delivered:,} records into {safe_url}")
    if quarantined:
        click.echo(
            f"quarantined {quarantined} files the store will never accept; they are kept "
            f"in {queue.directory / QUARANTINE}",
            err=True,
        )
    after = _summary(queue)
    if after["owned"]:
        click.echo(
            f"left {after['owned']} files to the running jobs that spooled them "
            "(they deliver them themselves)"
        )
    if after["files"] > after["owned"]:
        left = after["files"] - after["owned"]
        fail(
            f"{left} files ({after['records'] - after['owned_records']:,} records) are still "
            f"spooled for {safe_url}{': ' + problem if problem else ''}; run "
            "`jobtrace spool replay` again once it is reachable"
        )


def _spools(store_url: str | None, directory: str | None) -> list[Spool]:
    from jobtrace import _config

    base = _config.resolve(directory=directory).spool_dir
    if store_url is None:
        return spools(base)
    queue = Spool(base, _config.normalize_url(store_url))
    return [queue] if queue.directory.is_dir() else []


def _summary(queue: Spool) -> dict[str, Any]:
    """What one store URL's spool holds: files waiting, owned by a live job, set aside."""
    from jobtrace._config import mask_url

    files = queue.files()
    waiting = [f for f in files if f.state != "quarantined"]
    oldest = min((_spooled_at(f.path) for f in waiting), default=None)
    return {
        "url": mask_url(queue.url),
        "directory": str(queue.directory),
        "files": len(waiting),
        "records": sum(f.records or 0 for f in waiting),
        "bytes": sum(f.size for f in waiting),
        "oldest_age_s": None if oldest is None else max(0.0, time.time() - oldest),
        "owned": sum(f.state == "owned" for f in files),
        "owned_records": sum(f.records or 0 for f in files if f.state == "owned"),
        "quarantined": sum(f.state == "quarantined" for f in files),
    }


def _spooled_at(path: Path) -> float:
    """When a file was spooled: its name starts with the time in ns (else its mtime)."""
    head = path.name.split("-", 1)[0]
    try:
        return int(head) / 1e9 if head.isdigit() else path.stat().st_mtime
    except FileNotFoundError:  # replayed meanwhile
        return time.time()
