"""``jobtrace db``: store maintenance."""

from __future__ import annotations

import click

from jobtrace.cli._common import database_url, handle_errors, store_option


@click.group()
def db() -> None:
    """Maintain the store (schema migrations)."""


@db.command()
@store_option
@handle_errors
def upgrade(store_url: str | None) -> None:
    """Create the store if needed and apply pending schema migrations."""
    from jobtrace.store import Store

    with Store(database_url(store_url, "jobtrace db upgrade"), migrate=False) as store:
        before = store.revision()
        after = store.upgrade()
    if before == after:
        click.echo(f"{store.safe_url}: schema is current (revision {after})")
    else:
        click.echo(
            f"{store.safe_url}: upgraded schema from {before or 'empty'} to revision {after}"
        )
