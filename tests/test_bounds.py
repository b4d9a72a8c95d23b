"""Every input has a bound (jobtrace.limits), the same on every path: the library into a
store, the library through a server, and the REST routes. One test per hole that was found,
written the way a user hit it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import jobtrace
from jobtrace import limits, metrics, model
from jobtrace.instruments import Counter, InstrumentRegistry, drops
from jobtrace.server import create_app
from jobtrace.server.scrape import ScrapeSettings
from jobtrace.store import Store, schema
from jobtrace.store.writer import PLANS
from tests.cli_helpers import jobtrace_cli
from tests.server_helpers import assert_error, thread_server

API = "/api/v1"


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(
        f"sqlite:///{tmp_path / 'server.db'}", scrape=ScrapeSettings(retire_interval=0)
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _batch(client: TestClient, batch_id: str, records: list[Any], deep: int = 0) -> Any:
    """POST a batch; ``deep``: each ``"DEEP"`` string becomes a document nested that deep
    (written by hand: json.dumps itself stops at a few hundred levels)."""
    body = json.dumps({"id": batch_id, "records": records})
    body = body.replace('"DEEP"', '{"a": ' * deep + "1" + "}" * deep)
    return client.post(f"{API}/batches", content=body, headers={"Content-Type": "application/json"})


def _span(name: str, info: Any = None, span_id: str = "1") -> dict[str, Any]:
    return {
        "kind": "span",
        # Made now (its first 48 bits are milliseconds), so /metrics' span window shows it.
        "trace_id": f"{time.time_ns() // 1_000_000:012x}" + "0" * 19 + "1",
        "span_id": span_id.rjust(16, "0"),
        "parent_id": None,
        "name": name,
        "start_ns": time.time_ns(),  # inside /metrics' span window
        "duration_ns": 1000,
        "info": info,
        "error_type": None,
        "error_message": None,
        "job_id": None,
        "host": None,
        "pid": None,
        "thread": None,
    }


def _metric(name: str, step: Any = 0, timestamp: Any = 1.0, job: str = "j") -> dict[str, Any]:
    return {
        "kind": "metric",
        "job_id": job,
        "name": name,
        "step": step,
        "value": 1.0,
        "timestamp": timestamp,
    }


def _nested(depth: int) -> Any:
    doc: Any = 1
    for _ in range(depth):
        doc = {"a": doc}
    return doc


def _depth(doc: Any) -> int:
    depth = 0
    while isinstance(doc, dict):
        doc, depth = doc.get("a"), depth + 1
    return depth


# -- the limits themselves ---------------------------------------------------------------------


def test_text_limits_are_the_store_column_widths() -> None:
    tables = schema.RECORD_TABLES
    for kind, fields in limits.TEXT_LIMITS.items():
        for field, (limit, _key) in fields.items():
            width = tables[kind].c[field].type.length
            assert width in (None, limit), (kind, field)
    # Every column with a width is bounded here (or by a rule of its own: ids, statuses).
    ruled = {("job", "status"), ("item", "status"), ("span", "trace_id")}
    ruled |= {("span", "span_id"), ("span", "parent_id")}
    for kind, table in tables.items():
        for column in table.c:
            if getattr(column.type, "length", None) and column.name in model.FIELDS[kind]:
                assert (kind, column.name) in ruled or limits.text_limit(kind, column.name)


def test_document_fields_are_the_writers_json_columns() -> None:
    from_plans = {spec.kind: spec.json for spec in PLANS if spec.json}
    assert from_plans == limits.DOC_FIELDS


def test_a_capped_document_is_capped_already() -> None:
    doc = {"k" * 300: [_nested(50)] * 2000, "big": 2**70, "nul": "a\x00b", "s": "x" * 70_000}
    capped = limits.cap_doc(doc)
    assert limits.cap_doc(capped) == capped
    key = limits.cap_text("k" * 300, 256)
    assert len(capped[key]) == limits.MAX_KEYS and capped[key][-1].startswith(limits.TRUNCATED)
    assert _depth(capped[key][0]) == limits.MAX_DEPTH - 2
    assert capped["big"] == str(2**70) and capped["nul"] == "a\ufffdb"
    assert len(capped["s"]) == limits.MAX_DOC_STRING and capped["s"].endswith(limits.TRUNCATED)


def test_a_cyclic_document_is_stored_cut_not_crashing_the_writer(tmp_path: Path) -> None:
    cycle: dict[str, Any] = {}
    cycle["a"] = cycle
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        record = list(model.from_dict(_span("cycle")))
        record[7] = cycle
        store.write([tuple(record)])
        (span,) = store.get_trace(record[1]) or []
    assert _depth(span["info"]) == limits.MAX_DEPTH


# -- timestamps and steps ----------------------------------------------------------------------


def test_log_metric_drops_a_timestamp_no_read_can_render(tmp_path: Path) -> None:
    jobtrace.configure(url=f"sqlite:///{tmp_path / '.jobtrace' / 'jobtrace.db'}")
    with jobtrace.job("far") as job:
        jobtrace.log_metric("loss", 1.0, step=0, timestamp=1e300)
        jobtrace.log_metric("loss", 2.0, step=1, timestamp=-1e300)
        jobtrace.log_metric("loss", 3.0, step=2, timestamp=1_700_000_000.0)
    jobtrace.flush()
    assert metrics.rejected_metrics()["timestamp"] == 2
    shown = jobtrace_cli("metrics", "show", job.id, "--json", cwd=tmp_path, check=True)
    assert [p["step"] for p in json.loads(shown.stdout)["metrics"]] == [2]


def test_reads_survive_an_out_of_range_time_already_stored(
    tmp_path: Path, http: TestClient
) -> None:
    # What an older version let through: a point stamped 1e300, straight into the store.
    store: Store = http.app.state.store  # type: ignore[attr-defined]
    store.create_job(job_id="old", name="old")
    store.write([(model.METRIC, "old", "loss", 0, 1.0, 1e300)])
    latest = http.get(f"{API}/jobs/old/metrics")
    assert latest.status_code == 200 and latest.json()[0]["timestamp"] is None
    history = http.get(f"{API}/jobs/old/metrics/loss/snapshots")
    assert history.status_code == 200 and history.json()["data"][0]["timestamp"] is None
    directory = tmp_path / "cli"
    with Store(f"sqlite:///{directory / '.jobtrace' / 'jobtrace.db'}") as local:
        local.create_job(job_id="old", name="old")
        local.write([(model.METRIC, "old", "loss", 0, 1.0, 1e300)])
    assert jobtrace_cli("metrics", "show", "old", cwd=directory).returncode == 0


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (_metric("m", timestamp=1e300), "timestamp"),
        (_metric("m", step=2**64), "step"),
        (_metric("m", step=-1), "step"),
        ({**_span("s"), "start_ns": 2**64}, "start_ns"),
    ],
)
def test_ingest_refuses_numbers_out_of_range_naming_the_field(
    http: TestClient, record: dict[str, Any], field: str
) -> None:
    body = assert_error(_batch(http, "b", [record]), 422)
    assert body["detail"]["field"] == field and body["detail"]["index"] == 0


def test_1e400_is_refused_not_read_as_infinity(http: TestClient) -> None:
    assert http.post(f"{API}/jobs", json={"id": "j"}).status_code == 201
    raw = {"Content-Type": "application/json"}
    value = http.post(f"{API}/jobs/j/metrics", content='{"name": "m", "value": 1e400}', headers=raw)
    assert "value" in assert_error(value, 422)["message"]
    job = http.post(f"{API}/jobs", content='{"heartbeatInterval": 1e400}', headers=raw)
    assert "heartbeatInterval" in assert_error(job, 422)["message"]
    batch = '{"id": "b", "records": [["metric", "j", "m", 0, 1.0, 1e400]]}'
    assert_error(http.post(f"{API}/batches", content=batch, headers=raw), 400)
    assert http.get(f"{API}/jobs/j/metrics").json() == []


@pytest.mark.parametrize(
    "path",
    [
        "/jobs",
        "/experiments",
        "/traces",
        "/experiments/e/metrics",
        "/jobs/j/metrics/m/snapshots",
    ],
)
def test_paging_past_64_bits_is_a_422_naming_index(http: TestClient, path: str) -> None:
    http.post(f"{API}/experiments", json={"name": "e"})
    http.post(f"{API}/jobs", json={"id": "j", "experiment": "e"})
    body = assert_error(http.get(API + path, params={"index": 2**64}), 422)
    assert "index" in body["message"]
    assert http.get(API + path, params={"index": 2**63 - 1}).status_code == 200


# -- nesting, lengths and NUL, the same on every path ------------------------------------------


def _record_span(url: str, name: str, info: Any) -> tuple[str, dict[str, Any]]:
    jobtrace.configure(url=url)
    with jobtrace.job("spans") as job, jobtrace.Trace(name, info=info):
        pass
    jobtrace.flush()
    return job.id, info


def _stored_spans(store_url: str, job_id: str) -> list[dict[str, Any]]:
    with Store(store_url) as store:
        return [s for t in store.job_trace_ids(job_id) for s in store.get_trace(t) or []]


@pytest.fixture(params=["sqlite", "http"])
def library_path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(the URL the library records to, the store it ends up in)."""
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    if request.param == "sqlite":
        yield store_url, store_url
    else:
        with thread_server(store_url) as server:
            yield server, store_url


