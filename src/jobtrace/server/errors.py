"""One error body for every failure: ``{"error": kind, "message": …, "detail": …, "status": n}``.

FastAPI's own validation errors, malformed JSON, unknown routes, wrong methods, oversized
bodies and the API's own refusals all go through :func:`install_handlers`, so a client
reads every 4xx the same way. A genuine bug becomes a 500 of the same shape (and a logged
traceback); bad input never does.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from jobtrace.errors import (
    ConflictError,
    ExperimentNotFoundError,
    JobNotFoundError,
    NotFoundError,
    QueryError,
    SearchError,
    StoreError,
)
from jobtrace.server.wire import JSONBody

__all__ = [
    "APIError",
    "BodyLimit",
    "ErrorBody",
    "error_response",
    "install_handlers",
]

log = logging.getLogger("jobtrace.server")

#: Error kinds by HTTP status, for errors raised without a kind of their own.
KINDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    500: "internal_error",
    503: "store_unavailable",
}

ErrorBody = dict[str, Any]


class APIError(StarletteHTTPException):
    """An error answered with the shared error body.

    An HTTPException, so that FastAPI passes it through when it is raised while a request
    body is read (see :class:`BodyLimit`) instead of turning it into a generic 400.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers=headers)
        self.status = status
        self.kind = kind or KINDS.get(status, "error")
        self.message = message
        self.error_detail = detail


def error_response(
    status: int, message: str, kind: str | None = None, detail: Any = None
) -> JSONBody:
    body: ErrorBody = {
        "error": kind or KINDS.get(status, "error"),
        "message": message,
        "detail": detail,
        "status": status,
    }
    return JSONBody(body, status_code=status)


def _validation_detail(errors: Any) -> list[dict[str, Any]]:
    # Pydantic's error dicts echo the input (a 1 MB name would come back whole) and may
    # hold exception objects in `ctx`: keep the location, message and type only.
    return [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            # "Value error, " is pydantic's prefix for a validator's own message.
            "msg": str(e.get("msg")).removeprefix("Value error, "),
            "type": e.get("type"),
        }
        for e in errors
    ]


def _describe(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error["loc"]]
    if loc and loc[0] in {"body", "query", "path", "header"}:
        part, where = loc[0], ".".join(loc[1:])
    else:
        part, where = "request", ".".join(loc)
    return f"{part} {where}: {error['msg']}" if where else f"{part}: {error['msg']}"


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    response = error_response(exc.status, exc.message, exc.kind, exc.error_detail)
    if exc.headers:  # e.g. WWW-Authenticate on a 401
        response.headers.update(exc.headers)
    return response


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    detail = _validation_detail(exc.errors())
    if any(e["type"] == "json_invalid" for e in detail):
        return error_response(400, "the request body is not valid JSON", "malformed_json", detail)
    message = "; ".join(_describe(e) for e in detail[:3]) or "invalid request"
    return error_response(422, message, "invalid_input", detail)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = f"no such resource: {request.method} {request.url.path}"
        if exc.detail not in (None, "Not Found"):
            message = str(exc.detail)
    else:
        message = str(exc.detail)
    response = error_response(exc.status_code, message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _on_query_error(request: Request, exc: Exception) -> Response:
    """The store's verdicts on a request (see :mod:`jobtrace.errors`): an unknown job or
    experiment is a 404, an existing one a 409, a search that does not parse or names an
    unknown field a 422 saying why and where, any other bad parameter a 400."""
    if isinstance(exc, JobNotFoundError):
        return error_response(404, str(exc), detail={"id": exc.job_id})
    if isinstance(exc, ExperimentNotFoundError):
        return error_response(404, str(exc), detail={"id": exc.name})
    if isinstance(exc, NotFoundError):
        return error_response(404, str(exc))
    if isinstance(exc, ConflictError):
        return error_response(409, str(exc))
    if isinstance(exc, SearchError):
        detail = {"field": "search", "reason": exc.reason, "position": exc.position}
        return error_response(422, f"search: {exc}", "invalid_search", detail)
    assert isinstance(exc, QueryError)
    return error_response(400, str(exc), "invalid_query")


async def _on_store_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StoreError)
    if not _is_database_failure(exc):
        # The store wraps everything a query raises; a Python error in it is a bug.
        cause = exc.__cause__
        return await _on_bug(request, cause if isinstance(cause, Exception) else exc)
    log.warning("jobtrace server: store error on %s %s: %s", request.method, request.url, exc)
    # The cause stays in the server's log: it names the database's host, port and name,
    # which are no business of a client.
    return error_response(503, "the store is unavailable; retry later (the server log says why)")


def _is_database_failure(exc: StoreError) -> bool:
    """Whether a store error comes from the database or its connection (answered 503)."""
    import sqlite3

    import sqlalchemy.exc

    cause = exc.__cause__
    if cause is None or isinstance(
        cause, sqlalchemy.exc.SQLAlchemyError | sqlite3.Error | OSError | StoreError
    ):
        return True
    psycopg = sys.modules.get("psycopg")  # the PostgreSQL writer uses it directly
    return psycopg is not None and isinstance(cause, psycopg.Error)


async def _on_bug(request: Request, exc: Exception) -> Response:
    log.error(
        "jobtrace server: unhandled error on %s %s", request.method, request.url, exc_info=exc
    )
    return error_response(500, f"internal error: {type(exc).__name__}; see the server's log")


def install_handlers(app: FastAPI) -> None:
    """Route every error through the shared body."""
    app.add_exception_handler(APIError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    for query_error in (NotFoundError, ConflictError, QueryError):
        app.add_exception_handler(query_error, _on_query_error)
    app.add_exception_handler(StoreError, _on_store_error)
    app.add_exception_handler(Exception, _on_bug)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware refusing request bodies over ``max_bytes`` with a 413.

    A declared ``Content-Length`` over the limit is refused before the body is read; a
    chunked body is counted as it streams, and the handler reading it gets an
    :class:`APIError` (answered as a 413) as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> APIError:
        return APIError(
            413,
            f"the request body is over the server's limit of {self.max_bytes} bytes; "
            "send smaller batches",
            detail={"maxBytes": self.max_bytes},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    error = (
                        self._too_large()
                        if declared > 0
                        else APIError(400, "invalid Content-Length header")
                    )
                    response = error_response(
                        error.status, error.message, error.kind, error.error_detail
                    )
                    await response(scope, receive, send)
                    return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, counted, send)
