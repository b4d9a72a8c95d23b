"""Trace propagation between services over HTTP: headers out, middleware in.

Outgoing, :func:`headers` (or :func:`inject`) gives the current span as a W3C
``traceparent`` and, with a :class:`~jobtrace.tracing.signing.TraceSigner`, as signed
``X-Trace-Info`` / ``X-Trace-HMAC`` headers; the ``requests`` and ``httpx`` helpers in
:mod:`jobtrace.tracing.web_requests` and :mod:`jobtrace.tracing.web_httpx` add them to
every call.

Incoming, :class:`WSGIMiddleware` and :class:`ASGIMiddleware` wrap each request in a
server span. The request joins the caller's trace only when it is trusted:

- a valid, unexpired signature by one of the service's keys: joined;
- a missing, tampered, forged, malformed or expired signature: served all the same, in a
  new trace (or untraced, with ``new_traces=False``); each kind of problem is logged once
  per middleware and counted in :attr:`HeaderTrust.rejected`;
- no key configured (``keys=None``, the default): no signed header is ever trusted;
- a bare ``traceparent`` is honoured only with ``trust_traceparent=True``, for a mesh
  whose edge strips the header from outside traffic, or for OpenTelemetry-traced peers.
  A bad signature is never overruled by a ``traceparent``.

>>> app = WSGIMiddleware(app, keys=["new secret", "old secret"])  # doctest: +SKIP
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from jobtrace import _config
from jobtrace.tracing.propagation import carrier
from jobtrace.tracing.signing import (
    TRACEPARENT,
    X_TRACE_HMAC,
    X_TRACE_INFO,
    Keys,
    TraceHeaderError,
    TraceSigner,
)
from jobtrace.tracing.spans import (
    NEW_TRACE,
    UNSAMPLED,
    AnySpan,
    JoinedTrace,
    RemoteParent,
    Span,
    _NewTrace,
    current_span_var,
    joined_trace_var,
    parse_traceparent,
)

__all__ = [
    "ASGIMiddleware",
    "HeaderTrust",
    "WSGIMiddleware",
    "client_span",
    "headers",
    "inject",
    "safe_headers",
]

log = logging.getLogger("jobtrace.tracing")

_MAX_NAME_PATH = 200  # span names stay readable when a client sends a huge path


def _signer(keys: Keys | TraceSigner | None) -> TraceSigner | None:
    if keys is None or isinstance(keys, TraceSigner):
        return keys
    return TraceSigner(keys)


def headers(signer: TraceSigner | None = None) -> dict[str, str]:
    """The current span as HTTP headers: ``traceparent``, and signed ``X-Trace-Info`` and
    ``X-Trace-HMAC`` when a signer is given (OSProfiler's ``get_trace_id_headers()``).

    Empty when no trace is running. An unsampled trace travels as such (its flag says so),
    so the next service does not record it either::

        requests.get(url, headers=web.headers(signer))
    """
    span = current_span_var.get()
    if isinstance(span, _NewTrace):
        return {}
    if span is None:
        # No span here: the trace this process was started under, if any.
        span = parse_traceparent(carrier().get(_config.ENV_TRACEPARENT, ""))
        if span is None:
            return {}
    if span is UNSAMPLED:
        trace_id, span_id, sampled = 1, 1, False
    else:
        trace_id, span_id = span.trace_id, span.span_id
        sampled = span.sampled if isinstance(span, RemoteParent) else True
    out = {TRACEPARENT: f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"}
    if signer is not None:
        out[X_TRACE_INFO], out[X_TRACE_HMAC] = signer.sign(trace_id, span_id, sampled)
    return out


def inject(
    carrier_headers: MutableMapping[str, str], signer: TraceSigner | None = None
) -> MutableMapping[str, str]:
    """Add :func:`headers` to a mutable header mapping (and return it), e.g. as an httpx
    request hook: ``event_hooks={"request": [lambda r: inject(r.headers, signer)]}``."""
    carrier_headers.update(headers(signer))
    return carrier_headers


def safe_headers(signer: TraceSigner | None) -> dict[str, str]:
    """:func:`headers` for the client helpers: a failure is logged once, never raised."""
    try:
        return headers(signer)
    except Exception as exc:  # instrumentation must not break the user's call
        if "headers" not in _failed:
            _failed.add("headers")
            log.warning("jobtrace: trace headers could not be made (%r); sent without", exc)
        return {}


_failed: set[str] = set()


def client_span(method: str, url: str) -> Span:
    """A span (not started) for an outgoing call: ``HTTP GET host:port/path``, with the
    method and the URL without credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    where = f"{host}{parts.path or '/'}"
    info = {"http.request.method": method, "url.full": f"{parts.scheme}://{where}"}
    return Span(f"HTTP {method} {where[:_MAX_NAME_PATH]}", info)


_PROBLEMS = {
    "no_key": "signed trace headers arrived but no key is configured here, so none is trusted",
    "unsigned": "a traceparent arrived without a signature and trust_traceparent is off",
    "incomplete": f"only one of {X_TRACE_INFO} and {X_TRACE_HMAC} arrived",
    "malformed": "a trace header could not be read",
    "bad_signature": "a trace header's signature matches no key here (tampered or forged?)",
    "expired": "a signed trace header had expired (slow transit or clock skew?)",
    "internal": "reading the trace headers failed unexpectedly",
}


class HeaderTrust:
    """Decides, per request, which caller (if any) a server span may join.

    Built once per middleware; :meth:`parent` is the only per-request call. Problems are
    counted in :attr:`rejected` (reason → count) and each reason is logged once.
    """

    def __init__(
        self,
        keys: Keys | TraceSigner | None = None,
        *,
        trust_traceparent: bool = False,
    ) -> None:
        self.signer = _signer(keys)
        self.trust_traceparent = trust_traceparent
        self.rejected: dict[str, int] = {}
        self._lock = threading.Lock()

    def parent(
        self, info: str | None, mac: str | None, traceparent: str | None
    ) -> tuple[RemoteParent | None, str | None]:
        """(the caller's span to join or None, the reason a header was refused or None)."""
        if info is None and mac is None:
            if traceparent is None:
                return None, None  # the usual request from outside: nothing to say
            if not self.trust_traceparent:
                return self._refuse("unsigned", "")
            found = parse_traceparent(traceparent)
            return (found, None) if found is not None else self._refuse("malformed", "")
        try:
            return self._verify(info, mac), None
        except TraceHeaderError as exc:
            return self._refuse(exc.reason, str(exc))
        except Exception as exc:  # never let a header break the request
            return self._refuse("internal", repr(exc))

    def _verify(self, info: str | None, mac: str | None) -> RemoteParent:
        if self.signer is None:
            raise TraceHeaderError("no_key", "no key is configured")
        if info is None or mac is None:
            raise TraceHeaderError("incomplete", "half a signed header pair")
        return self.signer.verify(info, mac)

    def _refuse(self, reason: str, detail: str) -> tuple[None, str]:
        with self._lock:
            seen = self.rejected.get(reason, 0)
            self.rejected[reason] = seen + 1
        if not seen:
            log.warning(
                "jobtrace: %s; the header is ignored and the request served without "
                "joining the caller's trace (%s). Later ones of this kind are counted, "
                "not logged.",
                _PROBLEMS[reason],
                detail or reason,
            )
        return None, reason


def _as_current(parent: RemoteParent | None) -> RemoteParent | AnySpan | _NewTrace:
    # A caller's unsampled trace stays unrecorded here too (spans only check the marker).
    # No trusted caller: a new trace, even in a process started under a parent trace.
    if parent is None:
        return NEW_TRACE
    return parent if parent.sampled else UNSAMPLED


def _server_info(method: str, path: str) -> dict[str, Any]:
    return {"http.request.method": method, "url.path": path}


def _span_name(method: str, path: str) -> str:
    return f"HTTP {method} {path[:_MAX_NAME_PATH]}"


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WSGIMiddleware:
    """Traces every request to a WSGI app, joining the caller's trace when trusted.

    ``keys``: the service's key(s) or a :class:`TraceSigner` (None: trust no signature).
    ``trust_traceparent``: honour an unsigned W3C ``traceparent`` (only behind a trusted
    edge). ``new_traces``: requests that do not join a trace start their own (else they
    are not traced).

    >>> app = WSGIMiddleware(app, keys=os.environ["TRACE_KEY"])   # doctest: +SKIP
    """

    def __init__(
        self,
        app: WSGIApp,
        keys: Keys | TraceSigner | None = None,
        *,
        trust_traceparent: bool = False,
        new_traces: bool = True,
    ) -> None:
        self.app = app
        self.trust = HeaderTrust(keys, trust_traceparent=trust_traceparent)
        self.new_traces = new_traces

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        get = environ.get
        parent, problem = self.trust.parent(
            get("HTTP_X_TRACE_INFO"), get("HTTP_X_TRACE_HMAC"), get("HTTP_TRACEPARENT")
        )
        if parent is None and not self.new_traces:
            return self.app(environ, start_response)
        # Each request runs in its own context: its span never leaks into the next request
        # this server thread handles, and the body is produced under the same span.
        context = contextvars.copy_context()
        return context.run(self._start, context, parent, problem, environ, start_response)

    def _adopt(self, parent: RemoteParent | None) -> None:
        """Make ``parent`` the current span of this request's context (None: a new trace)."""
        current_span_var.set(_as_current(parent))
        if parent is not None and parent.sampled:
            joined_trace_var.set(JoinedTrace(parent, self.trust.signer))

    def _start(
        self,
        context: contextvars.Context,
        parent: RemoteParent | None,
        problem: str | None,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
    ) -> Any:
        self._adopt(parent)
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
        info = _server_info(method, path)
        if problem is not None:
            info["jobtrace.trace_header"] = problem
        span = Span(_span_name(method, path), info)
        handle = span.__enter__()

        def start(status: str, response_headers: Any, exc_info: Any = None) -> Any:
            code = status.split(" ", 1)[0]
            handle.set("http.response.status_code", int(code) if code.isdigit() else code)
            return start_response(status, response_headers, exc_info)

        try:
            body = self.app(environ, start)
        except BaseException as exc:
            span.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return _TracedBody(body, context, span)


class ClosingBody:
    """A WSGI response body that ends what the request opened (a span here, an OSProfiler
    point in ``jobtrace.compat.osprofiler.web``) once: when iterating it fails or the
    server closes it after sending. Iteration and ``close`` run in the request's context,
    so the code that yields the body sees the same span as the app did."""

    __slots__ = ("_body", "_context", "_iterator", "_opened")

    def __init__(self, body: Iterable[bytes], context: contextvars.Context, opened: Any):
        self._body = body
        self._context = context
        self._opened: Any = opened
        self._iterator: Iterator[bytes] | None = None

    @staticmethod
    def _finish(opened: Any, exc: BaseException | None) -> None:
        """End ``opened``; runs in the request's context, at most once."""
        raise NotImplementedError

    def _end(self, exc: BaseException | None) -> None:
        opened, self._opened = self._opened, None
        if opened is not None:  # once: an error while iterating, then close()
            self._context.run(self._finish, opened, exc)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = iter(self._body)
        try:
            return self._context.run(next, self._iterator)
        except StopIteration:
            raise
        except BaseException as exc:
            self._end(exc)
            raise

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                self._context.run(close)
        finally:
            self._end(None)


class _TracedBody(ClosingBody):
    """A response body whose span ends when the server closes it (after sending)."""

    __slots__ = ()

    @staticmethod
    def _finish(opened: Any, exc: BaseException | None) -> None:
        opened.__exit__(None if exc is None else type(exc), exc, None)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_INFO, _HMAC, _TRACEPARENT = (
    name.lower().encode() for name in (X_TRACE_INFO, X_TRACE_HMAC, TRACEPARENT)
)


class ASGIMiddleware:
    """Traces every HTTP request to an ASGI 3 app (Starlette, FastAPI, under uvicorn…),
    joining the caller's trace when trusted. Arguments as :class:`WSGIMiddleware`'s.

    >>> app = ASGIMiddleware(app, keys=os.environ["TRACE_KEY"])   # doctest: +SKIP
    >>> app.add_middleware(ASGIMiddleware, keys=key)            # Starlette, FastAPI
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: Keys | TraceSigner | None = None,
        *,
        trust_traceparent: bool = False,
        new_traces: bool = True,
    ) -> None:
        self.app = app
        self.trust = HeaderTrust(keys, trust_traceparent=trust_traceparent)
        self.new_traces = new_traces

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, _flushing_at_shutdown(send))
            return
        if scope["type"] != "http":  # websockets pass through untouched
            await self.app(scope, receive, send)
            return
        info = mac = traceparent = None
        for name, value in scope.get("headers", ()):
            if name == _INFO:
                info = value.decode("latin-1")
            elif name == _HMAC:
                mac = value.decode("latin-1")
            elif name == _TRACEPARENT:
                traceparent = value.decode("latin-1")
        parent, problem = self.trust.parent(info, mac, traceparent)
        if parent is None and not self.new_traces:
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET"))
        path = str(scope.get("root_path", "")) + str(scope.get("path", ""))
        attributes = _server_info(method, path)
        if problem is not None:
            attributes["jobtrace.trace_header"] = problem
        # Set, not inherited: under an in-process client the caller's span is current here.
        token = current_span_var.set(_as_current(parent))
        joined = joined_trace_var.set(
            JoinedTrace(parent, self.trust.signer)
            if parent is not None and parent.sampled
            else None
        )
        try:
            with Span(_span_name(method, path), attributes) as span:

                async def traced_send(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        span.set("http.response.status_code", message["status"])
                    await send(message)

                try:
                    await self.app(scope, receive, traced_send)
                finally:
                    route = getattr(scope.get("route"), "path", None)  # Starlette's routing
                    if isinstance(route, str):
                        span.set("http.route", route)
        finally:
            joined_trace_var.reset(joined)
            current_span_var.reset(token)


def _flushing_at_shutdown(send: Send) -> Send:
    """``send`` for a lifespan scope: once the app has shut down, and before the server
    hears so (and lets the process die), the last series and spans are written."""

    async def send_after_flush(message: Message) -> None:
        if message["type"] in {"lifespan.shutdown.complete", "lifespan.shutdown.failed"}:
            import asyncio

            from jobtrace.instruments.registry import shutdown_flush

            # Off the event loop: the flush waits for the sink (bounded by the flush
            # timeout), and other apps of the process may still be shutting down.
            await asyncio.to_thread(shutdown_flush)
        await send(message)

    return send_after_flush
