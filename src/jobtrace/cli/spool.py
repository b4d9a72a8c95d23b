"""``jobtrace spool``: see and deliver what the local spool holds.

The recorder spools records to ``$JOBTRACE_DIR/spool/<one folder per store URL>/`` when its
sink is down or slower than the program, and replays them by itself once the sink is back
(the next process using the same URL replays too). These commands are for a person: what is
waiting, how old it is, and delivering it now, e.g. after a server came back while no job ran.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from jobtrace.cli._common import fail, handle_errors, json_option, plain_console, print_json

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
    rows = [_summary(folder) for folder in _folders(store_url, directory)]
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
    for title in ("store", "files", "records", "size", "oldest", "quarantined", "replaying"):
        table.add_column(title, justify="left" if title == "store" else "right")
    for row in rows:
        age = row["oldest_age_s"]
        table.add_row(
            row["url"],
            str(row["files"]),
            f"{row['records']:,}",
            human_bytes(row["bytes"]),
            "-" if age is None else human_duration(age) + " ago",
            str(row["quarantined"]),
            str(row["claimed"]),
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

    Safe to run while jobs are recording: a file is claimed by one process at a time, and
    every batch keeps its id, so nothing is stored twice. Exits with status 1 if the store
    is still unreachable (the records stay in the spool).

    \b
        jobtrace spool replay
        JOBTRACE_TOKEN=… jobtrace spool replay --store http://jobtrace.internal:8000
    """
    from jobtrace import _config
    from jobtrace._config import mask_url
    from jobtrace.recorder import Recorder
    from jobtrace.spool import Spool

    settings = _config.resolve(url=store_url, directory=directory)
    settings = settings._replace(install_signal_handlers=False, enabled=True)
    queue = Spool(settings.spool_dir, settings.url)
    before = _summary(queue.directory)
    safe_url = mask_url(settings.url)
    if not before["files"]:
        click.echo(f"nothing spooled for {safe_url}")
        return
    problems = _Problems()
    recorder = Recorder(settings)
    logging.getLogger("jobtrace").addHandler(problems)
    try:
        console = plain_console()
        with console.status(
            f"replaying {before['records']:,} records from {before['files']} files into {safe_url}…"
        ):
            recorder.flush(timeout=None)
    finally:
        logging.getLogger("jobtrace").removeHandler(problems)
        recorder.close()
    after = _summary(queue.directory)
    click.echo(f"replayed {recorder.replayed:,} records into {safe_url}")
    if after["quarantined"] > before["quarantined"]:
        click.echo(
            f"quarantined {after['quarantined'] - before['quarantined']} files the store "
            f"will never accept; they are kept in {queue.directory / 'quarantine'}",
            err=True,
        )
    if after["files"]:
        reason = f": {problems.last}" if problems.last else ""
        fail(
            f"{after['files']} files ({after['records']:,} records) are still spooled for "
            f"{safe_url}{reason}; run `jobtrace spool replay` again once it is reachable"
        )


class _Problems(logging.Handler):
    """Keeps the last warning the recorder logged, to end the command with its reason."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage().removeprefix("jobtrace: ")


def _folders(store_url: str | None, directory: str | None) -> Iterator[Path]:
    from jobtrace import _config
    from jobtrace.errors import ConfigurationError
    from jobtrace.spool import Spool

    base = _config.resolve(directory=directory).spool_dir
    if store_url is not None:
        try:
            url = _config.normalize_url(store_url)
        except ConfigurationError as exc:
            fail(str(exc))
        folder = Spool(base, url).directory
        if folder.is_dir():
            yield folder
        return
    try:
        folders = sorted(p for p in base.iterdir() if p.is_dir())
    except FileNotFoundError:
        return
    yield from folders


def _summary(folder: Path) -> dict[str, Any]:
    """What one store URL's spool folder holds (files waiting, being replayed, set aside)."""
    from jobtrace.spool import Spool

    queue = Spool.__new__(Spool)  # read-only view of an existing folder; no URL needed
    queue.directory = folder
    pending = queue.pending()
    claimed = [p for p in _files(folder) if p not in pending and ".claimed-" in p.name]
    url_file = folder / "url.txt"
    url = url_file.read_text().strip() if url_file.exists() else f"? ({folder.name})"
    oldest = min((_spooled_at(p) for p in pending), default=None)
    quarantine = folder / "quarantine"
    return {
        "url": url,
        "directory": str(folder),
        "files": len(pending),
        "records": sum(_count_lines(p) for p in pending),
        "bytes": sum(_size(p) for p in pending),
        "oldest_age_s": None if oldest is None else max(0.0, time.time() - oldest),
        "claimed": len(claimed),
        "quarantined": len(list(_files(quarantine))),
    }


def _files(folder: Path) -> Iterator[Path]:
    try:
        yield from (p for p in folder.iterdir() if p.is_file())
    except FileNotFoundError:
        return


def _spooled_at(path: Path) -> float:
    """When a file was spooled: its name starts with the time in ns (else its mtime)."""
    head = path.name.split("-", 1)[0]
    return int(head) / 1e9 if head.isdigit() else path.stat().st_mtime


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
