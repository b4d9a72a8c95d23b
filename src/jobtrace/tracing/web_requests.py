"""Signed trace headers on every ``requests`` call: a transport adapter.

>>> session = traced_session(TraceSigner(key))           # doctest: +SKIP
>>> with jobtrace.Trace("sync"):                          # doctest: +SKIP
...     session.get("http://inventory/items")             # joins the trace over there

Each call (each redirect hop too) gets fresh headers, so their expiry counts from the
moment the request leaves; with ``client_span=True`` (the default) the call is a span of
its own, ``HTTP GET host:port/path``, and the server's span is its child.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter

from jobtrace.tracing.signing import Keys, TraceSigner
from jobtrace.tracing.web import _signer, client_span, safe_headers

__all__ = ["TracingAdapter", "traced_session"]


class TracingAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that adds the current span's trace headers to every request.

    ``signer``: a :class:`TraceSigner` or key(s) (None: an unsigned ``traceparent`` only).
    Other keyword arguments go to ``HTTPAdapter`` (``max_retries``, pool sizes).
    """

    # What requests pickles of an adapter: its own attributes, and these.
    __attrs__ = [*HTTPAdapter.__attrs__, "signer", "client_span"]  # noqa: RUF012

    def __init__(
        self,
        signer: Keys | TraceSigner | None = None,
        *,
        client_span: bool = True,
        **kwargs: Any,
    ) -> None:
        self.signer = _signer(signer)
        self.client_span = client_span
        super().__init__(**kwargs)

    def send(  # type: ignore[override]  # requests' own signature is untyped keywords
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        if not self.client_span:
            request.headers.update(safe_headers(self.signer))
            return super().send(request, **kwargs)
        with client_span(str(request.method), str(request.url)) as span:
            request.headers.update(safe_headers(self.signer))
            response = super().send(request, **kwargs)
            span.set("http.response.status_code", response.status_code)
            return response


def traced_session(
    signer: Keys | TraceSigner | None = None,
    *,
    client_span: bool = True,
    session: requests.Session | None = None,
    **adapter_kwargs: Any,
) -> requests.Session:
    """``session`` (default a new one) with a :class:`TracingAdapter` for http and https."""
    session = requests.Session() if session is None else session
    adapter = TracingAdapter(signer, client_span=client_span, **adapter_kwargs)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
