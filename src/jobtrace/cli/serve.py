"""``jobtrace serve``: the REST API over a store, under uvicorn."""

from __future__ import annotations

import os

import click

from jobtrace.cli._common import fail, handle_errors, store_option

DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")


@click.command()
@store_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port."
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker processes (stateless: they share the store).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option("--access-log/--no-access-log", default=False, help="Log every request.")
@handle_errors
def serve(
    store_url: str | None, host: str, port: int, workers: int, log_level: str, access_log: bool
) -> None:
    """Serve the REST API (/api/v1, docs at /docs) for a store.

    \b
        jobtrace serve --store postgresql://jobtrace@db/jobtrace --host 0.0.0.0 --workers 4
        JOBTRACE_URL=http://127.0.0.1:8000 jobtrace run train.py    # record into it
    """
    from jobtrace import _config

    url = _config.resolve(url=store_url).url
    if url.split("://", 1)[0].lower() not in DATABASE_SCHEMES:
        fail(f"jobtrace serve needs a database store (sqlite:/// or postgresql://), not {url!r}")
    try:
        import uvicorn

        from jobtrace.server import create_app
    except ImportError as exc:
        fail(f"the server needs its extra: pip install 'jobtrace[server]' ({exc})")
        return
    options = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": access_log,
        "server_header": False,
    }
    if workers == 1:
        uvicorn.run(create_app(url), **options)  # type: ignore[arg-type]
        return
    from jobtrace.store import Store

    Store(url).close()  # create or migrate once, before the workers race to do it
    # Workers import the app themselves; they find the store in the environment.
    os.environ[_config.ENV_URL] = url
    uvicorn.run(
        "jobtrace.server.app:app_from_env",
        factory=True,
        workers=workers,
        **options,  # type: ignore[arg-type]
    )
