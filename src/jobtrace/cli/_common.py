"""Pieces shared by the CLI's commands: the --store option, errors, output helpers."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from jobtrace.errors import JobtraceError
from jobtrace.store.reader import DATABASE_SCHEMES, scheme

if TYPE_CHECKING:
    from rich.console import Console

    from jobtrace.store import Store
    from jobtrace.store.reader import Reader

F = TypeVar("F", bound=Callable[..., Any])

store_option = click.option(
    "--store",
    "store_url",
    metavar="URL",
    envvar="JOBTRACE_URL",
    show_envvar=True,
    help="Store to read: sqlite:///path.db, postgresql://…, http(s)://host:port (a jobtrace "
    "serve; JOBTRACE_TOKEN is sent) or file:///path.jsonl (what the file sink wrote) "
    "[default: sqlite:///$JOBTRACE_DIR/jobtrace.db, JOBTRACE_DIR defaulting to ./.jobtrace]",
)

#: ``jobtrace run`` (and ``doctor``) take every URL a job can record to.
record_store_option = click.option(
    "--store",
    "store_url",
    metavar="URL",
    envvar="JOBTRACE_URL",
    show_envvar=True,
    help="Where the job's records go: sqlite:///path.db, postgresql://…, http(s)://host:port "
    "(a jobtrace serve), amqp://user:pw@host/?queue=Q (a RabbitMQ queue, drained by "
    "jobtrace consume), file:///path.jsonl (JSON lines) or memory://name "
    "[default: sqlite:///$JOBTRACE_DIR/jobtrace.db, JOBTRACE_DIR defaulting to ./.jobtrace]",
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def fail(message: str, code: int = 1) -> None:
    """Print a one-line error and exit (no traceback for a user's mistake)."""
    click.echo(f"jobtrace: error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn jobtrace's own exceptions into one-line errors with a non-zero exit status."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JobtraceError as exc:
            fail(str(exc))
        return None

    return wrapper  # type: ignore[return-value]


def database_url(store_url: str | None, command: str) -> str:
    """The store URL resolved as every command does, or a one-line error naming
    ``command`` if it is not a database (e.g. an http:// JOBTRACE_URL)."""
    from jobtrace import _config

    url = _config.resolve(url=store_url).url
    if scheme(url) not in DATABASE_SCHEMES:
        fail(
            f"{command} needs a database store (--store sqlite:///… or postgresql://…), "
            f"not {_config.mask_url(url)!r}"
        )
    return url


def plain_console() -> Console:
    """A console that prints user strings as they are: no markup, emoji codes or guessing.

    List tables cut a long cell with an ellipsis (``overflow="ellipsis", no_wrap=True``)
    rather than break a word across lines; ``--json`` gives every value whole. Detail
    views (one thing's fields) fold long values, so nothing of them is lost.
    """
    from rich.console import Console

    return Console(emoji=False, highlight=False, markup=False)


def open_store(url: str | None) -> Reader:
    """Open the store for reading, from a database, a server or a JSON-lines file (see
    :func:`~jobtrace.store.reader.open_reader`); use it as ``with open_store(url) as
    store:`` so it is closed."""
    from jobtrace.store.reader import open_reader

    return open_reader(url)


def open_database(url: str | None, command: str) -> Store:
    """Open a database store (not a server, not a file) that must exist, for ``command``
    (admin commands: tokens); a one-line error for any other URL."""
    from jobtrace.store import Store

    return Store(database_url(url, command), create=False)


def json_bytes(data: Any, *, indent: bool = True) -> bytes:
    """``data`` as the CLI prints JSON: indented by two and ending in a newline (unless
    ``indent=False``: one line, no newline)."""
    import orjson

    if not indent:
        return orjson.dumps(data, default=repr, option=orjson.OPT_NON_STR_KEYS)
    option = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
    return orjson.dumps(data, default=repr, option=option)


def print_json(data: Any) -> None:
    sys.stdout.buffer.write(json_bytes(data))
    sys.stdout.flush()
