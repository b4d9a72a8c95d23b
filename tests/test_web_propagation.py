"""Trace propagation over HTTP, in one process: the WSGI and ASGI middleware join a caller's
trace only on a valid signature, serve every other request in a new trace with one log
line per kind of problem, and the requests and httpx helpers sign every call."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest

import jobtrace
from jobtrace import _config, profiler, web
from jobtrace.sinks.memory import MemorySink
from jobtrace.tracing import (
    ASGIMiddleware,
    AsyncTracingTransport,
    TraceSigner,
    TracingTransport,
    WSGIMiddleware,
    current_span,
    headers,
    inject,
    traced_session,
)
from jobtrace.tracing.signing import X_TRACE_HMAC, X_TRACE_INFO
from jobtrace.tracing.spans import RemoteParent
from tests.test_tracing import by_name, spans

KEY = "test-key"
SIGNER = TraceSigner(KEY)
SERVER = "HTTP GET /hello"


def wsgi_hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    with jobtrace.Trace("handler"):
        pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


async def asgi_hello(scope: Any, receive: Any, send: Any) -> None:
    with jobtrace.Trace("handler"):
        await asyncio.sleep(0)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


Middleware = WSGIMiddleware | ASGIMiddleware


def call(app: Any, request_headers: dict[str, str] | None = None, path: str = "/hello") -> int:
    """One GET through an in-process transport; the status code."""
    if not inspect.iscoroutinefunction(type(app).__call__):  # WSGI
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://s") as c:
            return c.get(path, headers=request_headers).status_code

    async def go() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as c:
            return (await c.get(path, headers=request_headers)).status_code

    return asyncio.run(go())


@pytest.fixture(params=["wsgi", "asgi"])
def serve(request: pytest.FixtureRequest) -> Callable[..., Middleware]:
    """Makes the middleware of either kind around a hello app."""

    def make(**kwargs: Any) -> Middleware:
        if request.param == "wsgi":
            return WSGIMiddleware(wsgi_hello, **kwargs)
        return ASGIMiddleware(asgi_hello, **kwargs)

    return make


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("jobtrace") and r.levelno >= logging.WARNING
    ]


def assert_new_trace(sink: MemorySink, caller: Any, reason: str) -> None:
    server = [s for s in spans(sink) if s["name"] == SERVER]
    assert server, "the request was traced"
    for s in server:
        assert s["parent_id"] is None and s["trace_id"] != caller.ids[0]
        assert s["info"]["jobtrace.trace_header"] == reason
        assert s["info"]["http.response.status_code"] == 200


def tampered(request_headers: dict[str, str]) -> dict[str, str]:
    info = request_headers[X_TRACE_INFO]
    flipped = info[:20] + ("A" if info[20] != "A" else "B") + info[21:]
    return {**request_headers, X_TRACE_INFO: flipped}


def signed_by_key_holder(payload: bytes) -> dict[str, str]:
    info = base64.urlsafe_b64encode(payload).decode()
    mac = hmac.new(KEY.encode(), info.encode(), hashlib.sha256).hexdigest()
    return {X_TRACE_INFO: info, X_TRACE_HMAC: mac}


# --- joining ---------------------------------------------------------------------------


def test_a_signed_request_joins_the_callers_trace(
    serve: Callable[..., Middleware], memory_sink: MemorySink
) -> None:
    app = serve(keys=KEY)
    with jobtrace.Trace("caller") as caller:
        assert call(app, headers(SIGNER)) == 200
    s = by_name(memory_sink)
    assert s[SERVER]["trace_id"] == s["caller"]["trace_id"] == s["handler"]["trace_id"]
    assert s[SERVER]["parent_id"] == caller.ids[1]
    assert s["handler"]["parent_id"] == s[SERVER]["span_id"]
    assert s[SERVER]["info"] == {
        "http.request.method": "GET",
        "url.path": "/hello",
        "http.response.status_code": 200,
    }
    assert app.trust.rejected == {}


def test_a_request_without_headers_starts_a_trace_and_logs_nothing(
    serve: Callable[..., Middleware], memory_sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    app = serve(keys=KEY)
    with jobtrace.Trace("caller") as caller:
        assert call(app) == 200
    server = by_name(memory_sink)[SERVER]
    assert server["parent_id"] is None and server["trace_id"] != caller.ids[0]
    assert "jobtrace.trace_header" not in server["info"]
    assert warnings_of(caplog) == []


def test_a_service_started_under_a_parent_trace_still_starts_new_ones_for_strangers(
    serve: Callable[..., Middleware],
    memory_sink: MemorySink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from jobtrace.tracing import spans as span_module

    # As if started with JOBTRACE_TRACEPARENT (by a job that launched the service).
    inherited = RemoteParent(0xABC, 0xDEF, True)
    monkeypatch.setattr(span_module._settings, "remote_parent", inherited)
    app = serve(keys=KEY)
    assert call(app) == 200  # no header
    assert call(app, tampered(headers(SIGNER))) == 200  # a header it cannot trust
    for server in [s for s in spans(memory_sink) if s["name"] == SERVER]:
        assert server["parent_id"] is None and server["trace_id"] != f"{0xABC:032x}"
    # Outside requests, the process's own spans still join the trace it was started under.
    with jobtrace.Trace("own work") as own:
        assert own.ids[0] == f"{0xABC:032x}"


def test_a_server_with_several_keys_accepts_each(
    serve: Callable[..., Middleware], memory_sink: MemorySink
) -> None:
    app = serve(keys=TraceSigner(["new", "old"]))
    with jobtrace.Trace("caller") as caller:
        call(app, headers(TraceSigner("old")))
        call(app, headers(TraceSigner("new")))
    server = [s for s in spans(memory_sink) if s["name"] == SERVER]
    assert [s["parent_id"] for s in server] == [caller.ids[1]] * 2


# --- refusing ----------------------------------------------------------------------------


def test_a_tampered_header_is_served_in_a_new_trace_with_one_log_line(
    serve: Callable[..., Middleware], memory_sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    app = serve(keys=KEY)
    with jobtrace.Trace("caller") as caller:
        for _ in range(3):
            assert call(app, tampered(headers(SIGNER))) == 200
    assert_new_trace(memory_sink, caller, "bad_signature")
    [line] = warnings_of(caplog)
    assert "signature" in line
    assert app.trust.rejected == {"bad_signature": 3}


def test_an_expired_header_is_served_in_a_new_trace_with_one_log_line(
    serve: Callable[..., Middleware], memory_sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    app = serve(keys=KEY)
    issued_long_ago = TraceSigner(KEY, ttl=60, clock=lambda: time.time() - 3600)
    with jobtrace.Trace("caller") as caller:
        for _ in range(2):
            assert call(app, headers(issued_long_ago)) == 200
    assert_new_trace(memory_sink, caller, "expired")
    [line] = warnings_of(caplog)
    assert "expired" in line
    assert app.trust.rejected == {"expired": 2}


def test_a_forged_header_signed_with_another_key_is_not_joined(
    serve: Callable[..., Middleware], memory_sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    app = serve(keys=KEY)
    with jobtrace.Trace("caller") as caller:
        assert call(app, headers(TraceSigner("guessed"))) == 200
    assert_new_trace(memory_sink, caller, "bad_signature")
    assert len(warnings_of(caplog)) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {X_TRACE_INFO: "%%%garbage%%%", X_TRACE_HMAC: "zz"},
        signed_by_key_holder(b"{not json"),
        signed_by_key_holder(b'{"base_id": 7, "parent_id": [], "exp": "soon"}'),
        {X_TRACE_INFO: base64.urlsafe_b64encode(b"\xff\xfe").decode(), X_TRACE_HMAC: "0" * 64},
        {X_TRACE_INFO: "eyJ9"},
        {X_TRACE_HMAC: "0" * 64},
    ],
    ids=["garbage", "bad-json", "wrong-types", "binary", "info-alone", "hmac-alone"],
)
def test_a_malformed_header_is_served_in_a_new_trace_with_one_log_line(
    serve: Callable[..., Middleware],
    memory_sink: MemorySink,
    caplog: pytest.LogCaptureFixture,
    bad: dict[str, str],
) -> None:
    app = serve(keys=KEY)
    with jobtrace.Trace("caller") as caller:
        for _ in range(2):
            assert call(app, bad) == 200
    [reason] = app.trust.rejected
    assert reason in {"malformed", "incomplete", "bad_signature"}
    assert app.trust.rejected[reason] == 2
    assert_new_trace(memory_sink, caller, reason)
    assert len(warnings_of(caplog)) == 1


def test_without_a_key_no_signed_header_is_trusted(
    serve: Callable[..., Middleware], memory_sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    app = serve()  # keys=None: there is no default key
    with jobtrace.Trace("caller") as caller:
        assert call(app, headers(SIGNER)) == 200
    assert_new_trace(memory_sink, caller, "no_key")
    [line] = warnings_of(caplog)
    assert "no key" in line


def test_a_bare_traceparent_is_ignored_unless_trusted_explicitly(
    serve: Callable[..., Middleware], memory_sink: MemorySink
) -> None:
    strict, mesh = serve(keys=KEY), serve(keys=KEY, trust_traceparent=True)
    with jobtrace.Trace("caller") as caller:
        unsigned = headers()
        assert set(unsigned) == {"traceparent"}
        call(strict, unsigned)
        call(mesh, unsigned)
    parents = [s["parent_id"] for s in spans(memory_sink) if s["name"] == SERVER]
    assert parents == [None, caller.ids[1]]
    assert strict.trust.rejected == {"unsigned": 1} and mesh.trust.rejected == {}


def test_a_bad_signature_is_not_overruled_by_a_trusted_traceparent(
    serve: Callable[..., Middleware], memory_sink: MemorySink
) -> None:
    app = serve(keys=KEY, trust_traceparent=True)
    with jobtrace.Trace("caller") as caller:
        call(app, tampered(headers(SIGNER)))
    assert_new_trace(memory_sink, caller, "bad_signature")


def test_a_malformed_trusted_traceparent_is_ignored(
    serve: Callable[..., Middleware], memory_sink: MemorySink
) -> None:
    app = serve(trust_traceparent=True)
    with jobtrace.Trace("caller") as caller:
        assert call(app, {"traceparent": "00-nothex-0000-01"}) == 200
    assert_new_trace(memory_sink, caller, "malformed")


def test_with_new_traces_off_only_trusted_requests_are_traced(
    serve: Callable[..., Middleware], memory_sink: MemorySink
) -> None:
    app = serve(keys=KEY, new_traces=False)
    with jobtrace.Trace("caller") as caller:
        good = headers(SIGNER)
    assert call(app) == 200
    assert call(app, tampered(good)) == 200
    assert [s["name"] for s in spans(memory_sink)] == ["caller", "handler", "handler"]
    assert call(app, good) == 200
    assert by_name(memory_sink)[SERVER]["parent_id"] == caller.ids[1]


def test_a_failure_inside_header_checks_never_reaches_the_app(
    serve: Callable[..., Middleware],
    memory_sink: MemorySink,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = serve(keys=KEY)

    class Broken:
        def verify(self, info: str, mac: str) -> None:
            raise RuntimeError("bug")

    monkeypatch.setattr(app.trust, "signer", Broken())
    with jobtrace.Trace("caller") as caller:
        assert call(app, headers(SIGNER)) == 200
    assert_new_trace(memory_sink, caller, "internal")
    assert len(warnings_of(caplog)) == 1


def test_an_unsampled_callers_trace_stays_unrecorded_downstream(
    serve: Callable[..., Middleware], memory_sink: MemorySink
) -> None:
    app = serve(keys=KEY)
    _config.configure(
        url=f"memory://{memory_sink.name}", trace_sample_rate=0.0, install_signal_handlers=False
    )
    with jobtrace.Trace("caller"):
        sent = headers(SIGNER)
        assert call(app, sent) == 200
    assert sent["traceparent"].endswith("-00")
    assert SIGNER.verify(sent[X_TRACE_INFO], sent[X_TRACE_HMAC]).sampled is False
    assert spans(memory_sink) == []


# --- the server span ---------------------------------------------------------------------


def test_an_exception_in_the_app_ends_the_span_with_it_and_propagates(
    memory_sink: MemorySink,
) -> None:
    def failing(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise KeyError("missing")

    async def afailing(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        call(WSGIMiddleware(failing, keys=KEY))
    with pytest.raises(KeyError):
        call(ASGIMiddleware(afailing, keys=KEY))
    server = [s for s in spans(memory_sink) if s["name"] == SERVER]
    assert [s["error_type"] for s in server] == ["KeyError", "KeyError"]


def test_a_wsgi_body_is_produced_under_the_server_span(memory_sink: MemorySink) -> None:
    def streaming(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("201 Created", [])

        def body() -> Iterator[bytes]:
            for n in range(2):
                with jobtrace.Trace(f"chunk-{n}"):
                    yield b"x"

        return body()

    app = WSGIMiddleware(streaming, keys=KEY)
    with jobtrace.Trace("caller"):
        assert call(app, headers(SIGNER)) == 201
        assert current_span() is not None and current_span().name == "caller"  # type: ignore[union-attr]
    s = by_name(memory_sink)
    assert s["chunk-0"]["parent_id"] == s["chunk-1"]["parent_id"] == s[SERVER]["span_id"]
    assert s[SERVER]["info"]["http.response.status_code"] == 201


def test_the_wsgi_middleware_leaves_the_calling_context_as_it_was(
    memory_sink: MemorySink,
) -> None:
    app = WSGIMiddleware(wsgi_hello, keys=KEY)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/hello", "SCRIPT_NAME": ""}
    with jobtrace.Trace("server thread") as outer:
        body = app(environ, lambda status, hdrs, exc=None: None)
        assert current_span() is outer
        assert b"".join(body) == b"hello"
        body.close()
        assert current_span() is outer
    assert by_name(memory_sink)[SERVER]["parent_id"] is None


def test_starlette_routes_are_recorded_with_their_template(memory_sink: MemorySink) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["id"])

    app = Starlette(routes=[Route("/items/{id}", item)])
    app.add_middleware(ASGIMiddleware, keys=KEY)
    assert call(app, path="/items/42") == 200
    assert call(app, path="/nowhere") == 404
    s = by_name(memory_sink)
    assert s["HTTP GET /items/42"]["info"]["http.route"] == "/items/{id}"
    assert s["HTTP GET /nowhere"]["info"]["http.response.status_code"] == 404


def test_lifespan_and_websocket_scopes_pass_through(memory_sink: MemorySink) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = ASGIMiddleware(app, keys=KEY)
    for kind in ("lifespan", "websocket"):
        asyncio.run(middleware({"type": kind}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan", "websocket"] and spans(memory_sink) == []


# --- outgoing headers and the client helpers -----------------------------------------------


def test_headers_are_empty_outside_a_trace_and_unsigned_without_a_signer() -> None:
    assert headers(SIGNER) == {}
    with jobtrace.Trace("caller") as caller:
        trace_id, span_id, _ = caller.ids
        assert headers() == {"traceparent": f"00-{trace_id}-{span_id}-01"}
        out = inject({"Accept": "text/plain"}, SIGNER)
    assert set(out) == {"Accept", "traceparent", X_TRACE_INFO, X_TRACE_HMAC}
    parent = SIGNER.verify(out[X_TRACE_INFO], out[X_TRACE_HMAC])
    assert (f"{parent.trace_id:032x}", f"{parent.span_id:016x}") == (trace_id, span_id)


def test_the_httpx_transport_signs_and_wraps_the_call_in_a_client_span(
    memory_sink: MemorySink,
) -> None:
    server = WSGIMiddleware(wsgi_hello, keys=KEY)
    transport = TracingTransport(KEY, transport=httpx.WSGITransport(app=server))
    with jobtrace.Trace("caller"), httpx.Client(transport=transport) as client:
        assert client.get("http://user:pw@svc:8080/hello?token=x").status_code == 200
    s = by_name(memory_sink)
    client_span = s["HTTP GET svc:8080/hello"]
    assert client_span["parent_id"] == s["caller"]["span_id"]
    assert s[SERVER]["parent_id"] == client_span["span_id"]
    assert client_span["info"] == {
        "http.request.method": "GET",
        "url.full": "http://svc:8080/hello",  # no credentials, no query
        "http.response.status_code": 200,
    }


def test_without_a_client_span_the_server_span_is_the_callers_child(
    memory_sink: MemorySink,
) -> None:
    server = WSGIMiddleware(wsgi_hello, keys=KEY)
    transport = TracingTransport(
        SIGNER, transport=httpx.WSGITransport(app=server), client_span=False
    )
    with jobtrace.Trace("caller") as caller, httpx.Client(transport=transport) as client:
        client.get("http://svc/hello")
    assert [s["name"] for s in spans(memory_sink)] == ["handler", SERVER, "caller"]
    assert by_name(memory_sink)[SERVER]["parent_id"] == caller.ids[1]


def test_the_async_httpx_transport_joins_an_asgi_service(memory_sink: MemorySink) -> None:
    server = ASGIMiddleware(asgi_hello, keys=KEY)

    async def go() -> None:
        transport = AsyncTracingTransport(SIGNER, transport=httpx.ASGITransport(app=server))
        async with httpx.AsyncClient(transport=transport) as client:
            with jobtrace.Trace("caller"):
                await asyncio.gather(*(client.get("http://svc/hello") for _ in range(3)))

    asyncio.run(go())
    s = spans(memory_sink)
    client_ids = {x["span_id"] for x in s if x["name"] == "HTTP GET svc/hello"}
    servers = [x for x in s if x["name"] == SERVER]
    assert len(client_ids) == 3 and {x["parent_id"] for x in servers} == client_ids
    assert len({x["trace_id"] for x in s}) == 1


def test_a_failed_call_ends_its_client_span_with_the_error(memory_sink: MemorySink) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    transport = TracingTransport(SIGNER, transport=httpx.MockTransport(refuse))
    with (
        jobtrace.Trace("caller"),
        httpx.Client(transport=transport) as client,
        pytest.raises(httpx.ConnectError, match="refused"),
    ):
        client.get("http://svc/hello")
    assert by_name(memory_sink)["HTTP GET svc/hello"]["error_type"].endswith("ConnectError")


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def wsgi_url() -> Iterator[str]:
    """The WSGI hello service behind the middleware, on a loopback port, in a thread."""
    server = make_server("127.0.0.1", 0, WSGIMiddleware(wsgi_hello, keys=KEY), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_requests_session_joins_the_service(memory_sink: MemorySink, wsgi_url: str) -> None:
    with traced_session(KEY, max_retries=1) as session, jobtrace.Trace("caller"):
        assert session.get(f"{wsgi_url}/hello").text == "hello"
        plain = traced_session(client_span=False)
        assert plain.get(f"{wsgi_url}/hello").status_code == 200
    s = spans(memory_sink)
    caller = next(x for x in s if x["name"] == "caller")
    client_span = next(x for x in s if x["name"].startswith("HTTP GET 127.0.0.1"))
    joined, unsigned = (x for x in s if x["name"] == SERVER)
    assert client_span["parent_id"] == caller["span_id"]
    assert joined["parent_id"] == client_span["span_id"]
    assert joined["trace_id"] == caller["trace_id"]
    assert unsigned["parent_id"] is None  # a bare traceparent is not trusted by default


# --- OSProfiler's names -----------------------------------------------------------------------


@pytest.fixture
def osprofiler_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(web, "_ENABLED", None)
    monkeypatch.setattr(web, "_HMAC_KEYS", None)
    yield
    profiler.clean()


def test_get_trace_id_headers_signs_with_the_profilers_key(osprofiler_state: None) -> None:
    assert web.get_trace_id_headers() == {}
    profiler.init(hmac_key=KEY)
    with jobtrace.Trace("caller") as caller:
        sent = web.get_trace_id_headers()
    parent = SIGNER.verify(sent[web.X_TRACE_INFO], sent[web.X_TRACE_HMAC])
    assert f"{parent.span_id:016x}" == caller.ids[1]


def test_the_osprofiler_middleware_traces_trusted_requests_only(
    osprofiler_state: None, memory_sink: MemorySink
) -> None:
    forwarded: list[dict[str, str]] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        forwarded.append(web.get_trace_id_headers())  # the app calls the next service
        start_response("200 OK", [])
        return [b"ok"]

    middleware = web.WsgiMiddleware(app, hmac_keys="other, " + KEY, enabled=True)
    with jobtrace.Trace("caller") as caller:
        assert call(middleware, headers(SIGNER)) == 200
        assert call(middleware, tampered(headers(SIGNER))) == 200
        assert call(middleware) == 200
    [server] = [s for s in spans(memory_sink) if s["name"] == "wsgi"]  # OSProfiler's name
    assert server["parent_id"] == caller.ids[1]
    # As in OSProfiler, the app's own calls sign with the key that verified the request.
    onward = SIGNER.verify(forwarded[0][X_TRACE_INFO], forwarded[0][X_TRACE_HMAC])
    assert f"{onward.span_id:016x}" == server["span_id"]
    assert forwarded[1:] == [{}, {}]  # untrusted requests run without a profiler


def test_the_osprofiler_middleware_obeys_enabled_enable_and_disable(
    osprofiler_state: None, memory_sink: MemorySink
) -> None:
    off = web.WsgiMiddleware.factory({}, hmac_keys=KEY)(wsgi_hello)
    with jobtrace.Trace("caller"):
        call(off, headers(SIGNER))
        web.enable("rotated," + KEY)
        call(off, headers(TraceSigner("rotated")))
        web.disable()
        call(off, headers(SIGNER))
    assert [s["name"] for s in spans(memory_sink)].count("wsgi") == 1