def test_a_huge_span_name_is_cut_the_same_on_every_path(
    library_path: tuple[str, str], http: TestClient
) -> None:
    url, store_url = library_path
    name = "n" * 1_000_000
    job_id, _ = _record_span(url, name, None)
    (span,) = _stored_spans(store_url, job_id)
    expected = limits.cap_text(name, 512)
    assert span["name"] == expected and len(expected) == 512 and expected.endswith("…")
    # The REST ingest, from another client, stores the same.
    posted_span = _span(name)
    assert _batch(http, "b", [posted_span]).status_code == 201
    (posted,) = http.get(f"{API}/traces/{posted_span['trace_id']}").json()["spans"]
    assert posted["name"] == expected
    scrape = http.get("/metrics").text  # the name rides in every scrape: now cut
    assert len(scrape) < 100_000 and f'span="{expected}"' in scrape


def test_deep_info_is_cut_at_the_documented_depth_on_every_path(
    library_path: tuple[str, str], http: TestClient
) -> None:
    url, store_url = library_path
    job_id, _ = _record_span(url, "deep", _nested(1000))
    (span,) = _stored_spans(store_url, job_id)
    assert _depth(span["info"]) == limits.MAX_DEPTH
    posted_span = _span("deep", "DEEP")
    response = _batch(http, "b", [posted_span], deep=1000)
    assert response.status_code == 201, response.text
    (posted,) = http.get(f"{API}/traces/{posted_span['trace_id']}").json()["spans"]
    assert posted["info"] == span["info"]


