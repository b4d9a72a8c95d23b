"""Signed trace headers on every ``httpx`` call: transports for sync and async clients.

>>> client = httpx.Client(transport=TracingTransport(TraceSigner(key)))    # doctest: +SKIP
>>> client = httpx.AsyncClient(transport=AsyncTracingTransport(signer))    # doctest: +SKIP

A transport wraps another (by default httpx's own, so pass connection options to that
one: ``TracingTransport(signer, transport=httpx.HTTPTransport(retries=2))``). Unlike an
event hook, it sees the call end even when it fails, so the client span (``client_span=
True``, the default) always ends, with the error if there was one. For headers only, an
event hook is enough: ``event_hooks={"request": [lambda r: inject(r.headers, signer)]}``
(``async def`` for an ``AsyncClient``).
"""

from __future__ import annotations

import httpx

from jobtrace.tracing.signing import Keys, TraceSigner
from jobtrace.tracing.web import _signer, client_span, safe_headers

__all__ = ["AsyncTracingTransport", "TracingTransport"]


class TracingTransport(httpx.BaseTransport):
    """A sync httpx transport that adds the current span's trace headers to each request.

    ``signer``: a :class:`TraceSigner` or key(s) (None: an unsigned ``traceparent`` only).
    """

    def __init__(
        self,
        signer: Keys | TraceSigner | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        client_span: bool = True,
    ) -> None:
        self.signer = _signer(signer)
        self.client_span = client_span
        self.transport = httpx.HTTPTransport() if transport is None else transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self.client_span:
            request.headers.update(safe_headers(self.signer))
            return self.transport.handle_request(request)
        with client_span(request.method, str(request.url)) as span:
            request.headers.update(safe_headers(self.signer))
            response = self.transport.handle_request(request)
            span.set("http.response.status_code", response.status_code)
            return response

    def close(self) -> None:
        self.transport.close()


class AsyncTracingTransport(httpx.AsyncBaseTransport):
    """The :class:`TracingTransport` of an ``httpx.AsyncClient``."""

    def __init__(
        self,
        signer: Keys | TraceSigner | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        client_span: bool = True,
    ) -> None:
        self.signer = _signer(signer)
        self.client_span = client_span
        self.transport = httpx.AsyncHTTPTransport() if transport is None else transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.client_span:
            request.headers.update(safe_headers(self.signer))
            return await self.transport.handle_async_request(request)
        with client_span(request.method, str(request.url)) as span:
            request.headers.update(safe_headers(self.signer))
            response = await self.transport.handle_async_request(request)
            span.set("http.response.status_code", response.status_code)
            return response

    async def aclose(self) -> None:
        await self.transport.aclose()
