"""``jobtrace doctor``: what this installation is and whether it can record.

One screen a person can paste into a bug report: versions, whether the compiled hot paths
are in use (and why not), the store URL in effect and whether it answers, what the local
spool holds, and which optional extras are installed.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from jobtrace.cli._common import (
    handle_errors,
    json_option,
    plain_console,
    print_json,
    record_store_option,
)

#: Optional extras (pyproject.toml) and a module that tells whether each is installed.
EXTRAS: dict[str, tuple[str, ...]] = {
    "postgresql": ("psycopg",),
    "rabbitmq": ("pika",),
    "server": ("fastapi", "uvicorn"),
    "web": ("requests", "httpx"),
    "prometheus": ("prometheus_client",),
    "memray": ("memray",),
    "oslo": ("oslo_config",),
}


def _installed(modules: tuple[str, ...]) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _check_store(url: str) -> tuple[bool, str]:
    """(reachable, what was found) for a store URL, in at most a few seconds."""
    scheme = url.split("://", 1)[0].lower()
    started = time.perf_counter()
    try:
        if scheme in {"http", "https"}:
            from jobtrace.client import Client

            with Client(url, timeout=5.0) as client:
                health = client.health()
            detail = f"server answers ({health.get('status', 'ok')})"
        elif scheme in {"amqp", "amqps"}:
            from jobtrace import amqp

            target = amqp.parse_url(url)
            with amqp.quiet_pika():
                connection, channel = amqp.open_channel(target.parameters, (target.queue,))
                try:
                    depth = channel.queue_declare(queue=target.queue, durable=True)
                finally:
                    amqp.close_quietly(connection)
            waiting = depth.method.message_count
            detail = f"RabbitMQ answers; queue {target.queue!r} holds {waiting:,} message(s)"
        elif scheme == "memory":
            return True, "in-process memory sink (nothing is kept after exit)"
        elif scheme == "file":
            from jobtrace.sinks.file import FileSink  # noqa: F401  (the scheme is known)

            return True, "JSON-lines file sink"
        else:
            from jobtrace.store import Store
            from jobtrace.store.migrate import current_revision
            from jobtrace.store.versions import HEAD

            # migrate=False: looking must not change the store (a reader migrates it).
            with Store(url, create=False, migrate=False) as store:
                with store.engine.connect() as conn:
                    revision = current_revision(conn)
                if revision != HEAD:
                    found = "empty" if revision is None else f"at revision {revision}"
                    detail = f"store opens, schema {found} (this jobtrace: {HEAD}; "
                    detail += "jobtrace db upgrade brings it up to date)"
                else:
                    jobs = store.find_jobs(limit=1).total
                    detail = f"store opens, schema current, {jobs:,} job(s)"
    except Exception as exc:  # every failure is the answer here
        if scheme in {"amqp", "amqps"}:
            from jobtrace.amqp import describe

            return False, describe(exc)
        text = str(exc).strip().splitlines()
        return False, text[0] if text else type(exc).__name__
    return True, f"{detail} in {(time.perf_counter() - started) * 1000:.0f} ms"


def diagnose(store_url: str | None) -> dict[str, Any]:
    """Everything ``jobtrace doctor`` reports, as data."""
    from jobtrace import __version__, _config
    from jobtrace.cli.spool import _summary
    from jobtrace.spool import spools

    compiled = {name: _config.load_extension(name) for name in ("_speedups", "_memtrack")}
    settings = _config.resolve(url=store_url)
    reachable, store_detail = _check_store(settings.url)
    queues = [_summary(queue) for queue in spools(settings.spool_dir)]
    return {
        "version": __version__,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(terse=True),
        "executable": sys.executable,
        "speedups": _compiled(compiled["_speedups"], "_speedups"),
        "memory_tracker": _compiled(compiled["_memtrack"], "_memtrack"),
        "store": {
            "url": _config.mask_url(settings.url),
            "reachable": reachable,
            "detail": store_detail,
        },
        "directory": str(settings.directory),
        "spool": {
            "records": sum(q["records"] for q in queues),
            "files": sum(q["files"] for q in queues),
            "quarantined": sum(q["quarantined"] for q in queues),
            "stores": [q["url"] for q in queues if q["files"] or q["quarantined"]],
        },
        "extras": {name: _installed(modules) for name, modules in EXTRAS.items()},
    }


def _compiled(module: ModuleType | None, name: str) -> dict[str, Any]:
    from jobtrace import _config

    if module is None:
        return {"in_use": False, "detail": _config.extension_problems.get(name, "not loaded")}
    return {"in_use": True, "detail": f"compiled ({Path(module.__file__ or '').name})"}


@click.command()
@record_store_option
@json_option
@handle_errors
def doctor(store_url: str | None, as_json: bool) -> None:
    """Show the version, whether the compiled speedups and memory tracker are in use, the
    store in effect and whether it answers, the spool, and the optional extras installed.

    Exits 1 when the store does not answer, so scripts can check a set-up with it.

    \b
        jobtrace doctor
        jobtrace doctor --store http://jobtrace.internal:8000 --json
    """
    report = diagnose(store_url)
    if as_json:
        print_json(report)
    else:
        _print(report)
    if not report["store"]["reachable"]:
        sys.exit(1)


def _print(report: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    console = plain_console()
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")

    def mark(ok: bool, text: str) -> Text:
        return Text(("ok    " if ok else "NO    ") + text, style="" if ok else "red")

    speedups, store, spool = report["speedups"], report["store"], report["spool"]
    table.add_row("jobtrace", report["version"])
    table.add_row("python", f"{report['python']} ({report['executable']})")
    table.add_row("platform", report["platform"])
    table.add_row("speedups", mark(speedups["in_use"], str(speedups["detail"])))
    tracker = report["memory_tracker"]
    table.add_row("memory tracker", mark(tracker["in_use"], str(tracker["detail"])))
    table.add_row("store", Text(store["url"]))
    table.add_row("", mark(store["reachable"], store["detail"]))
    table.add_row("directory", Text(report["directory"]))
    waiting = f"{spool['records']:,} record(s) in {spool['files']} file(s) waiting"
    if spool["quarantined"]:
        waiting += f", {spool['quarantined']} quarantined"
    if spool["stores"]:
        waiting += " (jobtrace spool status shows them)"
    table.add_row("spool", mark(not spool["quarantined"], waiting))
    extras = ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in report["extras"].items())
    table.add_row("extras", extras)
    console.print(table)
