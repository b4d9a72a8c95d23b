"""Open a store for reading from any URL a job records to: :func:`open_reader`.

>>> from jobtrace.store.reader import open_reader
>>> with open_reader("http://127.0.0.1:8000") as store:           # doctest: +SKIP
...     store.find_jobs(status="failed").data

- ``sqlite:///…`` and ``postgresql://…``: a :class:`~jobtrace.store.Store` (a missing
  SQLite file is an error, not a new empty store);
- ``http(s)://…``: a :class:`~jobtrace.store.remote.RemoteStore`, the same read methods
  through a jobtrace server's REST API (``JOBTRACE_TOKEN`` sent if set);
- ``file:///…jsonl`` (the JSON-lines sink): a :class:`~jobtrace.store.jsonl.JSONLStore`,
  the file loaded into a
  temporary SQLite store (deleted on close), so every query answers exactly as on the
  store the records would have reached;
- ``amqp://`` and ``memory://`` hold nothing to read back: a one-line error says where to
  read instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeAlias

from jobtrace.errors import ConfigurationError

if TYPE_CHECKING:
    from jobtrace.store.core import Store
    from jobtrace.store.remote import RemoteStore

__all__ = ["DATABASE_SCHEMES", "SERVER_SCHEMES", "Reader", "open_reader", "scheme"]

#: Stores a server can run on (and so hold its tokens, and be migrated).
DATABASE_SCHEMES: Final = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")
#: A jobtrace server.
SERVER_SCHEMES: Final = ("http", "https")

#: What :func:`open_reader` returns: each has every read method of the store.
Reader: TypeAlias = "Store | RemoteStore"


def scheme(url: str) -> str:
    """The URL's scheme, lower case (``""`` if it has none)."""
    return url.split("://", 1)[0].lower() if "://" in url else ""


def open_reader(url: str | None = None, *, token: str | None = None) -> Reader:
    """The store at ``url`` (default: ``--store``/``JOBTRACE_URL``/the default SQLite
    file, as every command resolves it) opened for reading; close it when done (``with``).

    ``token`` is sent to a server (default: ``JOBTRACE_TOKEN``)."""
    from jobtrace import _config

    resolved = _config.resolve(url=url).url
    kind = scheme(resolved)
    if kind in SERVER_SCHEMES:
        from jobtrace.store.remote import RemoteStore

        return RemoteStore(resolved, token=token)
    if kind == "file":
        from jobtrace.store.jsonl import JSONLStore

        return JSONLStore(resolved)
    if kind == "amqp":
        raise ConfigurationError(
            f"{_config.mask_url(resolved)} is a queue: `jobtrace consume` moves its records "
            "into a database; read that one (--store sqlite:///… or postgresql://…)"
        )
    if kind == "memory":
        raise ConfigurationError(
            f"{resolved} lives in the recording process only; nothing is left to read "
            "(record to sqlite:///…, a server or file:///….jsonl to read it back)"
        )
    from jobtrace.store.core import Store

    return Store(resolved, create=False)