def test_nul_in_a_metric_name_is_replaced_on_every_route(
    library_path: tuple[str, str], http: TestClient
) -> None:
    url, store_url = library_path
    jobtrace.configure(url=url)
    with jobtrace.job("nul", job_id="lib"):
        jobtrace.log_metric("a\x00b", 1.0)
    jobtrace.flush()
    with Store(store_url) as store:
        assert [p.name for p in store.latest_metrics("lib")] == ["a\ufffdb"]
    http.post(f"{API}/jobs", json={"id": "j"})
    assert http.post(f"{API}/jobs/j/metrics", json={"name": "a\x00b", "value": 1}).is_success
    assert _batch(http, "b", [_metric("c\x00d")]).status_code == 201
    names = sorted(p["name"] for p in http.get(f"{API}/jobs/j/metrics").json())
    assert names == ["a\ufffdb", "c\ufffdd"]


def test_an_over_long_key_is_refused_on_every_path(
    tmp_path: Path, http: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    name = "m" * 300
    body = assert_error(_batch(http, "b", [_metric("ok"), _metric(name)]), 422)
    assert body["detail"] == {"index": 1, "kind": "metric", "field": "name"}
    rest = http.post(f"{API}/jobs/j/metrics", json={"name": name, "value": 1})
    assert_error(rest, 422)
    # The library's store writer drops that record alone, counted and logged.
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store, caplog.at_level(logging.WARNING):
        store.create_job(job_id="j")
        store.write([model.from_dict(_metric("ok")), model.from_dict(_metric(name))])
        assert [p.name for p in store.latest_metrics("j")] == ["ok"]
        assert store._writer is not None and store._writer.rejected == 1
    assert "at most 256 characters" in caplog.text


def test_rest_job_names_are_cut_like_the_librarys(http: TestClient) -> None:
    created = http.post(f"{API}/jobs", json={"id": "j", "name": "x" * 1_000_000})
    assert created.status_code == 201
    assert created.json()["name"] == limits.cap_text("x" * 1_000_000, 512)


# -- series ------------------------------------------------------------------------------------


def test_one_post_of_many_label_sets_does_not_bloat_every_scrape(http: TestClient) -> None:
    sets = limits.MAX_SERIES_PER_NAME + 500
    rows = [
        ["series", "attacker", None, "spam", "counter", None, json.dumps({"id": str(i)}), 1.0,
         None, 1_700_000_000.0]
        for i in range(sets)
    ]  # fmt: skip
    assert _batch(http, "b", rows).status_code == 201
    scrape = http.get("/metrics").text
    assert scrape.count("spam_total{") == limits.MAX_SERIES_PER_NAME
    assert "jobtrace_series_overflow 500.0" in scrape
    assert 'jobtrace_scrape_truncated{part="series"} 1.0' in scrape


def test_an_instrument_keeps_a_bounded_number_of_label_sets() -> None:
    before = drops.by_reason.get("series_overflow", 0)
    counter = Counter("requests_by_id", labels=["id"], registry=InstrumentRegistry())
    for i in range(limits.MAX_SERIES_PER_NAME + 10):
        counter.labels(id=str(i)).inc()
    assert len(counter.series()) == limits.MAX_SERIES_PER_NAME
    assert drops.by_reason["series_overflow"] - before == 10


def test_every_store_keeps_what_it_once_refused_now_bounded(store_url: str) -> None:
    # PostgreSQL refused NUL (in text and in JSONB) and text over a column's width, so the
    # span was dropped there and kept whole on SQLite; now both keep the same bounded span.
    span = _span("n\x00" + "x" * 1000, {"k\x00": "a\x00b", "deep": _nested(100)})
    span["error_message"] = "boom\x00"
    with Store(store_url) as store:
        store.write([model.from_dict(span)])
        (stored,) = store.get_trace(span["trace_id"]) or []
    assert stored["name"] == limits.cap_text(span["name"], 512)
    assert stored["name"].startswith("n\ufffdx") and len(stored["name"]) == 512
    assert stored["error_message"] == "boom\ufffd"
    assert stored["info"]["k\ufffd"] == "a\ufffdb"
    assert _depth(stored["info"]["deep"]) == limits.MAX_DEPTH - 1


def test_a_refused_key_is_counted_once_when_the_database_refuses_another_record(
    tmp_path: Path,
) -> None:
    good = [model.from_dict(_metric("ok", step=i)) for i in range(10)]
    too_long = model.from_dict(_metric("m" * 300))
    too_big = model.from_dict(_metric("big", step=0))
    too_big = (*too_big[:4], 2**70, *too_big[5:])  # SQLite refuses an int past 64 bits
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        store.create_job(job_id="j")
        store.write([*good[:5], too_long, too_big, *good[5:]])
        assert store._writer is not None and store._writer.rejected == 2
        assert [p.step for p in store.metric_history("j", "ok").data] == list(range(10))


def test_a_column_of_documents_is_suspected_whenever_one_of_them_may_break_a_bound() -> None:
    from jobtrace import limits

    short = ['{"a": 1}', '{"path": "/data/x.wfm", "rows": 100}' * 3]
    assert not limits.any_may_break_bounds(short)
    deep = "[" * (limits.MAX_DEPTH + 1) + "]" * (limits.MAX_DEPTH + 1)
    nul = '{"text": "a\\u0000b"}'
    wide = "{" + ",".join(f'"k{i}": {i}' for i in range(limits.MAX_KEYS)) + "}"
    for bad in (deep, nul, wide):
        assert limits.may_break_bounds(bad)
        assert limits.any_may_break_bounds([*short, bad])
