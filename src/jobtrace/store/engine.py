"""SQLAlchemy engines for store URLs: SQLite with the pragmas of
:mod:`jobtrace.store.sqlite`, PostgreSQL through psycopg 3 with a pre-ping pool."""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from sqlalchemy import event

from jobtrace.errors import ConfigurationError
from jobtrace.store import sqlite
from jobtrace.store.writer import json_dumps

#: libpq settings of every connection. Fail fast when the server is unreachable (the
#: recorder spools and retries), and notice a connection whose peer vanished (a host gone,
#: a network cut) within about half a minute instead of the kernel's two hours: TCP
#: keepalives for an idle connection, ``tcp_user_timeout`` (ms) for data never
#: acknowledged. A database process that hangs with its host alive is not noticed this
#: way; the recorder keeps such a write off the caller's path and spools its batch at exit.
POSTGRES_CONNECT_ARGS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def create_engine(url: str) -> sa.Engine:
    """Create an engine for a ``sqlite:///`` or ``postgresql://`` store URL."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        engine = sa.create_engine(
            f"sqlite:///{sqlite.path_of(url)}",
            json_serializer=json_dumps,
            json_deserializer=orjson.loads,
            connect_args=sqlite.CONNECT_ARGS,
        )
        event.listen(engine, "connect", lambda conn, _record: sqlite.tune(conn))
        return engine
    if scheme in {"postgresql", "postgres", "postgresql+psycopg"}:
        rest = url.split("://", 1)[1]
        engine = sa.create_engine(
            f"postgresql+psycopg://{rest}",
            json_serializer=json_dumps,
            json_deserializer=orjson.loads,
            pool_pre_ping=True,
            connect_args=POSTGRES_CONNECT_ARGS,
        )
        # JIT compilation pays off for long analytic queries, not for ours: before table
        # statistics exist it made a 4 ms trace listing take 175 ms.
        event.listen(engine, "connect", _postgres_on_connect)
        return engine
    raise ConfigurationError(
        f"{url!r} is not a database URL (sqlite:/// or postgresql://); to read a server or a "
        "JSON-lines file, open it with jobtrace.store.reader.open_reader(url)"
    )


def _postgres_on_connect(dbapi_conn: object, _record: object) -> None:
    with dbapi_conn.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute("SET jit = off")
    dbapi_conn.commit()  # type: ignore[attr-defined]
