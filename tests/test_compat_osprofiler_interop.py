"""A mixed fleet: services still on the real OSProfiler and services on jobtrace trace one
request together when the mixed-fleet mode is on, and refuse each other's headers when off."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import jobtrace
from jobtrace import model, profiler, web
from jobtrace.report.traces import osprofiler_messages
from jobtrace.sinks.memory import MemorySink

osp_profiler = pytest.importorskip("osprofiler.profiler")
osp_web = pytest.importorskip("osprofiler.web")
osp_notifier = pytest.importorskip("osprofiler.notifier")
webob = pytest.importorskip("webob")

KEY = "fleet-key"


def spans(sink: MemorySink) -> list[dict[str, Any]]:
    jobtrace.flush()
    return [model.to_dict(r) for r in sink.of_kind(model.SPAN)]


@pytest.fixture(autouse=True)
def fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Both libraries reset; the real OSProfiler's messages are collected."""
    messages: list[dict[str, Any]] = []
    for module in (web, osp_web):
        monkeypatch.setattr(module, "_ENABLED", None)
        monkeypatch.setattr(module, "_HMAC_KEYS", None)
    monkeypatch.setattr(web, "_MIXED_FLEET", None)
    profiler.clean()
    osp_profiler.clean()
    osp_notifier.set(messages.append)
    yield messages
    osp_notifier.set(osp_notifier._noop_notifier)
    profiler.clean()
    osp_profiler.clean()


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def osprofiler_caller() -> tuple[dict[str, str], str, str]:
    """An OSProfiler service's outgoing call: (its headers, its base id, its point's id)."""
    caller = osp_profiler.init(KEY)
    with osp_profiler.Trace("client-call"):
        sent = osp_web.get_trace_id_headers()
        point_id = caller.get_id()
    base_id = caller.get_base_id()
    osp_profiler.clean()
    return sent, base_id, point_id


def test_a_jobtrace_service_joins_an_osprofiler_callers_trace(memory_sink: MemorySink) -> None:
    web.set_mixed_fleet(True)
    sent, base_id, point_id = osprofiler_caller()
    request = webob.Request.blank("/servers", headers=sent)
    response = request.get_response(web.WsgiMiddleware(hello, hmac_keys=KEY, enabled=True))
    assert response.body == b"hello"
    [wsgi] = spans(memory_sink)
    assert wsgi["name"] == "wsgi"
    assert wsgi["trace_id"] == base_id.replace("-", "")  # OSProfiler's base id is a UUID
    start, _stop = osprofiler_messages([wsgi])
    assert (start["base_id"], start["parent_id"]) == (base_id, point_id)


def test_an_osprofiler_service_joins_a_jobtrace_callers_trace(
    fleet: list[dict[str, Any]],
) -> None:
    web.set_mixed_fleet(True)
    caller = profiler.init(KEY)
    with profiler.Trace("client-call"):
        sent = web.get_trace_id_headers()
        point_id = caller.get_id()
    base_id = caller.get_base_id()
    profiler.clean()
    request = webob.Request.blank("/servers", headers=sent)
    osprofiler_service = osp_web.WsgiMiddleware(hello, hmac_keys=KEY, enabled=True)
    assert request.get_response(osprofiler_service).body == b"hello"
    start, stop = fleet
    assert (start["name"], stop["name"]) == ("wsgi-start", "wsgi-stop")
    assert (start["base_id"], start["parent_id"]) == (base_id, point_id)


def test_without_mixed_fleet_each_side_refuses_the_others_headers(
    memory_sink: MemorySink, fleet: list[dict[str, Any]]
) -> None:
    sent, _, _ = osprofiler_caller()
    request = webob.Request.blank("/servers", headers=sent)
    request.get_response(web.WsgiMiddleware(hello, hmac_keys=KEY, enabled=True))
    assert spans(memory_sink) == []  # OSProfiler's header: SHA-1, never expires
    fleet.clear()  # the OSProfiler caller's own messages

    profiler.init(KEY)
    with profiler.Trace("client-call"):
        ours = web.get_trace_id_headers()
    profiler.clean()
    request = webob.Request.blank("/servers", headers=ours)
    request.get_response(osp_web.WsgiMiddleware(hello, hmac_keys=KEY, enabled=True))
    assert fleet == []  # jobtrace's header: SHA-256 with an expiry, unknown to OSProfiler
