"""The OSProfiler layer keeps OSProfiler's rules: what a service switching one import relies on.

Recording only inside ``init``, ids kept as given, the first profiler kept, headers right
after ``init``, the decorators' info, the WSGI point, and the sqlalchemy, requests,
notifier, initializer and opts modules. The interop with the real library is in
test_compat_osprofiler_interop.py.
"""

from __future__ import annotations

import doctest
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

import jobtrace
from jobtrace import model, profiler, web
from jobtrace.compat.osprofiler import initializer, notifier, opts
from jobtrace.compat.osprofiler import requests as osp_requests
from jobtrace.compat.osprofiler import sqlalchemy as osp_sqlalchemy
from jobtrace.report.traces import osprofiler_messages
from jobtrace.sinks.memory import MemorySink
from jobtrace.tracing.signing import X_TRACE_HMAC, X_TRACE_INFO, TraceSigner
from tests.cli_helpers import jobtrace_cli

KEY = "osprofiler-test-key"
UUID = "4e3e0ec6-2938-40b1-8504-09eb1d4b0dee"


def spans(sink: MemorySink) -> list[dict[str, Any]]:
    jobtrace.flush()
    return [model.to_dict(r) for r in sink.of_kind(model.SPAN)]


@pytest.fixture(autouse=True)
def clean_layer(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without a profiler, notifier or middleware override."""
    profiler.clean()
    monkeypatch.setattr(web, "_ENABLED", None)
    monkeypatch.setattr(web, "_HMAC_KEYS", None)
    monkeypatch.setattr(web, "_MIXED_FLEET", None)
    yield
    profiler.clean()
    notifier.set(notifier._noop_notifier)
    notifier.clear_notifier_cache()
    osp_sqlalchemy.enable()
    osp_requests.disable()


# -- the profiler ------------------------------------------------------------------------------


@profiler.trace("work", info={"team": "a"}, hide_result=False)
def work(x: int, y: int = 2) -> int:
    return x * y


def test_nothing_is_recorded_until_init(memory_sink: MemorySink) -> None:
    profiler.start("ignored")
    profiler.stop()
    with profiler.Trace("ignored too"):
        assert work(3) == 6
    assert spans(memory_sink) == []
    profiler.init(KEY)
    assert work(3) == 6
    profiler.clean()
    assert work(4) == 8  # after clean(), ignored again
    [point] = spans(memory_sink)
    assert point["name"] == "work"
    assert point["info"]["team"] == "a"
    assert point["info"]["function"]["args"] == "(3,)"
    assert point["info"]["function"]["result"] == "6"


def test_a_second_init_keeps_the_first_profiler() -> None:
    first = profiler.init(KEY, base_id="aaa", parent_id="bbb")
    second = profiler.init("other", base_id="ccc")
    assert second is first and profiler.get() is first
    assert first.get_base_id() == "aaa" and first.hmac_key == KEY


def test_ids_are_kept_as_given_and_carried_by_the_points(memory_sink: MemorySink) -> None:
    p = profiler.init(KEY, base_id=UUID, parent_id="request-7")
    assert (p.get_base_id(), p.get_id()) == (UUID, "request-7")
    with profiler.Trace("outer"):
        outer_id = p.get_id()
        assert p.get_parent_id() == "request-7"
        with profiler.Trace("inner"):
            assert p.get_parent_id() == outer_id
    assert p.get_id() == "request-7"
    by_name = {s["name"]: s for s in spans(memory_sink)}
    assert by_name["outer"]["trace_id"] == UUID.replace("-", "")
    assert by_name["outer"]["span_id"] == outer_id
    assert by_name["inner"]["parent_id"] == outer_id
    assert by_name["outer"]["info"]["osprofiler.parent_id"] == "request-7"
    messages = osprofiler_messages(spans(memory_sink))
    assert {m["base_id"] for m in messages} == {UUID}
    assert messages[0]["parent_id"] == "request-7"


def test_any_text_is_a_base_id_and_trace_show_finds_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'points.db'}"
    jobtrace.configure(url=url, install_signal_handlers=False)
    profiler.init(KEY, base_id="nova-boot-42")
    with profiler.Trace("boot"):
        pass
    profiler.clean()
    jobtrace.flush()
    for option in ("--store", "--connection-string"):
        shown = jobtrace_cli(
            "trace", "show", "nova-boot-42", "--osprofiler", option, url, cwd=tmp_path
        )
        assert shown.returncode == 0, shown.stderr
        assert '"base_id": "nova-boot-42"' in shown.stdout
        assert '"boot-start"' in shown.stdout


def test_a_short_base_id_is_not_read_as_the_prefix_of_another_trace(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'points.db'}"
    jobtrace.configure(url=url, install_signal_handlers=False)
    for base_id, name in (("beef" + "0" * 27 + "1", "other"), ("beef", "mine")):
        profiler.init(KEY, base_id=base_id)
        with profiler.Trace(name):
            pass
        profiler.clean()
    jobtrace.flush()
    shown = jobtrace_cli("trace", "show", "beef", "--json", "--store", url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert '"mine"' in shown.stdout and '"other"' not in shown.stdout


def test_trace_list_takes_connection_string_but_not_with_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'points.db'}"
    jobtrace.configure(url=url, install_signal_handlers=False)
    profiler.init(KEY, base_id=UUID)
    with profiler.Trace("boot"):
        pass
    profiler.clean()
    jobtrace.flush()
    listed = jobtrace_cli("trace", "list", "--json", "--connection-string", url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert UUID.replace("-", "") in listed.stdout
    both = jobtrace_cli("trace", "list", "--store", url, "--connection-string", url, cwd=tmp_path)
    assert both.returncode == 2 and "not both" in both.stderr


def test_trace_show_finds_a_uuid_base_id_with_its_dashes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'points.db'}"
    jobtrace.configure(url=url, install_signal_handlers=False)
    profiler.init(KEY, base_id=UUID)
    with profiler.Trace("boot"):
        pass
    profiler.clean()
    jobtrace.flush()
    shown = jobtrace_cli("trace", "show", UUID, "--json", "--connection-string", url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert UUID.replace("-", "") in shown.stdout


def test_stop_info_lands_on_the_stop_message(memory_sink: MemorySink) -> None:
    profiler.init(KEY)
    profiler.start("step", info={"phase": "begin"})
    profiler.stop(info={"rows": 3})
    with pytest.raises(KeyError), profiler.Trace("fails"):
        raise KeyError("missing")
    recorded = spans(memory_sink)
    start, stop, _, fail_stop = osprofiler_messages(recorded)
    assert start["name"] == "step-start" and start["info"]["phase"] == "begin"
    assert "rows" not in start["info"]
    assert stop["name"] == "step-stop" and stop["info"]["rows"] == 3
    assert fail_stop["info"]["etype"] == "KeyError"
    failed = next(s for s in recorded if s["name"] == "fails")
    assert failed["error_type"] == "KeyError" and failed["error_message"] == "missing"


def test_headers_right_after_init_name_the_new_trace() -> None:
    p = profiler.init(KEY)
    sent = web.get_trace_id_headers()
    assert set(sent) == {X_TRACE_INFO, X_TRACE_HMAC}
    caller = TraceSigner(KEY).verify(sent[X_TRACE_INFO], sent[X_TRACE_HMAC])
    assert f"{caller.trace_id:032x}" == p.get_base_id()


def test_jobtrace_spans_inside_a_profiler_join_its_trace(memory_sink: MemorySink) -> None:
    p = profiler.init(KEY, base_id=UUID)
    with profiler.Trace("point"), jobtrace.Trace("native"):
        sent = web.get_trace_id_headers()
    by_name = {s["name"]: s for s in spans(memory_sink)}
    assert by_name["native"]["trace_id"] == UUID.replace("-", "")
    assert by_name["native"]["parent_id"] == by_name["point"]["span_id"]
    caller = TraceSigner(KEY).verify(sent[X_TRACE_INFO], sent[X_TRACE_HMAC])
    assert f"{caller.span_id:016x}" == by_name["native"]["span_id"]
    assert p.get_base_id() == UUID


class Base:
    def inherited(self) -> str:
        return "base"

    def _hidden(self) -> str:
        return "hidden"


@profiler.trace_cls("rpc")
class Child(Base):
    def own(self) -> str:
        return "own"

    @staticmethod
    def helper() -> str:
        return "helper"


def test_trace_cls_traces_inherited_methods(memory_sink: MemorySink) -> None:
    profiler.init(KEY)
    child = Child()
    assert (child.inherited(), child.own(), child._hidden(), Child.helper()) == (
        "base",
        "own",
        "hidden",
        "helper",
    )
    assert Base().inherited() == "base"  # the base class itself is left alone
    names = sorted(s["info"]["function"]["name"].rsplit(".", 2)[-2:][1] for s in spans(memory_sink))
    assert names == ["inherited", "own"]


def test_allow_multiple_trace_false_refuses_a_traced_method() -> None:
    @profiler.trace_cls("once")
    class Api:
        def call(self) -> None:
            pass

    with pytest.raises(ValueError, match="been traced"):
        profiler.trace_cls("twice", allow_multiple_trace=False)(Api)
    with pytest.raises(ValueError, match="been traced"):
        profiler.trace("again", allow_multiple_trace=False)(Api.call)

    with pytest.raises(ValueError, match="been traced"):

        class Meta(metaclass=profiler.TracedMeta):
            __trace_args__ = {"name": "rpc", "allow_multiple_trace": False}  # noqa: RUF012
            call = Api.call


def test_traced_meta_takes_allow_multiple_trace_and_traces_subclasses(
    memory_sink: MemorySink,
) -> None:
    class Service(metaclass=profiler.TracedMeta):
        __trace_args__ = {"name": "svc", "allow_multiple_trace": True}  # noqa: RUF012

        def ping(self) -> str:
            return "pong"

    class Extended(Service):
        def extra(self) -> int:
            return 1

    profiler.init(KEY)
    assert Extended().ping() == "pong" and Extended().extra() == 1
    assert [s["name"] for s in spans(memory_sink)] == ["svc", "svc"]


def test_an_async_function_is_timed_until_it_finishes(memory_sink: MemorySink) -> None:
    import asyncio

    @profiler.trace("slow")
    async def slow() -> int:
        await asyncio.sleep(0)
        return 1

    async def main() -> int:
        profiler.init(KEY)
        return await slow()

    assert asyncio.run(main()) == 1
    [point] = spans(memory_sink)
    assert point["name"] == "slow" and point["error_type"] is None


def test_concurrent_tasks_sharing_a_profiler_nest_their_own_points(
    memory_sink: MemorySink,
) -> None:
    import asyncio

    async def worker(label: str, mine: asyncio.Event, theirs: asyncio.Event) -> str:
        with profiler.Trace(label):
            mine.set()
            await theirs.wait()  # both outer points are open at once from here
            with profiler.Trace(f"{label}-inner"):
                await asyncio.sleep(0)
            return profiler.get().get_id()  # type: ignore[union-attr]

    async def main() -> list[str]:
        profiler.init(KEY)
        a, b = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(worker("a", a, b), worker("b", b, a))

    ids = asyncio.run(main())
    by_name = {s["name"]: s for s in spans(memory_sink)}
    assert ids == [by_name["a"]["span_id"], by_name["b"]["span_id"]]
    assert by_name["a-inner"]["parent_id"] == by_name["a"]["span_id"]
    assert by_name["b-inner"]["parent_id"] == by_name["b"]["span_id"]
    assert by_name["a"]["parent_id"] is None and by_name["b"]["parent_id"] is None


# -- the WSGI middleware -----------------------------------------------------------------------


def wsgi_call(app: Callable[..., Any], headers: dict[str, str], path: str = "/v2/servers") -> bytes:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "limit=5",
        "wsgi.url_scheme": "http",
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    body = app(environ, lambda status, headers, exc_info=None: None)
    try:
        return b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()


def test_the_middleware_point_is_named_and_described_as_in_osprofiler(
    memory_sink: MemorySink,
) -> None:
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append(profiler.get())
        with profiler.Trace("handler"):
            pass
        start_response("200 OK", [])
        return [b"ok"]

    middleware = web.WsgiMiddleware(app, hmac_keys=f"old, {KEY}", enabled=True)
    assert middleware.hmac_keys == ["old", KEY]
    caller = profiler.init(KEY, base_id=UUID)
    with profiler.Trace("client"):
        sent = web.get_trace_id_headers()
        client_id = caller.get_id()
    profiler.clean()
    assert wsgi_call(middleware, sent) == b"ok"
    assert wsgi_call(middleware, {}) == b"ok"  # no header: served, not traced
    assert seen[0] is not None and seen[1] is None
    assert profiler.get() is None  # the request's profiler stayed in the request
    by_name = {s["name"]: s for s in spans(memory_sink)}
    wsgi = by_name["wsgi"]
    assert wsgi["info"]["request"] == {
        "path": "/v2/servers",
        "query": "limit=5",
        "method": "GET",
        "scheme": "http",
    }
    assert wsgi["parent_id"] == client_id
    assert wsgi["trace_id"] == by_name["client"]["trace_id"]
    assert by_name["handler"]["parent_id"] == wsgi["span_id"]


def test_the_middleware_takes_a_webob_request_as_osprofiler_does(memory_sink: MemorySink) -> None:
    webob = pytest.importorskip("webob")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hi"]

    profiler.init(KEY)
    sent = web.get_trace_id_headers()
    profiler.clean()
    request = webob.Request.blank("/a%20b?x=1", headers=sent)
    response = web.WsgiMiddleware(app, hmac_keys=KEY, enabled=True)(request)
    assert response.body == b"hi"
    [wsgi] = spans(memory_sink)
    assert wsgi["info"]["request"]["path"] == "/a%20b"
    assert wsgi["info"]["request"]["query"] == "x=1"


def test_enable_and_disable_override_every_middleware(memory_sink: MemorySink) -> None:
    profiler.init("rotated")
    sent = web.get_trace_id_headers()
    profiler.clean()
    middleware = web.WsgiMiddleware(lambda e, s: [b""], hmac_keys=KEY)  # off, other key
    wsgi_call(middleware, sent)
    web.enable(f"rotated,{KEY}")
    wsgi_call(middleware, sent)
    web.disable()
    wsgi_call(middleware, sent)
    assert [s["name"] for s in spans(memory_sink)] == ["wsgi"]


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_points_are_recorded_in_requests_jobtrace_middleware_joined(
    kind: str, memory_sink: MemorySink
) -> None:
    """A service on jobtrace's own middleware keeps its OSProfiler-style points: recorded
    in requests that joined a trusted caller's trace, not in the others."""
    import asyncio

    import httpx

    from jobtrace.tracing import ASGIMiddleware, WSGIMiddleware, headers

    onward: list[dict[str, str]] = []

    def handle() -> None:
        work(1)
        onward.append(web.get_trace_id_headers())

    def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        handle()
        start_response("200 OK", [])
        return [b"ok"]

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        handle()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    signer = TraceSigner(KEY)
    with jobtrace.Trace("caller"):
        sent = headers(signer)

    if kind == "wsgi":
        app = WSGIMiddleware(wsgi_app, keys=signer)
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://s") as c:
            c.get("/a", headers=sent)
            c.get("/b")  # not from a trusted caller: a new trace, no OSProfiler points
    else:
        asgi = ASGIMiddleware(asgi_app, keys=signer)

        async def go() -> None:
            transport = httpx.ASGITransport(app=asgi)
            async with httpx.AsyncClient(transport=transport, base_url="http://s") as c:
                await c.get("/a", headers=sent)
                await c.get("/b")

        asyncio.run(go())
    recorded = spans(memory_sink)
    [point] = [s for s in recorded if s["name"] == "work"]
    [server] = [s for s in recorded if s["name"] == "HTTP GET /a"]
    assert point["parent_id"] == server["span_id"]
    assert point["trace_id"] == server["trace_id"]
    assert onward[1] == {}
    caller = signer.verify(onward[0][X_TRACE_INFO], onward[0][X_TRACE_HMAC])
    assert f"{caller.span_id:016x}" == server["span_id"]
    assert profiler.get() is None


# -- mixed fleet -------------------------------------------------------------------------------


def osprofiler_headers(base_id: str, parent_id: str, key: str) -> dict[str, str]:
    """Headers as OSProfiler signs them, made here from its documented format."""
    import base64
    import hashlib
    import hmac
    import json

    data = base64.urlsafe_b64encode(
        json.dumps({"base_id": base_id, "parent_id": parent_id}).encode()
    ).decode()
    mac = hmac.new(key.encode(), data.encode(), hashlib.sha1).hexdigest()
    return {X_TRACE_INFO: data, X_TRACE_HMAC: mac}


def test_osprofiler_headers_are_refused_unless_mixed_fleet_is_on(
    memory_sink: MemorySink, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    middleware = web.WsgiMiddleware(lambda e, s: [b""], hmac_keys=KEY, enabled=True)
    sent = osprofiler_headers(UUID, "7d4e4c1a-3f05-4c2e-9a43-6a8b4d1d2c11", KEY)
    wsgi_call(middleware, sent)
    assert spans(memory_sink) == []
    assert "mixed-fleet" in caplog.text
    monkeypatch.setenv(web.ENV_MIXED_FLEET, "1")
    assert web.mixed_fleet()
    wsgi_call(middleware, sent)
    [wsgi] = spans(memory_sink)
    assert wsgi["trace_id"] == UUID.replace("-", "")
    assert wsgi["info"]["osprofiler.parent_id"] == "7d4e4c1a-3f05-4c2e-9a43-6a8b4d1d2c11"
    web.set_mixed_fleet(False)  # the function wins over the environment
    assert not web.mixed_fleet()


def test_mixed_fleet_emits_osprofiler_headers_with_the_ids_as_given() -> None:
    web.set_mixed_fleet(True)
    profiler.init(KEY, base_id="base-text", parent_id="parent-text")
    sent = web.get_trace_id_headers()
    assert sent == osprofiler_headers("base-text", "parent-text", KEY)


def test_a_forged_or_tampered_header_is_not_trusted(memory_sink: MemorySink) -> None:
    web.set_mixed_fleet(True)
    middleware = web.WsgiMiddleware(lambda e, s: [b""], hmac_keys=KEY, enabled=True)
    wsgi_call(middleware, osprofiler_headers("a", "b", "not-the-key"))
    good = osprofiler_headers("a", "b", KEY)
    wsgi_call(middleware, {**good, X_TRACE_INFO: good[X_TRACE_INFO][:-2] + "xx"})
    wsgi_call(middleware, {X_TRACE_INFO: good[X_TRACE_INFO]})
    assert spans(memory_sink) == []


def test_odd_keys_or_header_values_never_break_the_request(memory_sink: MemorySink) -> None:
    web.set_mixed_fleet(True)
    request = SimpleNamespace(
        headers={X_TRACE_INFO: "d\u00e9j\u00e0-\u2603", X_TRACE_HMAC: "0" * 40},
        get_response=lambda app: "served",
    )
    assert web.WsgiMiddleware(None, hmac_keys=["", KEY], enabled=True)(request) == "served"
    request.headers[X_TRACE_HMAC] = "0" * 64
    assert web.WsgiMiddleware(None, hmac_keys=["", KEY], enabled=True)(request) == "served"
    assert spans(memory_sink) == []


# -- sqlalchemy, requests, notifier, initializer, opts -----------------------------------------


def test_every_query_is_a_child_point_with_its_statement(memory_sink: MemorySink) -> None:
    engine = sa.create_engine("sqlite://")
    osp_sqlalchemy.add_tracing(sa, engine, "db", hide_result=False)
    with engine.connect() as conn:
        conn.execute(sa.text("select 0")).all()  # no profiler: not recorded
        profiler.init(KEY)
        with profiler.Trace("request"):
            conn.execute(sa.text("select :x"), {"x": 5}).all()
            with pytest.raises(sa.exc.OperationalError):
                conn.execute(sa.text("select * from missing"))
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in spans(memory_sink):
        by_name.setdefault(s["name"], []).append(s)
    [request] = by_name["request"]
    ok, failed = sorted(by_name["db"], key=lambda s: s["start_ns"])
    assert ok["parent_id"] == failed["parent_id"] == request["span_id"]
    assert ok["info"]["db"]["statement"] == "select ?"
    assert list(ok["info"]["db"]["params"]) == [5]
    assert ok["info"]["osprofiler.stop"] == {"db": {"rowcount": -1}}
    assert failed["error_type"] == "sqlite3.OperationalError"
    assert "no such table" in failed["error_message"]


def test_disable_makes_add_tracing_add_nothing(memory_sink: MemorySink) -> None:
    osp_sqlalchemy.disable()
    engine = sa.create_engine("sqlite://")
    osp_sqlalchemy.add_tracing(sa, engine, "db")
    profiler.init(KEY)
    with engine.connect() as conn:
        conn.execute(sa.text("select 1"))
    assert spans(memory_sink) == []


@pytest.fixture
def http_echo() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A local HTTP server that records the headers of each request it gets."""
    received: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append(dict(self.headers))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()
    server.server_close()


def test_requests_calls_are_points_that_carry_the_headers(
    memory_sink: MemorySink, http_echo: tuple[str, list[dict[str, str]]]
) -> None:
    import requests

    url, received = http_echo
    osp_requests.enable()
    requests.get(f"{url}/untraced")
    profiler.init(KEY)
    requests.get(f"{url}/items?page=2")
    osp_requests.disable()
    requests.get(f"{url}/after")
    [point] = spans(memory_sink)
    assert point["name"] == "http"
    assert point["info"]["requests"]["path"] == "/items"
    assert point["info"]["requests"]["query"] == "page=2"
    assert point["info"]["osprofiler.stop"] == {"requests": {"status_code": 204}}
    assert X_TRACE_INFO not in received[0] and X_TRACE_INFO not in received[2]
    caller = TraceSigner(KEY).verify(received[1][X_TRACE_INFO], received[1][X_TRACE_HMAC])
    assert f"{caller.span_id:016x}" == point["span_id"]


def test_a_notifier_sees_every_message_and_cannot_break_the_call() -> None:
    messages: list[dict[str, Any]] = []
    notifier.set(messages.append)
    p = profiler.init(KEY, base_id="b", parent_id="p")
    assert work(2) == 4
    start, stop = messages
    assert (start["name"], stop["name"]) == ("work-start", "work-stop")
    assert start["base_id"] == "b" and start["parent_id"] == "p"
    assert start["trace_id"] == stop["trace_id"] != "p"
    assert stop["info"]["function"] == {"result": "4"}
    assert p.get_id() == "p"

    def broken(info: dict[str, Any]) -> None:
        raise RuntimeError("collector down")

    notifier.set(broken)
    assert work(3) == 6


def test_create_points_jobtrace_at_a_store_url_and_ignores_other_backends(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert notifier.create(url, project="p") is notifier._noop_notifier
    assert jobtrace._config.current().url == url
    assert notifier.create("redis://cache:6379") is notifier._noop_notifier
    assert jobtrace._config.current().url == url


def test_init_from_conf_maps_the_profiler_options(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    conf = SimpleNamespace(
        profiler=SimpleNamespace(
            enabled=True,
            hmac_keys="k1,k2",
            connection_string=url,
            trace_sqlalchemy=False,
            trace_requests=False,
            mixed_fleet=True,
        )
    )
    initializer.init_from_conf(conf, None, "project", "service", "host")
    assert (web._ENABLED, web._HMAC_KEYS) == (True, ["k1", "k2"])
    assert jobtrace._config.current().url == url
    assert osp_sqlalchemy._DISABLED and web.mixed_fleet()
    conf.profiler.enabled = False
    initializer.init_from_conf(conf, None, "project", "service", "host")
    assert web._ENABLED is False


def test_opts_register_the_profiler_group_with_oslo_config() -> None:
    cfg = pytest.importorskip("oslo_config.cfg")
    conf = cfg.ConfigOpts()
    opts.set_defaults(conf, enabled=True, trace_sqlalchemy=True, hmac_keys="k")
    conf([])
    assert opts.is_trace_enabled(conf) and opts.is_db_trace_enabled(conf)
    assert conf.profiler.connection_string is None
    assert conf.profiler.mixed_fleet is False
    assert [group for group, _ in opts.list_opts()] == ["profiler"]
    opts.disable_web_trace(conf)
    assert web._ENABLED is False
    opts.enable_web_trace(conf)
    assert web._ENABLED is True and web._HMAC_KEYS == ["k"]


DOCS = Path(__file__).resolve().parent.parent / "docs" / "compat" / "osprofiler.md"


def test_the_docs_example_runs_verbatim(memory_sink: MemorySink) -> None:
    import re

    (example,) = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(example, str(DOCS), "exec"), namespace)
    names = sorted(s["name"] for s in spans(memory_sink))
    assert names == ["db", "request"]
    sent = namespace["headers"]
    caller = TraceSigner("a-secret-key").verify(sent[X_TRACE_INFO], sent[X_TRACE_HMAC])
    assert f"{caller.trace_id:032x}" == "4e3e0ec6293840b1850409eb1d4b0dee"


@pytest.mark.parametrize(
    "module",
    ["profiler", "notifier", "sqlalchemy", "initializer", "opts", "web", "requests"],
)
def test_the_module_examples_run_as_printed(module: str, memory_sink: MemorySink) -> None:
    import importlib

    loaded = importlib.import_module(f"jobtrace.compat.osprofiler.{module}")
    result = doctest.testmod(loaded, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
