"""``GET /metrics`` on `jobtrace serve`: a real multi-worker service under load from another
process, merged and scraped; worker restarts folded away without changing the totals;
the store's jobs, metrics and spans; and bad input that never gets a 500."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

import jobtrace
from jobtrace import model
from jobtrace.instruments.registry import SOURCE_SERIES
from jobtrace.server import create_app
from jobtrace.server.scrape import ScrapeSettings, render_scrape, wants_openmetrics
from jobtrace.store import Store
from jobtrace.store.rollups import RollupLimits
from jobtrace.store.series import retire_sources, retirement_due
from tests.cli_helpers import cli_env
from tests.instruments_helpers import clean_instruments
from tests.server_helpers import ServeProcess, free_port

__all__ = ["clean_instruments"]

REPO = Path(__file__).resolve().parent.parent
DEADLINE = 60.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# -- helpers ------------------------------------------------------------------------------------


def samples(text: str) -> Samples:
    """Every sample of a classic-format scrape, by (sample name, label set)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    return found[name, frozenset(labels.items())]


def scrape(url: str, **headers: str) -> str:
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def wait_until(predicate: Any, what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``predicate`` until true (bounded): for states another process reaches."""
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the service exited with {process.returncode} before {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def finished_sources(store_url: str) -> set[str]:
    with Store(store_url) as store, store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT source, data FROM series WHERE name = :n AND type = 'source'"),
            {"n": SOURCE_SERIES},
        ).all()
    return {r[0] for r in rows if (orjson.loads(r[1]) if isinstance(r[1], str) else r[1] or {})
            .get("final")}  # fmt: skip


def series_row_count(store_url: str) -> int:
    """Rows holding series values (not heartbeats, not tombstones)."""
    with Store(store_url) as store, store.engine.connect() as conn:
        query = sa.text("SELECT count(*) FROM series WHERE name != :n")
        return int(conn.execute(query, {"n": SOURCE_SERIES}).scalar_one())


class Service:
    """tests/metrics_service.py (or another ``app``) under ``uvicorn --workers N``,
    recording to ``store_url``; ``env`` adds settings."""

    def __init__(
        self,
        store_url: str,
        directory: Path,
        workers: int,
        app: str = "tests.metrics_service:app",
        **env: str,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        self.log = (directory / "service.log").open("ab")
        settings = {"JOBTRACE_URL": store_url, "JOBTRACE_FLUSH_INTERVAL": "0.2", **env}
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", app),
                *("--workers", str(workers), "--port", str(self.port)),
                *("--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"),
            ],
            cwd=REPO,
            env=cli_env(directory, **settings),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, "the service to answer", self.process)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def restart_workers(self) -> None:
        """SIGHUP: uvicorn starts a replacement for each worker, then stops the old one."""
        os.kill(self.process.pid, signal.SIGHUP)

    def stop(self) -> None:
        """SIGTERM: workers shut down gracefully, sending their final series as they exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
                raise AssertionError("the service did not stop within 60 s") from None
        self.log.close()
        assert self.process.returncode == 0, self.process.returncode


LOAD = """
import json, sys, httpx
from concurrent.futures import ThreadPoolExecutor
url, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def send(count):
    # One client (one connection) per thread, so the kernel spreads them over the workers.
    with httpx.Client(timeout=30) as client:
        return [client.get(url + "/work", params={"n": 3}).json()["source"] for _ in range(count)]
shares = [n // threads + (i < n % threads) for i in range(threads)]
with ThreadPoolExecutor(threads) as pool:
    sources = [s for part in pool.map(send, shares) for s in part]
print(json.dumps({"sent": len(sources), "sources": sorted(set(sources))}))
"""


def load(url: str, requests: int, threads: int = 6) -> dict[str, Any]:
    """``requests`` requests from another process; what it sent and which workers answered."""
    result = subprocess.run(
        [sys.executable, "-c", LOAD, url, str(requests), str(threads)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out: dict[str, Any] = orjson.loads(result.stdout)
    return out


@pytest.fixture
def serve(store_url: str, tmp_path: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(store_url, tmp_path / "server")
    server.start()
    yield server
    server.stop()


def profiled_count(found: Samples) -> float:
    """``time_profiler_count`` of the root call ``Shop:checkout``."""
    return value(found, "time_profiler_count", context="Shop:checkout")


# -- a real multi-worker service, scraped -------------------------------------------------------


def test_a_multi_worker_service_under_load_is_scraped_with_exact_merged_counts(
    store_url: str, tmp_path: Path
) -> None:
    service = Service(store_url, tmp_path / "service", workers=3)
    try:
        sent = load(service.url, 300)
    finally:
        service.stop()
    assert sent["sent"] == 300
    server = ServeProcess(store_url, tmp_path / "server")
    server.start()
    try:
        text = scrape(server.url)
    finally:
        server.stop()
    found = samples(text)
    assert value(found, "service_requests_total", route="work") == 300
    assert profiled_count(found) == 300  # the @profile histogram's count
    assert value(found, "time_profiler_count", context="Shop:checkout.price") == 300
    # live-sum: every worker has finished, so none counts any more.
    assert found.get(("service_in_flight", frozenset()), 0.0) == 0.0
    # Every worker that answered is a source in the store, and each said it finished.
    assert set(sent["sources"]) <= finished_sources(store_url)


def test_workers_restarting_fold_away_and_the_totals_stay_exact(
    store_url: str, tmp_path: Path
) -> None:
    service = Service(store_url, tmp_path / "service", workers=2)
    seen: set[str] = set()
    try:
        for generation in range(3):
            seen |= set(load(service.url, 60, threads=4)["sources"])
            if generation < 2:
                service.restart_workers()
                # The old workers exit after their replacements are up; wait for their
                # final series (two per generation) to land.
                expected = 2 * (generation + 1)
                wait_until(
                    lambda n=expected: len(finished_sources(store_url)) >= n,  # type: ignore[misc]
                    f"{expected} workers to finish",
                    service.process,
                )
    finally:
        service.stop()
    dead = finished_sources(store_url)
    assert len(dead) == 6 and seen <= dead
    rows_before = series_row_count(store_url)
    with Store(store_url) as store:
        before = samples(render_scrape(store)[0].decode())
        result = retire_sources(store.engine)
        after = samples(render_scrape(store)[0].decode())
        with store.engine.connect() as conn:
            assert not retirement_due(conn, now=time.time())
    assert sorted(result.sources) == sorted(dead)
    for found in (before, after):
        assert value(found, "service_requests_total", route="work") == 180
        assert profiled_count(found) == 180
    # One retained row per series, however many workers came and went: the counter and
    # the two profiled contexts (the in-flight live-sum of dead workers counts for nothing).
    rows_after = series_row_count(store_url)
    assert rows_after == result.retired_rows == 3
    assert rows_before >= 6 + 3  # each worker's in-flight gauge, and the rest at least once


def test_the_server_folds_dead_sources_in_the_background(store_url: str) -> None:
    now = time.time()
    write_sources(store_url, live=2, finished=5, at=now)
    app = create_app(store_url, scrape=ScrapeSettings(retire_interval=0.05))
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        # Two live sources, two series each, and the retired counter (a dead live-sum is gone).
        wait_until(lambda: series_row_count(store_url) == 2 * 2 + 1, "the fold")
        found = samples(client.get("/metrics").text)
    assert value(found, "requests_total", m="GET") == sum(range(1, 8))
    assert value(found, "in_flight") == 2  # live-sum of the two live sources only


def write_sources(store_url: str, *, live: int, finished: int, at: float) -> None:
    """``live + finished`` sources, each with a counter (i + 1), a live-sum gauge and a
    heartbeat; the last ``finished`` ones said they finished."""
    records = []
    for i in range(live + finished):
        source = f"host:{100 + i}:1"
        records += [
            (model.SERIES, source, None, "requests", "counter", None, '{"m":"GET"}',
             float(i + 1), {"created": 1.0}, at),
            (model.SERIES, source, None, "in_flight", "gauge", "live-sum", "{}", 1.0, {}, at),
            (model.SERIES, source, None, SOURCE_SERIES, "source", None, "{}", 0.0,
             {"final": True} if i >= live else {}, at),
        ]  # fmt: skip
    with Store(store_url) as store:
        store.write(records)


def test_retirement_is_due_only_for_finished_silent_or_replayed_sources(store_url: str) -> None:
    now = time.time()
    write_sources(store_url, live=2, finished=0, at=now)
    with Store(store_url) as store:
        with store.engine.connect() as conn:
            assert not retirement_due(conn, now=now)
            assert retirement_due(conn, now=now + 7200)  # silent for two hours
        write_sources(store_url, live=0, finished=1, at=now)
        with store.engine.connect() as conn:
            assert retirement_due(conn, now=now)
        retire_sources(store.engine, now=now)
        with store.engine.connect() as conn:
            assert not retirement_due(conn, now=now)
            # A tombstone is forgotten after a week.
            assert retirement_due(conn, now=now + 8 * 86400, retire_after=math.inf)


# -- what the store knows ---------------------------------------------------------------------


def record_jobs(store_url: str) -> str:
    """A finished job with metrics and spans, and a running one; returns the running id."""
    jobtrace.configure(store_url, install_signal_handlers=False)
    with jobtrace.job("train", experiment="mnist"):
        for step in range(5):
            jobtrace.log_metric("loss", 1.0 / (step + 1), step=step)
        with jobtrace.Trace("epoch"), jobtrace.Trace("batch"):
            pass
    running = jobtrace.job("serve", experiment="mnist")
    running.__enter__()
    jobtrace.log_metric("accuracy", math.nan, step=2)
    assert jobtrace.flush()
    return str(jobtrace.current_job().id)  # type: ignore[union-attr]


def test_the_store_s_jobs_metrics_and_spans_are_served(store_url: str) -> None:
    running_id = record_jobs(store_url)
    try:
        with Store(store_url) as store:
            body, content_type = render_scrape(store)
    finally:
        jobtrace.current_job().__exit__(None, None, None)  # type: ignore[union-attr]
    assert content_type.startswith("text/plain; version=0.0.4")
    text = body.decode()
    found = samples(text)
    train = {"job_name": "train", "experiment": "mnist", "status": "succeeded"}
    assert value(found, "jobtrace_jobs", **train) == 1
    assert (
        value(found, "jobtrace_jobs", job_name="serve", experiment="mnist", status="running") == 1
    )
    assert value(found, "jobtrace_job_duration_seconds_bucket", le="+Inf", **train) == 1
    assert value(found, "jobtrace_job_peak_memory_bytes", **train) > 1024 * 1024
    finished = [k for k in found if k[0] == "jobtrace_job_metric" and ("metric", "loss") in k[1]]
    assert len(finished) == 1 and found[finished[0]] == pytest.approx(0.2)
    running = {"job_id": running_id, "job_name": "serve", "experiment": "mnist"}
    assert math.isnan(value(found, "jobtrace_job_metric", metric="accuracy", **running))
    assert value(found, "jobtrace_job_metric_step", metric="accuracy", **running) == 2
    for span in ("epoch", "batch"):
        assert value(found, "jobtrace_span_duration_seconds_bucket", span=span, le="+Inf") == 1
    assert value(found, "jobtrace_scrape_truncated", part="jobs") == 0


def test_caps_bound_what_the_store_adds_and_say_so(store_url: str) -> None:
    record_jobs(store_url)
    jobtrace.current_job().__exit__(None, None, None)  # type: ignore[union-attr]
    limits = RollupLimits(max_job_groups=1, max_metric_series=1, max_span_names=1)
    with Store(store_url) as store:
        body, _ = render_scrape(store, settings=ScrapeSettings(limits=limits))
    found = samples(body.decode())
    assert len([k for k in found if k[0] == "jobtrace_jobs"]) == 1
    assert len([k for k in found if k[0] == "jobtrace_job_metric"]) == 1
    spans = {dict(k[1])["span"] for k in found if k[0] == "jobtrace_span_duration_seconds_bucket"}
    assert len(spans) == 1
    for part in ("jobs", "metrics", "spans"):
        assert value(found, "jobtrace_scrape_truncated", part=part) == 1


def test_old_jobs_and_spans_leave_the_windows(store_url: str) -> None:
    record_jobs(store_url)
    jobtrace.current_job().__exit__(None, None, None)  # type: ignore[union-attr]
    with Store(store_url) as store:
        found = samples(render_scrape(store, now=time.time() + 2 * 86400)[0].decode())
    assert not [k for k in found if k[0].startswith(("jobtrace_job", "jobtrace_span"))]


# -- formats and bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (None, False),
        ("", False),
        ("text/plain", False),
        ("*/*", False),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", True),
        # What Prometheus sends: OpenMetrics first, the classic format as a fallback.
        (
            "application/openmetrics-text;version=1.0.0;q=0.5,"
            "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,"
            "*/*;q=0.2",
            True,
        ),
        ("text/plain;q=0.9, application/openmetrics-text;q=0.5", False),
        ("application/openmetrics-text; q=0", False),
        ("application/openmetrics-text; q=banana", False),
        ("application/openmetrics-text; version=banana", True),
        ("image/png", False),
        (";;;,,,==", False),
        ("application/openmetrics-text" + ";x" * 5000, True),
    ],
)
def test_the_format_follows_the_accept_header(accept: str | None, openmetrics: bool) -> None:
    assert wants_openmetrics(accept) is openmetrics


def test_both_formats_parse_with_prometheus_client(store_url: str) -> None:
    write_sources(store_url, live=2, finished=1, at=time.time())
    record_jobs(store_url)
    jobtrace.current_job().__exit__(None, None, None)  # type: ignore[union-attr]
    app = create_app(store_url, scrape=ScrapeSettings(retire_interval=0))
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        classic = client.get("/metrics")
        om = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert classic.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    names = {f.name for f in text_string_to_metric_families(classic.text)}
    om_families = {f.name: f for f in parse_openmetrics(om.text)}
    assert {"requests", "jobtrace_job_duration_seconds", "jobtrace_span_duration_seconds"} <= (
        names | set(om_families)
    )
    assert om_families["jobtrace_job_duration_seconds"].type == "gaugehistogram"
    assert om_families["requests"].type == "counter"


@pytest.mark.parametrize(
    "headers",
    [
        {"Accept": "application/openmetrics-text; version=banana"},
        {"Accept": "text/plain; version=banana; escaping=nonsense"},
        {"Accept": "\x7f\x01garbage"},
        {"Accept": "application/json"},
        {"Accept": "x" * 10000},
        {"Accept-Encoding": "br;q=banana"},
    ],
)
def test_bad_headers_never_get_an_error(store_url: str, headers: dict[str, str]) -> None:
    write_sources(store_url, live=1, finished=0, at=time.time())
    from fastapi.testclient import TestClient

    with TestClient(create_app(store_url, scrape=ScrapeSettings(retire_interval=0))) as client:
        response = client.get("/metrics", headers=headers, params={"format": "???"})
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert list(text_string_to_metric_families(response.text))


def test_other_methods_get_a_405_in_the_shared_error_body(store_url: str) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(store_url, scrape=ScrapeSettings(retire_interval=0))) as client:
        response = client.post("/metrics", content=b"x")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_malformed_series_rows_in_the_store_do_not_break_the_scrape(store_url: str) -> None:
    at = time.time()
    records = [
        (model.SERIES, "h:1:1", None, "good", "counter", None, "{}", 2.0, {}, at),
        (model.SERIES, "h:1:1", None, "bad labels", "counter", None, "not json", 1.0, {}, at),
        (model.SERIES, "h:1:1", None, "odd", "gauge", None, '{"a-b":"x","0":"y"}', 1.0, {}, at),
        (model.SERIES, "h:1:1", None, "hist", "histogram", None, "{}", 1.0, {"le": [1]}, at),
        (model.SERIES, "h:1:1", None, "hist2", "histogram", None, "{}", 1.0,
         {"le": ["x"], "cum": [1]}, at),
        (model.SERIES, "h:1:1", None, "what", "mystery", None, "{}", 1.0, None, at),
        (model.SERIES, "h:1:1", None, "enum", "enum", None, "{}", None, {"states": 5}, at),
    ]  # fmt: skip
    with Store(store_url) as store:
        store.write(records)
    from fastapi.testclient import TestClient

    with TestClient(create_app(store_url, scrape=ScrapeSettings(retire_interval=0))) as client:
        classic = client.get("/metrics")
        om = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert (classic.status_code, om.status_code) == (200, 200), classic.text
    assert value(samples(classic.text), "good_total") == 2
    assert "good" in {f.name for f in parse_openmetrics(om.text)}


def test_metrics_lives_at_the_root_next_to_the_api(serve: ServeProcess) -> None:
    assert httpx.get(f"{serve.url}/api/v1/metrics").status_code == 404
    root = httpx.get(f"{serve.url}/").json()
    assert root["metrics"] == "/metrics"
    text = scrape(serve.url)
    assert "jobtrace_scrape_truncated" in text
