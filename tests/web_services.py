"""Two small traced services for the cross-process tests, each run as its own process:

    python tests/web_services.py front KEY DOWNSTREAM_URL   # ASGI (Starlette) under uvicorn
    python tests/web_services.py back KEY                   # WSGI under wsgiref

Each binds a free loopback port, prints ``port N`` on stdout, and serves ``/health`` and
``/flush`` (writes its spans now, so a test reads them without waiting). ``front``'s
``/work`` calls ``back``'s ``/leaf`` twice, once with httpx and once with requests; its
spans go where ``JOBTRACE_URL`` says.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from typing import Any

import jobtrace
from jobtrace.tracing import (
    ASGIMiddleware,
    AsyncTracingTransport,
    TraceSigner,
    WSGIMiddleware,
    traced_session,
)


def front(key: str, downstream: str) -> None:
    import httpx
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    signer = TraceSigner(key)
    session = traced_session(signer)

    async def work(request: Request) -> PlainTextResponse:
        async with httpx.AsyncClient(transport=AsyncTracingTransport(signer)) as client:
            first = (await client.get(f"{downstream}/leaf")).text
        # asyncio.to_thread runs the blocking call in a copy of this context: same span.
        second = await asyncio.to_thread(lambda: session.get(f"{downstream}/leaf").text)
        return PlainTextResponse(f"{first}+{second}")

    async def flush(request: Request) -> PlainTextResponse:
        jobtrace.flush()
        return PlainTextResponse("flushed")

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/work", work), Route("/flush", flush), Route("/health", health)])
    app.add_middleware(ASGIMiddleware, keys=signer)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(f"port {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def back(key: str) -> None:
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/flush":
            jobtrace.flush()
        elif path == "/leaf":
            with jobtrace.Trace("leaf work"):
                pass
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"leaf" if path == "/leaf" else b"ok"]

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    class ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    server = make_server(
        "127.0.0.1", 0, WSGIMiddleware(app, keys=key), ThreadedServer, handler_class=Quiet
    )
    print(f"port {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    {"front": front, "back": back}[kind](*args)
