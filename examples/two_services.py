"""One trace across two services over HTTP, with signed trace headers.

    jobtrace run examples/two_services.py      # or: python examples/two_services.py
    jobtrace trace show <trace id>             # the id it prints

``shop`` is an ASGI app (Starlette) under uvicorn; ``inventory`` is a WSGI app under
wsgiref. Each sits behind jobtrace's middleware with the same key; the caller uses a
traced ``requests`` session and ``shop`` an ``httpx`` client with the tracing transport,
so every call carries ``traceparent`` and a signed ``X-Trace-Info`` / ``X-Trace-HMAC``.
Both services run in threads of this process here, on free loopback ports; deployed
separately, the spans of each process join the same trace through the headers alone.

Last, a forged header: ``inventory`` answers it normally, in a new trace, and logs once.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import jobtrace
from jobtrace.tracing import (
    ASGIMiddleware,
    AsyncTracingTransport,
    TraceSigner,
    WSGIMiddleware,
    traced_session,
)

# Shared by the services through your secret store; a list rotates keys (first signs).
SIGNER = TraceSigner(secrets.token_hex(32), ttl=30)


def inventory(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    with jobtrace.Trace("count stock", info={"sku": environ.get("QUERY_STRING", "")}):
        stock = b"3"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [stock]


def shop(inventory_url: str) -> Starlette:
    async def checkout(request: Request) -> JSONResponse:
        transport = AsyncTracingTransport(SIGNER)
        async with httpx.AsyncClient(transport=transport, base_url=inventory_url) as client:
            stock = (await client.get("/stock", params={"sku": "tea"})).text
        with jobtrace.Trace("price basket"):
            total = 4.5 * 2
        return JSONResponse({"stock": int(stock), "total": total})

    app = Starlette(routes=[Route("/checkout", checkout, methods=["POST"])])
    app.add_middleware(ASGIMiddleware, keys=SIGNER)
    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def services() -> Iterator[tuple[str, str]]:
    """Both services on free loopback ports, each in a thread: (shop URL, inventory URL)."""
    wsgi = make_server("127.0.0.1", 0, WSGIMiddleware(inventory, keys=SIGNER), handler_class=_Quiet)
    inventory_url = f"http://127.0.0.1:{wsgi.server_port}"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(shop(inventory_url), log_level="warning", lifespan="off")
    asgi = uvicorn.Server(config)
    threads = [
        threading.Thread(target=wsgi.serve_forever),
        threading.Thread(target=asgi.run, kwargs={"sockets": [sock]}),
    ]
    for thread in threads:
        thread.start()
    while not asgi.started:  # uvicorn says when it listens
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", inventory_url
    finally:
        asgi.should_exit = True
        wsgi.shutdown()
        for thread in threads:
            thread.join()
        wsgi.server_close()


def main() -> None:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    with services() as (shop_url, inventory_url), traced_session(SIGNER) as session:
        with jobtrace.Trace("customer") as span:
            answer = session.post(f"{shop_url}/checkout", timeout=10).json()
        print(f"checkout answered {answer}")

        forged = TraceSigner("a guessed key")
        with jobtrace.Trace("intruder"):
            reply = traced_session(forged).get(f"{inventory_url}/stock", timeout=10)
        print(f"a forged header was still served: {reply.status_code} {reply.text!r}")
    jobtrace.flush()
    trace_id = span.ids[0] if isinstance(span, jobtrace.Span) else "(not sampled)"
    print(f"trace {trace_id} spans three parties: `jobtrace trace show {trace_id}`")


if __name__ == "__main__":
    main()
