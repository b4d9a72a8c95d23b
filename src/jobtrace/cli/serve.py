"""``jobtrace serve``: the REST API over a store, under uvicorn."""

from __future__ import annotations

import os

import click

from jobtrace.cli._common import database_url, fail, handle_errors, store_option


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
    help="Least severe server log lines shown.",
)
@click.option("--access-log/--no-access-log", default=False, help="Log every request.")
@click.option(
    "--auth-reads/--open-reads",
    default=None,
    help="Once the store has a token, reads need one too (the default; env "
    "JOBTRACE_AUTH_READS=1), or stay open to anyone (JOBTRACE_AUTH_READS=0). Writes always "
    "need one then. /api/v1/health is always open; /metrics is a read.",
)
@click.option(
    "--allow-origin",
    "allow_origins",
    multiple=True,
    metavar="ORIGIN",
    help="A browser origin (https://host:port) whose pages may write, besides the server's "
    "own loopback or IP-address origin; repeatable (env JOBTRACE_ALLOWED_ORIGINS, "
    "comma-separated).",
)
@click.option(
    "--create",
    is_flag=True,
    help="Start a new SQLite store if --store names a file that does not exist (without it, "
    "a path that does not exist is an error: it is usually a typo).",
)
@handle_errors
def serve(
    store_url: str | None,
    create: bool,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    access_log: bool,
    auth_reads: bool | None,
    allow_origins: tuple[str, ...],
) -> None:
    """Serve the REST API (/api/v1, docs at /docs) for a store.

    A --store path that does not exist is refused (a typo would otherwise serve a new,
    empty store) unless --create is given; the default store is made on first use.

    \b
        jobtrace serve --store postgresql://jobtrace@db/jobtrace --host 0.0.0.0 --workers 4
        JOBTRACE_URL=http://127.0.0.1:8000 jobtrace run train.py    # record into it

    With no API token in the store the server is open to anyone who can reach it (fine on
    127.0.0.1; a loud warning on any other address). `jobtrace token create NAME` makes one;
    from then on writes need a token, and reads unless --open-reads.
    """
    from jobtrace import _config

    url = database_url(store_url, "jobtrace serve")
    try:
        import uvicorn

        from jobtrace.server import AuthSettings, create_app
    except ImportError as exc:
        fail(f"the server needs its extra: pip install 'jobtrace[server]' ({exc})")
        return
    auth = AuthSettings.from_env(auth_reads=auth_reads, allowed_origins=allow_origins or None)
    # The default store (./.jobtrace/jobtrace.db) is made on first use, as by `jobtrace run`;
    # a path the user typed must exist unless --create says to start one.
    explicit = store_url is not None
    _warn_if_open(url, host, create=create or not explicit)
    options = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": access_log,
        "server_header": False,
    }
    if workers == 1:
        uvicorn.run(create_app(url, auth=auth), **options)  # type: ignore[arg-type]
        return
    # Workers import the app themselves; they find the store and settings in the environment.
    os.environ[_config.ENV_URL] = url
    os.environ.update(auth.to_env())
    uvicorn.run(
        "jobtrace.server.app:app_from_env",
        factory=True,
        workers=workers,
        **options,  # type: ignore[arg-type]
    )


def _warn_if_open(url: str, host: str, *, create: bool) -> None:
    """Say loudly when a server others can reach has no tokens; also creates (if ``create``)
    or migrates the store once, before any worker races to do it."""
    from jobtrace._config import mask_url
    from jobtrace.errors import StoreNotFoundError
    from jobtrace.server.auth import is_loopback
    from jobtrace.store import Store, tokens

    try:
        store = Store(url, create=create)
    except StoreNotFoundError as exc:
        fail(f"{exc}; add --create to start a new store there")
        return
    with store:
        found = store._read(tokens.all_tokens)
    if found or is_loopback(host):
        return
    bar = "!" * 78
    click.echo(
        f"{bar}\n"
        f"jobtrace: WARNING: serving on {host} with NO API TOKENS: anyone who can reach this\n"
        "jobtrace: WARNING: port can read and rewrite every job and metric in the store.\n"
        f"jobtrace: WARNING: create one now: jobtrace token create NAME --admin --store "
        f"{mask_url(url)}\n"
        "jobtrace: WARNING: (the server requires tokens within seconds, no restart needed)\n"
        f"{bar}",
        err=True,
    )
