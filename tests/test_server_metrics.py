"""The metric routes through a real uvicorn server on loopback, on SQLite and PostgreSQL:
logging points, the latest of each name, histories paged or downsampled, the metrics of an
experiment's jobs with sort and search, and the issue's whole list of bad input."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from jobtrace import model
from jobtrace.store import Store
from tests.server_helpers import assert_error, thread_server

API = "/api/v1"
MAX_BODY = 2_000_000


@pytest.fixture
def server(store_url: str) -> Iterator[str]:
    with thread_server(store_url, max_body_bytes=MAX_BODY) as url:
        yield url


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server + API, timeout=60) as client:
        yield client


def ingest(http: httpx.Client, batch_id: str, records: list[model.Record]) -> None:
    response = http.post(
        "/batches", json={"id": batch_id, "records": list(map(model.to_list, records))}
    )
    assert response.status_code == 201, response.text


def log(http: httpx.Client, job_id: str, **body: Any) -> httpx.Response:
    return http.post(f"/jobs/{job_id}/metrics", json=body)


def follow(http: httpx.Client, path: str, **params: Any) -> tuple[list[Any], int]:
    """Every element of a paged listing, following ``next``; and the number of pages."""
    page = http.get(path, params=params).json()
    data, pages = list(page["data"]), 1
    while page["next"] is not None:
        assert not page["isComplete"]
        page = http.get(page["next"].removeprefix(API)).json()
        assert page["index"] == len(data)
        data += page["data"]
        pages += 1
    assert page["isComplete"] and page["totalNumResults"] == len(data)
    return data, pages


def metric_rows(store_url: str) -> list[tuple[Any, ...]]:
    with Store(store_url) as store, store.engine.connect() as conn:
        query = "SELECT job_id, name, step, value, special, timestamp FROM metrics"
        return sorted(tuple(r) for r in conn.execute(sa.text(query)))


# -- logging and the latest point -------------------------------------------------------------


def test_a_logged_point_is_returned_as_stored_and_read_back_as_the_latest(
    http: httpx.Client,
) -> None:
    http.post("/jobs", json={"id": "j1"})
    response = log(http, "j1", name="loss", value=0.25, step=3, timestamp="2026-01-02T03:04:05Z")
    assert response.status_code == 200, response.text
    point = {"name": "loss", "value": 0.25, "step": 3, "timestamp": "2026-01-02T03:04:05.000+00:00"}
    assert response.json() == point
    assert http.get("/jobs/j1/metrics").json() == [point]


def test_step_defaults_to_0_and_timestamp_to_the_server_s_time(http: httpx.Client) -> None:
    http.post("/jobs", json={"id": "j1"})
    before = time.time()
    point = log(http, "j1", name="acc", value=1).json()
    after = time.time()
    assert (point["value"], point["step"]) == (1.0, 0)
    stamp = datetime.fromisoformat(point["timestamp"])
    assert stamp.utcoffset() is not None
    assert before - 0.001 <= stamp.timestamp() <= after + 0.001


def test_the_latest_is_the_highest_step_and_a_rewrite_replaces_a_point(http: httpx.Client) -> None:
    http.post("/jobs", json={"id": "j1"})
    for step, value in ((5, 0.5), (9, 0.9), (2, 0.2), (9, 0.99)):
        assert log(http, "j1", name="acc", value=value, step=step).status_code == 200
    log(http, "j1", name="loss", value=3, step=1, timestamp=1_700_000_000)
    latest = http.get("/jobs/j1/metrics").json()
    assert [(p["name"], p["value"], p["step"]) for p in latest] == [
        ("acc", 0.99, 9),
        ("loss", 3.0, 1),
    ]
    history = http.get("/jobs/j1/metrics/acc/snapshots").json()["data"]
    assert [(p["step"], p["value"]) for p in history] == [(2, 0.2), (5, 0.5), (9, 0.99)]


@pytest.mark.parametrize("wire", ["nan", "inf", "-inf", "NaN", "-Inf"])
def test_special_values_are_stored_exactly_and_come_back_as_strings(
    http: httpx.Client, wire: str
) -> None:
    http.post("/jobs", json={"id": "j1"})
    assert log(http, "j1", name="x", value=wire).json()["value"] == wire.lower()
    assert http.get("/jobs/j1/metrics").json()[0]["value"] == wire.lower()
    assert http.get("/jobs/j1/metrics/x/snapshots").json()["data"][0]["value"] == wire.lower()


def test_a_metric_name_with_slashes_has_its_own_history(http: httpx.Client) -> None:
    http.post("/jobs", json={"id": "j1"})
    log(http, "j1", name="train/loss", value=1.0)
    log(http, "j1", name="train", value=2.0)
    page = http.get("/jobs/j1/metrics/train%2Floss/snapshots").json()
    assert [(p["name"], p["value"]) for p in page["data"]] == [("train/loss", 1.0)]
    assert "/metrics/train/loss/snapshots?" in page["first"]


def test_an_unknown_metric_of_a_known_job_is_an_empty_history(http: httpx.Client) -> None:
    http.post("/jobs", json={"id": "j1"})
    assert http.get("/jobs/j1/metrics").json() == []
    page = http.get("/jobs/j1/metrics/nothing/snapshots").json()
    assert (page["data"], page["totalNumResults"], page["isComplete"]) == ([], 0, True)


# -- histories -----------------------------------------------------------------------------------


def history(job_id: str, steps: int) -> list[model.Record]:
    specials = {17: math.nan, 4000: math.inf, 9998: -math.inf}
    return [
        (model.METRIC, job_id, "loss", s, specials.get(s, 1.0 / (s + 1)), 1_700_000_000.0 + s)
        for s in range(steps)
    ]


def test_following_next_over_a_10000_step_history_returns_every_point_once(
    http: httpx.Client,
) -> None:
    http.post("/jobs", json={"id": "j1"})
    ingest(http, "history", history("j1", 10_000))
    points, pages = follow(http, "/jobs/j1/metrics/loss/snapshots", pageLength=999)
    assert pages == 11
    assert [p["step"] for p in points] == list(range(10_000))
    assert (points[17]["value"], points[4000]["value"], points[9998]["value"]) == (
        "nan",
        "inf",
        "-inf",
    )
    assert points[3]["value"] == 0.25


def test_max_points_returns_a_downsampled_series_as_one_complete_page(http: httpx.Client) -> None:
    http.post("/jobs", json={"id": "j1"})
    records = [(model.METRIC, "j1", "loss", s, float(s % 100), 1e9 + s) for s in range(1000)]
    records[500] = (model.METRIC, "j1", "loss", 500, 1e6, 1e9 + 500)  # a spike
    ingest(http, "b", records)
    page = http.get("/jobs/j1/metrics/loss/snapshots", params={"maxPoints": 50}).json()
    steps = [p["step"] for p in page["data"]]
    assert 2 < len(steps) <= 50 and steps == sorted(steps)
    assert steps[0] == 0 and steps[-1] == 999 and 500 in steps
    assert (page["index"], page["isComplete"], page["next"], page["prev"]) == (0, True, None, None)
    assert page["totalNumResults"] == len(steps)
    assert "maxPoints=50" in page["first"]
    short = http.get("/jobs/j1/metrics/loss/snapshots", params={"maxPoints": 5000}).json()
    assert len(short["data"]) == 1000


# -- experiments -------------------------------------------------------------------------------


@pytest.fixture
def experiment(http: httpx.Client) -> str:
    """Experiment ``exp``: six jobs with a latest ``acc`` (or none) and a ``loss``."""
    accs = {"a1": 0.91, "a2": "inf", "a3": "nan", "a4": None, "a5": "-inf", "a6": 0.5}
    assert http.post("/experiments", json={"name": "exp"}).status_code == 201
    http.post("/experiments", json={"name": "other"})
    for i, (job_id, acc) in enumerate(accs.items()):
        start = f"2026-01-01T00:00:0{i}+00:00"
        http.post(
            "/jobs",
            json={"id": job_id, "name": f"net-{job_id}", "experiment": "exp", "startTime": start},
        )
        if acc is not None:
            log(http, job_id, name="acc", value=0.0, step=1)
            log(http, job_id, name="acc", value=acc, step=2)
        log(http, job_id, name="loss", value=i, step=0)
    http.post("/jobs", json={"id": "b1", "experiment": "other"})
    return "exp"


def ids(page: dict[str, Any]) -> list[str]:
    return [job["id"] for job in page["data"]]


def test_experiment_metrics_give_each_job_with_its_latest_points(
    http: httpx.Client, experiment: str
) -> None:
    page = http.get(f"/experiments/{experiment}/metrics", params={"pageLength": 2}).json()
    assert page["totalNumResults"] == 6 and ids(page) == ["a6", "a5"]  # newest first
    job = page["data"][1]
    assert (job["name"], job["experiment"], job["status"]) == ("net-a5", "exp", "running")
    assert job["metrics"] == [
        {"name": "acc", "value": "-inf", "step": 2, "timestamp": job["metrics"][0]["timestamp"]},
        {"name": "loss", "value": 4.0, "step": 0, "timestamp": job["metrics"][1]["timestamp"]},
    ]


def test_experiment_metrics_sort_by_a_metric_in_either_spelling(
    http: httpx.Client, experiment: str
) -> None:
    path = f"/experiments/{experiment}/metrics"
    ascending = ids(http.get(path, params={"sortBy": "metric.acc"}).json())
    descending = ids(http.get(path, params={"sortBy": "acc", "descending": "true"}).json())
    assert ascending[:4] == ["a5", "a6", "a1", "a2"]
    assert descending[:4] == ["a2", "a1", "a6", "a5"]
    assert set(ascending[4:]) == set(descending[4:]) == {"a3", "a4"}  # NaN and missing last
    by_start = ids(http.get(path, params={"sortBy": "startTime"}).json())
    assert by_start == ["a1", "a2", "a3", "a4", "a5", "a6"]


def test_experiment_metrics_pages_keep_sort_and_search_and_cover_every_job_once(
    http: httpx.Client, experiment: str
) -> None:
    params = {"pageLength": 2, "sortBy": "loss", "descending": "true", "search": "name:net-*"}
    jobs, pages = follow(http, f"/experiments/{experiment}/metrics", **params)
    assert [j["id"] for j in jobs] == ["a6", "a5", "a4", "a3", "a2", "a1"] and pages == 3
    first = http.get(f"/experiments/{experiment}/metrics", params=params).json()
    assert "search=name%3Anet-%2A" in first["next"] and "sortBy=loss" in first["next"]


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("metric.acc>0.6", {"a1", "a2"}),
        ("metric.acc>=-inf, metric.acc<0.6", {"a5", "a6"}),
        ("metric.acc=nan", {"a3"}),
        ("net-a?", {"a1", "a2", "a3", "a4", "a5", "a6"}),
        ('name:"net-a1", metric.loss<1', {"a1"}),
        ("name:x'; DROP TABLE jobs; --'", set()),
        ('"\'; DELETE FROM metrics; --"', set()),
        ("1=1; DROP TABLE jobs", set()),
    ],
)
def test_experiment_metrics_search(
    http: httpx.Client, experiment: str, store_url: str, search: str, expected: set[str]
) -> None:
    before = metric_rows(store_url)
    page = http.get(f"/experiments/{experiment}/metrics", params={"search": search})
    assert page.status_code == 200, page.text
    assert set(ids(page.json())) == expected
    assert metric_rows(store_url) == before


def test_jobs_and_experiments_are_searched_and_sorted_through_http(
    http: httpx.Client, experiment: str
) -> None:
    jobs = http.get("/jobs", params={"search": "metric.acc>0.6", "sortBy": "id"}).json()
    assert ids(jobs) == ["a1", "a2"]
    jobs = http.get("/jobs", params={"search": "experiment:oth*"}).json()
    assert ids(jobs) == ["b1"]
    by_metric = http.get("/jobs", params={"sortBy": "metric.loss", "descending": "true"}).json()
    assert ids(by_metric)[:2] == ["a6", "a5"]
    experiments = http.get("/experiments", params={"sortBy": "jobCount", "descending": "true"})
    assert [(e["id"], e["jobCount"]) for e in experiments.json()["data"]] == [
        ("exp", 6),
        ("other", 1),
    ]
    found = http.get("/experiments", params={"search": "jobCount>2"}).json()
    assert [e["id"] for e in found["data"]] == ["exp"]
    assert http.get("/experiments", params={"search": "ex?"}).json()["totalNumResults"] == 1


@pytest.mark.parametrize(
    ("search", "reason"),
    [("colour:red", "unknown"), ('name:"open', "unterminated"), ("metric.acc>>1", "")],
)
def test_a_search_that_does_not_parse_is_a_422_saying_why_and_where(
    http: httpx.Client, experiment: str, search: str, reason: str
) -> None:
    for path in (f"/experiments/{experiment}/metrics", "/jobs"):
        body = assert_error(http.get(path, params={"search": search}), 422, "invalid_search")
        assert reason in body["detail"]["reason"] and body["detail"]["field"] == "search"
        assert 0 <= body["detail"]["position"] < len(search)


def test_an_unknown_experiment_is_a_404(http: httpx.Client) -> None:
    body = assert_error(http.get("/experiments/nope/metrics"), 404, "not_found")
    assert body["detail"] == {"id": "nope"}


# -- bad input -----------------------------------------------------------------------------------

ONE_MB = "x" * 1_000_000
JSON = {"content-type": "application/json"}
#: (what, method, path, request options, expected status): the issue's list for metrics.
BAD_INPUT: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("unknown job", "POST", "/jobs/nope/metrics", {"json": {"name": "a", "value": 1}}, 404),
    ("unknown job latest", "GET", "/jobs/nope/metrics", {}, 404),
    ("unknown job history", "GET", "/jobs/nope/metrics/a/snapshots", {}, 404),
    ("missing value", "POST", "/jobs/j1/metrics", {"json": {"name": "a"}}, 422),
    ("null value", "POST", "/jobs/j1/metrics", {"json": {"name": "a", "value": None}}, 422),
    ("text value", "POST", "/jobs/j1/metrics", {"json": {"name": "a", "value": "0.5"}}, 422),
    ("word value", "POST", "/jobs/j1/metrics", {"json": {"name": "a", "value": "lots"}}, 422),
    ("bool value", "POST", "/jobs/j1/metrics", {"json": {"name": "a", "value": True}}, 422),
    ("list value", "POST", "/jobs/j1/metrics", {"json": {"name": "a", "value": [1]}}, 422),
    (
        "huge value",
        "POST",
        "/jobs/j1/metrics",
        {"content": b'{"name": "a", "value": 1' + b"0" * 400 + b"}", "headers": JSON},
        422,
    ),
    ("missing name", "POST", "/jobs/j1/metrics", {"json": {"value": 1}}, 422),
    ("empty name", "POST", "/jobs/j1/metrics", {"json": {"name": "", "value": 1}}, 422),
    ("blank name", "POST", "/jobs/j1/metrics", {"json": {"name": "  ", "value": 1}}, 422),
    ("1 MB name", "POST", "/jobs/j1/metrics", {"json": {"name": ONE_MB, "value": 1}}, 422),
    (
        "negative step",
        "POST",
        "/jobs/j1/metrics",
        {"json": {"name": "a", "value": 1, "step": -1}},
        422,
    ),
    (
        "float step",
        "POST",
        "/jobs/j1/metrics",
        {"json": {"name": "a", "value": 1, "step": 1.5}},
        422,
    ),
    (
        "text step",
        "POST",
        "/jobs/j1/metrics",
        {"json": {"name": "a", "value": 1, "step": "3"}},
        422,
    ),
    (
        "bool step",
        "POST",
        "/jobs/j1/metrics",
        {"json": {"name": "a", "value": 1, "step": True}},
        422,
    ),
    (
        "huge step",
        "POST",
        "/jobs/j1/metrics",
        {"json": {"name": "a", "value": 1, "step": 2**63}},
        422,
    ),
    (
        "bad timestamp",
        "POST",
        "/jobs/j1/metrics",
        {"json": {"name": "a", "value": 1, "timestamp": "yesterday"}},
        422,
    ),
    (
        "naive timestamp",
        "POST",
        "/jobs/j1/metrics",
        {"json": {"name": "a", "value": 1, "timestamp": "2026-01-01T00:00:00"}},
        422,
    ),
    (
        "far timestamp",
        "POST",
        "/jobs/j1/metrics",
        {"json": {"name": "a", "value": 1, "timestamp": 1e300}},
        422,
    ),
    (
        "bool timestamp",
        "POST",
        "/jobs/j1/metrics",
        {"json": {"name": "a", "value": 1, "timestamp": False}},
        422,
    ),
    (
        "unknown field",
        "POST",
        "/jobs/j1/metrics",
        {"json": {"name": "a", "value": 1, "unit": "s"}},
        422,
    ),
    ("not an object", "POST", "/jobs/j1/metrics", {"json": [1, 2]}, 422),
    (
        "malformed JSON",
        "POST",
        "/jobs/j1/metrics",
        {"content": b'{"name": "a", "value": ', "headers": JSON},
        400,
    ),
    (
        "oversized body",
        "POST",
        "/jobs/j1/metrics",
        {"content": b'{"name": "' + b"x" * (MAX_BODY + 10) + b'", "value": 1}'},
        413,
    ),
    ("pageLength 0", "GET", "/jobs/j1/metrics/a/snapshots", {"params": {"pageLength": 0}}, 400),
    ("pageLength -1", "GET", "/jobs/j1/metrics/a/snapshots", {"params": {"pageLength": -1}}, 400),
    (
        "pageLength 1001",
        "GET",
        "/jobs/j1/metrics/a/snapshots",
        {"params": {"pageLength": 1001}},
        400,
    ),
    ("negative index", "GET", "/jobs/j1/metrics/a/snapshots", {"params": {"index": -1}}, 400),
    ("maxPoints 1", "GET", "/jobs/j1/metrics/a/snapshots", {"params": {"maxPoints": 1}}, 400),
    (
        "maxPoints too many",
        "GET",
        "/jobs/j1/metrics/a/snapshots",
        {"params": {"maxPoints": 10**6}},
        400,
    ),
    (
        "maxPoints text",
        "GET",
        "/jobs/j1/metrics/a/snapshots",
        {"params": {"maxPoints": "all"}},
        422,
    ),
    (
        "maxPoints past 0",
        "GET",
        "/jobs/j1/metrics/a/snapshots",
        {"params": {"maxPoints": 9, "index": 10}},
        400,
    ),
    (
        "experiment pageLength 0",
        "GET",
        "/experiments/exp/metrics",
        {"params": {"pageLength": 0}},
        400,
    ),
    (
        "experiment pageLength -1",
        "GET",
        "/experiments/exp/metrics",
        {"params": {"pageLength": -1}},
        400,
    ),
    (
        "SQL in a search",
        "GET",
        "/experiments/exp/metrics",
        {"params": {"search": "x'; DROP TABLE metrics; --"}},
        422,
    ),
    ("unknown sort field", "GET", "/jobs", {"params": {"sortBy": "colour"}}, 422),
    ("bad descending", "GET", "/experiments/exp/metrics", {"params": {"descending": "maybe"}}, 422),
]


def test_every_bad_input_is_a_4xx_in_the_shared_body_and_changes_nothing(
    http: httpx.Client, store_url: str
) -> None:
    http.post("/jobs", json={"id": "j1", "experiment": "exp"})
    for step in range(3):
        log(http, "j1", name="a", value=step / 2, step=step)
    log(http, "j1", name="b", value="nan")
    before = metric_rows(store_url)
    latest = http.get("/jobs/j1/metrics").json()
    for what, method, path, options, status in BAD_INPUT:
        response = http.request(method, path, **options)
        assert response.status_code == status, (
            f"{what}: {response.status_code} {response.text[:300]}"
        )
        body = assert_error(response, status)
        assert len(response.content) < 5000, what  # a 1 MB input is never echoed back
        assert body["message"], what
        assert http.get("/health").json()["status"] == "ok", what
    assert metric_rows(store_url) == before
    assert http.get("/jobs/j1/metrics").json() == latest
