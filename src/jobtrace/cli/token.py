"""``jobtrace token``: API tokens for ``jobtrace serve``, kept hashed in the store."""

from __future__ import annotations

import click

from jobtrace.cli._common import (
    database_url,
    handle_errors,
    json_option,
    print_json,
    store_option,
)


@click.group()
def token() -> None:
    """Manage the API tokens of `jobtrace serve`.

    While a store has never had a token its server is open to anyone who can reach it.
    Once one exists (revoked ones count), every write needs a token (`Authorization:
    Bearer …`; the http sink and jobtrace.client send JOBTRACE_TOKEN), and so does every
    read unless the server runs with --open-reads. A job can then be written only with a
    token of the name that created it, or an admin token. Run these commands against the
    server's store:

    \b
        jobtrace token create ci --store postgresql://jobtrace@db/jobtrace
        JOBTRACE_TOKEN=jt_… JOBTRACE_URL=http://db:8000 jobtrace run train.py
        jobtrace token list --store postgresql://jobtrace@db/jobtrace
        jobtrace token revoke ci --store postgresql://jobtrace@db/jobtrace
    """


@token.command()
@click.argument("name")
@click.option("--admin", is_flag=True, help="May write every job, not only its own.")
@store_option
@handle_errors
def create(name: str, admin: bool, store_url: str | None) -> None:
    """Create a token called NAME and print it (it is shown only this once).

    NAME identifies who writes (a person, a CI pipeline, a cluster): the jobs a token
    creates belong to its name, so a token made again under the same name after a revoke
    keeps writing them. Only the token's SHA-256 is stored.
    """
    from jobtrace.store import Store, tokens

    with Store(database_url(store_url, "jobtrace token create")) as store:
        secret = tokens.create(store, name, admin=admin)
    click.echo(secret)
    click.echo(
        f"Created {'admin ' if admin else ''}token {name!r}; it is shown only once. "
        "Clients send it from JOBTRACE_TOKEN. Servers accept it within a few seconds.",
        err=True,
    )


@token.command()
@click.argument("name")
@store_option
@handle_errors
def revoke(name: str, store_url: str | None) -> None:
    """Revoke the live token called NAME: servers refuse it within a few seconds.

    Records a job sends with it afterwards are spooled by the job, not lost; they are
    delivered by the next process of the same JOBTRACE_DIR that has a live token.
    """
    from jobtrace.cli._common import open_database
    from jobtrace.store import tokens

    with open_database(store_url, "jobtrace token revoke") as store:
        tokens.revoke(store, name)
    click.echo(f"Revoked token {name!r}.")


@token.command("list")
@json_option
@store_option
@handle_errors
def list_tokens(as_json: bool, store_url: str | None) -> None:
    """List tokens, live and revoked, oldest first (never their secrets)."""
    from jobtrace._clock import iso
    from jobtrace.cli._common import open_database, plain_console
    from jobtrace.cli.jobs import local_time
    from jobtrace.store import tokens

    with open_database(store_url, "jobtrace token list") as store:
        found = tokens.list_tokens(store)
    if as_json:
        print_json(
            [
                {
                    "name": t.name,
                    "prefix": t.prefix,
                    "admin": t.admin,
                    "createdAt": iso(t.created_at),
                    "revokedAt": iso(t.revoked_at),
                    "lastUsedAt": iso(t.last_used_at),
                }
                for t in found
            ]
        )
        return
    if not found:
        click.echo("No tokens: the store's server is open to anyone who can reach it.")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("name", "token", "admin", "created", "last used", "revoked"):
        table.add_column(column)
    for t in found:
        table.add_row(
            t.name,
            t.prefix,
            "yes" if t.admin else "",
            local_time(t.created_at),
            local_time(t.last_used_at),
            local_time(t.revoked_at) if t.revoked_at is not None else "",
        )
    plain_console().print(table)
