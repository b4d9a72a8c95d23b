"""The REST API through a real uvicorn server on loopback, on SQLite and PostgreSQL:
paging, the shared error body, jobs, experiments, traces and the docs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from jobtrace import model
from jobtrace.store import Store
from tests.server_helpers import assert_error, thread_server

API = "/api/v1"


@pytest.fixture
def server(store_url: str) -> Iterator[str]:
    with thread_server(store_url, max_body_bytes=2_000_000) as url:
        yield url


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server + API, timeout=30) as client:
        yield client


def job(job_id: str, start: float, experiment: str | None = "exp") -> model.Record:
    values: dict[str, Any] = {
        "id": job_id,
        "seq": 1,
        "name": f"name-{job_id}",
        "experiment": experiment,
        "status": "succeeded",
        "start_time": start,
        "end_time": start + 1,
        "duration": 1.0,
    }
    return (model.JOB, *(values.get(f) for f in model.FIELDS[model.JOB]))


def ingest(http: httpx.Client, batch_id: str, records: list[model.Record]) -> httpx.Response:
    return http.post(
        "/batches", json={"id": batch_id, "records": list(map(model.to_dict, records))}
    )


def count_rows(store_url: str, table: str) -> int:
    with Store(store_url) as store, store.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


# -- paging ------------------------------------------------------------------------------------


def test_following_next_from_the_first_page_returns_every_job_exactly_once(
    http: httpx.Client,
) -> None:
    base = time.time() - 1000
    # Equal start times on purpose: the id breaks ties so the order is total.
    records = [job(f"job-{i:03d}", base + i // 3) for i in range(57)]
    records.append(job("other-exp", base, experiment="other"))
    assert ingest(http, "b1", records).status_code == 201

    seen: list[str] = []
    params = {"pageLength": 10, "experiment": "exp", "sortBy": "startTime", "descending": "false"}
    page = http.get("/jobs", params=params).json()
    pages = 0
    while True:
        pages += 1
        assert page["totalNumResults"] == 57
        assert page["index"] == len(seen)
        for key in ("first", "next", "prev"):
            if page[key] is not None:
                assert "experiment=exp" in page[key] and "sortBy=startTime" in page[key]
                assert "descending=false" in page[key] and "pageLength=10" in page[key]
        seen += [j["id"] for j in page["data"]]
        if page["isComplete"]:
            assert page["next"] is None
            break
        page = http.get(page["next"].removeprefix(API)).json()
    assert pages == 6
    assert seen == [f"job-{i:03d}" for i in range(57)]
    back = http.get(page["prev"].removeprefix(API)).json()
    assert back["index"] == 40 and len(back["data"]) == 10
    first = http.get(page["first"].removeprefix(API)).json()
    assert first["index"] == 0 and first["prev"] is None


def test_page_length_defaults_to_10_and_1000_is_the_maximum(http: httpx.Client) -> None:
    ingest(http, "b", [job(f"j{i:02d}", 1000.0 + i) for i in range(12)])
    assert len(http.get("/jobs").json()["data"]) == 10
    assert len(http.get("/jobs", params={"pageLength": 1000}).json()["data"]) == 12
    body = assert_error(http.get("/jobs", params={"pageLength": 1001}), 400, "invalid_paging")
    assert "1000" in body["message"]


@pytest.mark.parametrize("params", [{"pageLength": 0}, {"pageLength": -1}, {"index": -1}])
def test_page_length_zero_or_negative_and_negative_index_are_400(
    http: httpx.Client, params: dict[str, int]
) -> None:
    assert_error(http.get("/jobs", params=params), 400, "invalid_paging")


def test_a_non_integer_page_length_is_a_422_in_the_shared_body(http: httpx.Client) -> None:
    body = assert_error(http.get("/jobs", params={"pageLength": "ten"}), 422, "invalid_input")
    assert body["detail"][0]["loc"] == ["query", "pageLength"]


def test_sorting_by_an_unknown_field_is_a_422_listing_the_fields(http: httpx.Client) -> None:
    body = assert_error(http.get("/jobs", params={"sortBy": "nope"}), 422, "invalid_query")
    assert "startTime" in body["message"]


def test_a_search_with_sql_in_it_is_refused_and_changes_nothing(
    http: httpx.Client, store_url: str
) -> None:
    ingest(http, "b", [job("j1", 1000.0)])
    response = http.get("/jobs", params={"search": "name:x'; DROP TABLE jobs; --"})
    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code)
    assert count_rows(store_url, "jobs") == 1


# -- jobs and experiments ------------------------------------------------------------------------


def test_a_created_job_is_returned_with_iso_times_and_found_by_id(http: httpx.Client) -> None:
    response = http.post(
        "/jobs",
        json={
            "name": "train",
            "experiment": "mnist",
            "tags": {"team": "ml"},
            "heartbeatInterval": 60,
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["location"] == f"{API}/jobs/{created['id']}"
    assert created["status"] == "running" and created["tags"] == {"team": "ml"}
    assert created["startTime"].endswith("+00:00")
    assert http.get(f"/jobs/{created['id']}").json() == created
    listed = http.get("/jobs", params={"experiment": "mnist"}).json()
    assert [j["id"] for j in listed["data"]] == [created["id"]]


def test_creating_a_job_twice_is_a_409(http: httpx.Client) -> None:
    assert http.post("/jobs", json={"id": "j-1"}).status_code == 201
    assert_error(http.post("/jobs", json={"id": "j-1"}), 409, "conflict")


def test_an_unknown_job_or_experiment_is_a_404(http: httpx.Client) -> None:
    assert_error(http.get("/jobs/no-such-job"), 404, "not_found")
    assert_error(http.get("/experiments/no-such-experiment"), 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"startTime": "yesterday"},
        {"startTime": "2026-01-01T00:00:00"},  # no offset
        {"id": "x" * 129},  # a key is refused; a long name is cut (test_bounds.py)
        {"status": "exploded"},
        {"unknownField": 1},
        {"id": ""},
    ],
)
def test_bad_job_bodies_are_422_and_store_nothing(
    http: httpx.Client, store_url: str, body: dict[str, Any]
) -> None:
    response = assert_error(http.post("/jobs", json=body), 422, "invalid_input")
    assert len(response["message"]) < 2000  # a 1 MB input is not echoed back
    assert count_rows(store_url, "jobs") == 0


def test_experiments_are_created_listed_and_sorted_by_job_count(http: httpx.Client) -> None:
    created = http.post("/experiments", json={"name": "alpha", "description": "first"})
    assert created.status_code == 201 and created.json()["id"] == "alpha"
    assert_error(http.post("/experiments", json={"name": "alpha"}), 409, "conflict")
    ingest(http, "b", [job("j1", 1.0, "beta"), job("j2", 2.0, "beta"), job("j3", 3.0, "alpha")])
    page = http.get("/experiments", params={"sortBy": "jobCount", "descending": "true"}).json()
    assert [(e["name"], e["jobCount"]) for e in page["data"]] == [("beta", 2), ("alpha", 1)]
    assert http.get("/experiments/alpha").json()["description"] == "first"


# -- errors for everything else --------------------------------------------------------------------


def test_unknown_routes_and_methods_get_the_shared_error_body(http: httpx.Client) -> None:
    assert_error(http.get("/no/such/route"), 404, "not_found")
    assert_error(http.delete("/jobs"), 405, "method_not_allowed")


def test_malformed_json_is_a_400(http: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    assert_error(http.post("/jobs", content=b"{nope", headers=headers), 400, "malformed_json")
    assert_error(http.post("/batches", content=b"{nope", headers=headers), 400, "malformed_json")


def test_an_oversized_body_is_a_413_and_the_server_keeps_serving(
    http: httpx.Client, store_url: str
) -> None:
    huge = b'{"id": "b", "records": [' + b" " * 2_100_000 + b"]}"
    json_type = {"content-type": "application/json"}  # writes must be JSON (else a 415)
    assert_error(http.post("/batches", content=huge, headers=json_type), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"id": "b", "records": ['
        for _ in range(30):
            yield b" " * 100_000
        yield b"]}"

    too_large = http.post("/batches", content=chunks(), headers=json_type)
    assert_error(too_large, 413, "payload_too_large")
    assert http.get("/health").json()["status"] == "ok"
    assert count_rows(store_url, "ingested_batches") == 0


def test_a_bug_is_a_500_in_the_shared_body(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobtrace.store import jobs

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(jobs, "job_by_id", broken)
    body = assert_error(http.get("/jobs/x"), 500, "internal_error")
    assert "simulated" not in body["message"]  # internals stay in the server's log


# -- traces and docs -----------------------------------------------------------------------------


def test_traces_are_listed_and_fetched_with_their_spans(http: httpx.Client) -> None:
    trace_id, root, child = "1" * 32, "a" * 16, "b" * 16
    start = time.time_ns()
    spans = [
        (
            model.SPAN,
            trace_id,
            root,
            None,
            "root",
            start,
            5000,
            {"k": 1},
            None,
            None,
            "j1",
            "h",
            1,
            "t",
            "api",
        ),
        (
            model.SPAN,
            trace_id,
            child,
            root,
            "child",
            start + 10,
            100,
            None,
            "E",
            "m",
            "j1",
            "h",
            1,
            "t",
            "db",
        ),
    ]
    assert ingest(http, "spans", spans).status_code == 201
    page = http.get("/traces", params={"jobId": "j1"}).json()
    assert page["totalNumResults"] == 1
    summary = page["data"][0]
    assert (summary["traceId"], summary["name"], summary["spans"], summary["errors"]) == (
        trace_id,
        "root",
        2,
        1,
    )
    assert summary["service"] == "api"
    trace = http.get(f"/traces/{trace_id}").json()
    assert [s["name"] for s in trace["spans"]] == ["root", "child"]
    assert [s["service"] for s in trace["spans"]] == ["api", "db"]
    assert trace["spans"][1]["parentId"] == root and trace["spans"][0]["startNs"] == start
    assert_error(http.get(f"/traces/{'2' * 32}"), 404, "not_found")
    assert_error(http.get("/traces/not-hex"), 422, "invalid_input")


def test_the_traces_route_searches_as_the_store_does(http: httpx.Client) -> None:
    """One span must meet every condition: the 'db' span failed, the 'api' one is long."""
    start = time.time_ns()
    spans = [
        (model.SPAN, "3" * 32, "a" * 16, None, "GET /x", start, 900_000_000, None, None,
         None, "j1", "h", 1, "t", "api"),
        (model.SPAN, "3" * 32, "b" * 16, "a" * 16, "db.query", start + 1, 1_000, None, "E",
         "m", "j1", "h", 1, "t", "db"),
        (model.SPAN, "4" * 32, "c" * 16, None, "GET /y", start, 1_000, None, None, None,
         "j2", "h", 1, "t", "api"),
    ]  # fmt: skip
    assert ingest(http, "spans", spans).status_code == 201

    def found(**params: str) -> list[str]:
        page = http.get("/traces", params=params).json()
        assert page["totalNumResults"] == len(page["data"])
        return [t["traceId"] for t in page["data"]]

    assert found(service="api") == ["4" * 32, "3" * 32]
    assert found(service="api", minDuration="500ms") == ["3" * 32]
    assert found(service="api", error="true") == []
    assert found(service="db", error="true", name="db.*") == ["3" * 32]
    assert found(name="GET*", maxDuration="1us", jobId="j2") == ["4" * 32]
    assert found(since="1h", until=datetime_now_iso()) == ["4" * 32, "3" * 32]
    assert_error(http.get("/traces", params={"minDuration": "250"}), 400, "invalid_query")
    assert_error(http.get("/traces", params={"since": "yesterday"}), 400, "invalid_query")


def datetime_now_iso() -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(minutes=1)).isoformat()


def test_openapi_and_the_docs_pages_need_no_internet(server: str) -> None:
    spec = httpx.get(f"{server}/openapi.json").json()
    assert {
        f"{API}/jobs",
        f"{API}/batches",
        f"{API}/experiments/{{experiment_id}}",
        f"{API}/jobs/{{job_id}}/metrics",
        f"{API}/jobs/{{job_id}}/metrics/{{name}}/snapshots",
        f"{API}/experiments/{{experiment_id}}/metrics",
    } <= set(spec["paths"])
    for page in ("/docs", "/redoc"):
        html = httpx.get(server + page).text
        assert "cdn." not in html and "googleapis" not in html
    assert httpx.get(f"{server}/static/docs/swagger-ui-bundle.js").status_code == 200
    assert httpx.get(f"{server}/static/docs/redoc.standalone.js").status_code == 200
