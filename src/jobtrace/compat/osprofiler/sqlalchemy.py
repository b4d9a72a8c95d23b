"""OSProfiler's ``osprofiler.sqlalchemy``: every query a point of the current trace.

>>> import sqlalchemy as sa
>>> from jobtrace.compat.osprofiler import profiler, sqlalchemy as osp_sqlalchemy
>>> engine = sa.create_engine("sqlite://")
>>> osp_sqlalchemy.add_tracing(sa, engine, "db", hide_result=False)
>>> _ = profiler.init("key")
>>> with engine.connect() as conn:
...     conn.execute(sa.text("select 1")).all()
[(1,)]
>>> profiler.clean()

``add_tracing(sqlalchemy, engine, name, hide_result=True)`` listens to the engine's
``before_cursor_execute``, ``after_cursor_execute`` and ``handle_error`` events: each
statement is a point named ``name`` with ``info={"db": {"statement", "params"}}``, a child of
whatever point is open; its stop carries ``{"db": {"result": …}}`` unless ``hide_result``,
and a failing statement ends with ``etype``, ``message`` and the original and chained
exceptions. ``wrap_session(sqlalchemy, session)`` does it once for a session's engine (the
point name is ``db``), and ``disable()``/``enable()`` decide whether ``add_tracing`` adds
anything (the ``[profiler] trace_sqlalchemy`` option). As everywhere in this layer, queries
are recorded only inside an initialised profiler.

Differs: OSProfiler reads the result from the DB-API cursor's private ``_rows`` (present in
PyMySQL) and fails on drivers without it; here a cursor without ``_rows`` (sqlite3,
psycopg) reports ``{"db": {"rowcount": n}}`` instead, since reading the rows would consume
them before the application does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from jobtrace.compat.osprofiler import profiler
from jobtrace.compat.osprofiler.profiler import _class_name

__all__ = ["add_tracing", "disable", "enable", "handle_error", "wrap_session"]

log = logging.getLogger("jobtrace.compat.osprofiler")

_DISABLED = False

Handler = Callable[..., None]


def disable() -> None:
    """Make :func:`add_tracing` add nothing (fewer, smaller traces)."""
    global _DISABLED
    _DISABLED = True


def enable() -> None:
    """Make :func:`add_tracing` add its listeners again (the default)."""
    global _DISABLED
    _DISABLED = False


def add_tracing(sqlalchemy: Any, engine: Any, name: str, hide_result: bool = True) -> None:
    """Trace every statement ``engine`` runs as a point named ``name``; ``sqlalchemy`` is
    the imported ``sqlalchemy`` package (OSProfiler's signature)."""
    if _DISABLED:
        return
    sqlalchemy.event.listen(engine, "before_cursor_execute", _before_cursor_execute(name))
    sqlalchemy.event.listen(
        engine, "after_cursor_execute", _after_cursor_execute(hide_result=hide_result)
    )
    sqlalchemy.event.listen(engine, "handle_error", handle_error)


@contextlib.contextmanager
def wrap_session(sqlalchemy: Any, sess: Any) -> Iterator[Any]:
    """Enter ``sess`` (a session context manager) with its engine traced, once per engine."""
    with sess as session:
        if not getattr(session.bind, "traced", False):
            add_tracing(sqlalchemy, session.bind, "db")
            session.bind.traced = True
        yield session


def _before_cursor_execute(name: str) -> Handler:
    def handler(
        conn: Any, cursor: Any, statement: Any, params: Any, context: Any, executemany: Any
    ) -> None:
        profiler.start(name, info={"db": {"statement": statement, "params": params}})

    return handler


def _after_cursor_execute(hide_result: bool = True) -> Handler:
    def handler(
        conn: Any, cursor: Any, statement: Any, params: Any, context: Any, executemany: Any
    ) -> None:
        if hide_result:
            profiler.stop()
            return
        try:
            rows = getattr(cursor, "_rows", None)
            if rows is not None:
                result: dict[str, Any] = {"result": str(rows)}
            else:
                result = {"rowcount": getattr(cursor, "rowcount", None)}
        except Exception as exc:  # a result that cannot be shown must not fail the query
            result = {"result": f"<unrepresentable: {type(exc).__name__}>"}
        profiler.stop(info={"db": result})

    return handler


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not turn one error into another
        return f"<unprintable {type(exc).__name__}>"


def handle_error(exception_context: Any) -> None:
    """End the failed statement's point with the error (an engine ``handle_error`` listener)."""
    original = exception_context.original_exception
    cause = original.__cause__
    message = _text(original)
    profiler.stop(
        info={
            "etype": _class_name(original),
            "message": message,
            "db": {
                "original_exception": message,
                "chained_exception": _text(cause) if cause else "",
            },
        }
    )
    log.debug("jobtrace: an SQLAlchemy error ended its trace point: %s", message)
