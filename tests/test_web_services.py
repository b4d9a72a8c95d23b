"""A trace that crosses two real services over HTTP on loopback: this process calls an
ASGI service under uvicorn, which calls a WSGI service under wsgiref, each in its own
process, all writing to one SQLite store. And what a bad header does to the real thing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import requests
import sqlalchemy as sa

import jobtrace
from jobtrace import _config
from jobtrace.store import Store, schema
from jobtrace.tracing import TraceSigner, TracingTransport, headers, traced_session
from jobtrace.tracing.signing import X_TRACE_INFO

KEY = "services-key"
SCRIPT = Path(__file__).with_name("web_services.py")


class Service(NamedTuple):
    url: str
    process: subprocess.Popen[str]
    stderr: Path


class Services(NamedTuple):
    front: Service
    back: Service
    store_url: str

    def flush(self) -> None:
        for service in (self.front, self.back):
            requests.get(f"{service.url}/flush", timeout=30).raise_for_status()
        jobtrace.flush()


def start(name: str, args: list[str], directory: Path, env: dict[str, str]) -> Service:
    stderr = directory / f"{name}.stderr"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), name, *args],
        stdout=subprocess.PIPE,
        stderr=stderr.open("w"),
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # printed once the port is bound (or EOF if it died)
    assert line.startswith("port "), f"{name} did not start: {stderr.read_text()}"
    url = f"http://127.0.0.1:{int(line.split()[1])}"
    deadline = time.monotonic() + 60
    while True:  # readiness is polled, not slept for
        try:
            if requests.get(f"{url}/health", timeout=5).ok:
                return Service(url, process, stderr)
        except requests.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
        time.sleep(0.02)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    directory = tmp_path_factory.mktemp("services")
    store_url = f"sqlite:///{directory / 'store.db'}"
    Store(store_url).close()  # created and migrated once, before three processes write
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRACE_")}
    env |= {
        _config.ENV_URL: store_url,
        _config.ENV_DIR: str(directory / "jt"),
        # The services import jobtrace from where this test does (a checkout's src too).
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(jobtrace.__file__).parents[1]), os.environ.get("PYTHONPATH")])
        ),
    }
    back = start("back", [KEY], directory, env)
    try:
        front = start("front", [KEY, back.url], directory, env)
    except BaseException:
        back.process.kill()
        raise
    yield Services(front, back, store_url)
    for service in (front, back):
        service.process.terminate()
        service.process.wait(timeout=30)
        assert service.process.stdout is not None
        service.process.stdout.close()


def all_spans(store_url: str) -> list[dict[str, Any]]:
    with Store(store_url) as store, store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(schema.spans))]


def jobtrace_warnings(service: Service) -> list[str]:
    return [line for line in service.stderr.read_text().splitlines() if "jobtrace:" in line]


def test_a_trace_crosses_two_services_with_the_requests_and_httpx_helpers(
    services: Services,
) -> None:
    _config.configure(url=services.store_url, install_signal_handlers=False)
    signer = TraceSigner(KEY)
    with (
        jobtrace.Trace("caller") as caller,
        traced_session(signer) as session,
        httpx.Client(transport=TracingTransport(signer)) as client,
    ):
        assert session.get(f"{services.front.url}/work", timeout=30).text == "leaf+leaf"
        assert client.get(f"{services.front.url}/work", timeout=30).text == "leaf+leaf"
    services.flush()

    trace = Store(services.store_url).get_trace(caller.ids[0])
    assert trace is not None
    by_id = {s["span_id"]: s for s in trace}
    names = sorted(s["name"] for s in trace)
    front_port = services.front.url.rsplit(":", 1)[1]
    back_port = services.back.url.rsplit(":", 1)[1]
    assert names == sorted(
        ["caller"]
        + [f"HTTP GET 127.0.0.1:{front_port}/work", "HTTP GET /work"] * 2
        + [f"HTTP GET 127.0.0.1:{back_port}/leaf", "HTTP GET /leaf", "leaf work"] * 4
    )
    pid = {"caller": os.getpid(), "front": services.front.process.pid}
    pid["back"] = services.back.process.pid

    def parent(span: dict[str, Any]) -> dict[str, Any]:
        return by_id[span["parent_id"]]

    for span in trace:
        if span["name"] == "HTTP GET /work":  # front's server span, under our client span
            assert span["pid"] == pid["front"]
            assert parent(span)["pid"] == pid["caller"]
            assert parent(parent(span))["name"] == "caller"
        elif span["name"] == "HTTP GET /leaf":  # back's, under a client span in front
            assert span["pid"] == pid["back"]
            assert parent(span)["pid"] == pid["front"]
            assert parent(parent(span))["name"] == "HTTP GET /work"
        elif span["name"] == "leaf work":
            assert parent(span)["name"] == "HTTP GET /leaf"
            assert span["pid"] == pid["back"]
    assert {s["info"]["http.response.status_code"] for s in trace if s["info"]} == {200}


@pytest.mark.parametrize(
    ("reason", "bad_headers"),
    [
        ("bad_signature", lambda good: {**good, X_TRACE_INFO: "x" + good[X_TRACE_INFO][1:]}),
        ("expired", None),
    ],
    ids=["tampered", "expired"],
)
def test_a_bad_header_is_served_in_a_new_trace_with_one_log_line(
    services: Services, reason: str, bad_headers: Any
) -> None:
    _config.configure(url=services.store_url, install_signal_handlers=False)
    long_ago = TraceSigner(KEY, clock=lambda: time.time() - 3600)
    with jobtrace.Trace("caller") as caller:
        sent = headers(long_ago) if bad_headers is None else bad_headers(headers(TraceSigner(KEY)))
        for _ in range(3):
            response = requests.get(f"{services.back.url}/leaf", headers=sent, timeout=30)
            assert (response.status_code, response.text) == (200, "leaf")
    services.flush()

    served = [
        s
        for s in all_spans(services.store_url)
        if s["name"] == "HTTP GET /leaf"
        and (s["info"] or {}).get("jobtrace.trace_header") == reason
    ]
    assert len(served) == 3
    assert all(s["parent_id"] is None and s["trace_id"] != caller.ids[0] for s in served)
    assert len({s["trace_id"] for s in served}) == 3
    warnings = [line for line in jobtrace_warnings(services.back) if reason in line]
    assert len(warnings) == 1, jobtrace_warnings(services.back)
