"""Batch ingest and the http:// sink through a real uvicorn server, on SQLite and PostgreSQL:
every record kind in one request, retries stored once, bad batches refused whole."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import orjson
import pytest
import sqlalchemy as sa
from hypothesis import strategies as st

from jobtrace import _config, model
from jobtrace.recorder import get_recorder
from jobtrace.sinks.http import HTTPSink
from jobtrace.store import Store
from tests.server_helpers import free_port, thread_server

API = "/api/v1"


@pytest.fixture
def server(store_url: str) -> Iterator[str]:
    with thread_server(store_url, max_body_bytes=200_000) as url:
        yield url


def metric(job_id: str, step: int, value: float = 0.5) -> model.Record:
    return (model.METRIC, job_id, "loss", step, value, 1_700_000_000.0 + step)


def every_kind() -> list[model.Record]:
    now = 1_700_000_000.0
    job = {"id": "j1", "seq": 1, "experiment": "e", "status": "running", "start_time": now}
    return [
        (model.EXPERIMENT, "e", "about e", {"k": "v"}, now),
        (model.JOB, *(job.get(f) for f in model.FIELDS[model.JOB])),
        metric("j1", 0, math.nan),
        metric("j1", 1, math.inf),
        metric("j1", 2, -math.inf),
        metric("j1", 3, 0.25),
        (
            model.SPAN,
            "c" * 32,
            "d" * 16,
            None,
            "root",
            10**18,
            5,
            {"a": [1]},
            None,
            None,
            "j1",
            "h",
            1,
            "t",
            "svc",
        ),
        (
            model.ITEM,
            "i1",
            "j1",
            "file.csv",
            now,
            0.1,
            10,
            2,
            100,
            "success",
            None,
            None,
            1.0,
            None,
        ),
        (model.SERIES, "src", "j1", "requests_total", "counter", None, "{}", 3.0, None, now),
        (model.PROFILE, "p1", "j1", "cpu", "collapsed", "a;b 1", now),
    ]


def rows(store_url: str, sql: str) -> list[tuple[Any, ...]]:
    with Store(store_url) as store, store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def count(store_url: str, table: str) -> int:
    return int(rows(store_url, f"SELECT count(*) FROM {table}")[0][0])


def post(server: str, batch_id: str, records: list[Any]) -> httpx.Response:
    body = {
        "id": batch_id,
        "records": [model.to_dict(r) if isinstance(r, tuple) else r for r in records],
    }
    return httpx.post(f"{server}{API}/batches", json=body, timeout=30)


def test_a_batch_of_every_kind_is_stored_and_special_values_stay_exact(
    server: str, store_url: str
) -> None:
    response = post(server, "batch-1", every_kind())
    assert response.status_code == 201
    assert response.json() == {"id": "batch-1", "records": 10, "duplicate": False}
    for table in ("experiments", "jobs", "spans", "items", "series", "profiles"):
        assert count(store_url, table) == 1, table
    stored = rows(store_url, "SELECT step, value, special FROM metrics ORDER BY step")
    assert stored == [(0, None, "nan"), (1, None, "inf"), (2, None, "-inf"), (3, 0.25, None)]


def test_a_retried_batch_is_acknowledged_but_not_stored_twice(server: str, store_url: str) -> None:
    assert post(server, "retry-me", [metric("j", 0)]).status_code == 201
    again = post(server, "retry-me", [metric("j", 0, 9.0), metric("j", 1)])
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert rows(store_url, "SELECT step, value FROM metrics") == [(0, 0.5)]
    assert rows(store_url, "SELECT id, records FROM ingested_batches") == [("retry-me", 1)]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (
            {
                "kind": "metric",
                "job_id": "j",
                "name": "loss",
                "step": -1,
                "value": 1,
                "timestamp": 1,
            },
            "step",
        ),
        (
            {
                "kind": "metric",
                "job_id": "j",
                "name": "loss",
                "step": 1.5,
                "value": 1,
                "timestamp": 1,
            },
            "step",
        ),
        ({"kind": "metric", "job_id": "j", "name": "loss", "step": 1, "timestamp": 1}, "value"),
        (
            {"kind": "metric", "job_id": "j", "name": "", "step": 1, "value": 1, "timestamp": 1},
            "name",
        ),
        (
            {
                "kind": "metric",
                "job_id": "j",
                "name": "n" * 1_000,
                "step": 1,
                "value": 1,
                "timestamp": 1,
            },
            "name",
        ),
        (
            {
                "kind": "metric",
                "job_id": "j",
                "name": "loss",
                "step": 1,
                "value": 1,
                "timestamp": "x",
            },
            "timestamp",
        ),
        ({"kind": "job", "id": "j", "seq": 1, "status": "weird", "start_time": 1}, "status"),
        (
            {
                "kind": "span",
                "trace_id": "xyz",
                "span_id": "d" * 16,
                "name": "s",
                "start_ns": 1,
                "duration_ns": 1,
            },
            "trace_id",
        ),
    ],
)
def test_a_bad_record_fails_its_whole_batch_naming_it(
    server: str, store_url: str, bad: dict[str, Any], field: str
) -> None:
    response = post(server, "bad", [metric("j", 0), metric("j", 1), bad])
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_record"
    assert body["detail"] == {"index": 2, "kind": bad["kind"], "field": field}
    assert "record 2" in body["message"]
    assert count(store_url, "metrics") == 0 and count(store_url, "ingested_batches") == 0


@pytest.mark.parametrize(
    "bad",
    [
        {
            "kind": "metric",
            "job_id": "j",
            "name": "loss",
            "step": 1,
            "value": "lots",
            "timestamp": 1,
        },
        {"kind": "nope"},
        {"kind": "metric", "surprise": 1},
        "not an object",
    ],
)
def test_undecodable_records_are_named_too(server: str, bad: Any) -> None:
    response = post(server, "bad", [metric("j", 0), bad])
    assert response.status_code == 422
    assert response.json()["detail"]["index"] == 1


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"records": []},
        {"id": "", "records": []},
        {"id": "x"},
        {"id": "x", "records": [], "more": 1},
    ],
)
def test_a_malformed_batch_envelope_is_a_422(server: str, body: Any) -> None:
    response = httpx.post(f"{server}{API}/batches", json=body)
    assert response.status_code == 422 and response.json()["error"] == "invalid_input"


# -- the http sink ------------------------------------------------------------------------------


def test_the_sink_stores_a_batch_once_however_often_it_is_sent(server: str, store_url: str) -> None:
    sink = HTTPSink(server)
    try:
        batch = [metric("j", step) for step in range(100)]
        sink.write(batch, batch_id="same")
        sink.write(batch, batch_id="same")
    finally:
        sink.close()
    assert count(store_url, "metrics") == 100
    assert rows(store_url, "SELECT id, records FROM ingested_batches") == [("same", 100)]


def test_the_sink_halves_a_batch_the_server_finds_too_large(server: str, store_url: str) -> None:
    sink = HTTPSink(server)
    try:
        sink.write([metric("j", step) for step in range(5000)], batch_id="big")  # ~500 kB
    finally:
        sink.close()
    assert count(store_url, "metrics") == 5000
    ids = [r[0] for r in rows(store_url, "SELECT id FROM ingested_batches")]
    assert len(ids) > 1 and all(i.startswith("big.") for i in ids)


def test_the_sink_drops_a_record_too_large_for_the_server_and_sends_the_rest(
    server: str, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # One record over the server's body limit by itself: halving cannot make it fit, so it
    # is dropped and counted. Raising instead made the recorder spool the batch and retry
    # it forever, and every later batch queued in the spool behind it.
    huge = (model.EXPERIMENT, "huge", "x" * 300_000, None, 1_700_000_000.0)
    sink = HTTPSink(server)
    try:
        sink.write([metric("j", 0), huge, metric("j", 1), metric("j", 2)], batch_id="b")
    finally:
        sink.close()
    assert rows(store_url, "SELECT step FROM metrics ORDER BY step") == [(0,), (1,), (2,)]
    assert sink.rejected == 1 and "too large" in caplog.text


def test_the_sink_drops_a_record_the_server_refuses_and_sends_the_rest(
    server: str, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink = HTTPSink(server)
    try:
        sink.write([metric("j", 0), metric("j", -5), metric("j", 2)], batch_id="b")
    finally:
        sink.close()
    assert rows(store_url, "SELECT step FROM metrics ORDER BY step") == [(0,), (2,)]
    assert sink.rejected == 1 and "refused" in caplog.text


def test_a_recorder_pointed_at_the_server_delivers_through_it(server: str, store_url: str) -> None:
    _config.configure(url=server, install_signal_handlers=False)
    recorder = get_recorder()
    written, spooled = recorder.written, recorder.spooled  # counters live as long as it
    for step in range(1000):
        recorder.record(metric("j", step))
    assert recorder.flush(timeout=60)
    assert recorder.written - written == 1000 and recorder.spooled == spooled
    assert count(store_url, "metrics") == 1000


def test_records_spool_while_the_server_is_down_and_replay_once_when_it_is_back(
    store_url: str, tmp_path: Path
) -> None:
    port = free_port()
    _config.configure(url=f"http://127.0.0.1:{port}", install_signal_handlers=False)
    recorder = get_recorder()
    written, spooled, replayed = recorder.written, recorder.spooled, recorder.replayed
    for step in range(300):
        recorder.record(metric("j", step))
    assert recorder.flush(timeout=60)
    assert recorder.spooled - spooled == 300 and recorder.written == written
    for step in range(300, 500):
        recorder.record(metric("j", step))
    assert recorder.flush(timeout=60)
    assert recorder.spooled - spooled == 500

    with thread_server(store_url, port=port):  # back on the port the recorder knows
        assert recorder.flush(timeout=60)  # an explicit flush retries at once
        assert recorder.replayed - replayed == 500
        assert count(store_url, "metrics") == 500
        batches = rows(store_url, "SELECT records FROM ingested_batches")
        assert sum(r[0] for r in batches) == 500  # each spooled batch stored exactly once
        assert recorder.flush(timeout=60)
        assert recorder.replayed - replayed == 500  # nothing left to replay


# -- decoding a column at a time ---------------------------------------------------------------

_VALUES = [
    None, "", "a", "x" * 600, "nul\x00", "c" * 32, "d" * 16, "ABCDEF0123456789", 0, -1, 1,
    2**63, 2**31, 1.5, 1e308, "nan", "inf", "-inf", True, [1], {"a": 1}, "running",
    "success", 1.7e9, -1e12,
]  # fmt: skip


def _decoded(body: bytes) -> Any:
    from jobtrace.server.errors import APIError
    from jobtrace.server.ingest import decode_batch

    try:
        return repr(decode_batch(body))  # repr: NaN equals NaN
    except APIError as exc:
        return (exc.status_code, str(exc), exc.detail)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(model.FIELDS)),
            st.lists(st.sampled_from(_VALUES), min_size=14, max_size=24),
            st.integers(-1, 1),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_a_batch_decodes_a_column_at_a_time_exactly_as_record_by_record(
    spec: list[tuple[str, list[Any], int, bool]],
) -> None:
    """Valid or not, a batch of arrays gets the same records or the same error either way."""
    from jobtrace.server import ingest

    records: list[Any] = []
    for kind, values, extra, valid in spec:
        size = len(model.FIELDS[kind]) + extra
        fields = values[:size]
        if valid:  # mostly well-formed records, so the fast path is taken
            fields = list(model.to_list(_valid(kind)))[1:]
        records.append([kind, *fields])
    body = orjson.dumps({"id": "b", "records": records})
    if all(valid for *_, valid in spec):
        assert ingest._decode_columns(records) is not None  # the fast path was taken
    fast = _decoded(body)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ingest, "_decode_columns", lambda items: None)
        assert _decoded(body) == fast


def _valid(kind: str) -> model.Record:
    return {
        model.METRIC: metric("j", 1, math.inf),
        model.SPAN: every_kind()[6],
        model.ITEM: every_kind()[7],
        model.SERIES: every_kind()[8],
        model.PROFILE: every_kind()[9],
        model.JOB: every_kind()[1],
        model.EXPERIMENT: every_kind()[0],
    }[kind]


def test_the_collector_is_paused_during_nested_ingests_and_restored_after() -> None:
    import gc

    from jobtrace.server.ingest import collector_paused

    assert gc.isenabled()
    with collector_paused():
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer batch is still in progress
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # off before: left off
    finally:
        gc.enable()
