"""The Python client: against a real server (SQLite and PostgreSQL) for jobs, experiments,
metrics and traces, and against httpx's MockTransport for the exact requests it sends."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from jobtrace import model
from jobtrace.client import Client, ClientError, to_float
from tests.server_helpers import free_port, thread_server


@pytest.fixture
def client(store_url: str) -> Iterator[Client]:
    with thread_server(store_url) as url, Client(url) as client:
        yield client


def test_jobs_are_created_fetched_and_iterated_over_every_page(client: Client) -> None:
    created = [
        client.jobs.create(name=f"n{i}", experiment="exp", job_id=f"job-{i:02d}") for i in range(23)
    ]
    assert client.jobs.get_by_id("job-07") == created[7]
    page = client.jobs.get(page_length=5, sort_by="id")
    assert page["totalNumResults"] == 23 and len(page["data"]) == 5
    ids = [j["id"] for j in client.jobs.iter_all(page_length=5, sort_by="id", descending=True)]
    assert ids == [f"job-{i:02d}" for i in reversed(range(23))]


def test_experiments_are_created_listed_and_fetched(client: Client) -> None:
    client.experiments.create("mnist", description="digits", tags={"owner": "me"})
    client.jobs.create(name="train", experiment="mnist")
    found = client.experiments.get_by_id("mnist")
    assert (found["description"], found["tags"], found["jobCount"]) == (
        "digits",
        {"owner": "me"},
        1,
    )
    assert [e["id"] for e in client.experiments.iter_all()] == ["mnist"]


def test_a_batch_and_its_traces_through_the_client(client: Client) -> None:
    span = (model.SPAN, "e" * 32, "f" * 16, None, "root", 1, 2_000_000, None, None, None,
            "j", "h", 1, "t", "api")  # fmt: skip
    assert client.ingest([model.to_dict(span)], "b1")["duplicate"] is False
    assert client.ingest([model.to_dict(span)], "b1")["duplicate"] is True
    assert [t["traceId"] for t in client.traces.iter_all(job_id="j")] == ["e" * 32]
    assert client.traces.get_by_id("e" * 32)["spans"][0]["name"] == "root"
    found = client.traces.iter_all(service="api", name="ro*", min_duration="1ms")
    assert [t["service"] for t in found] == ["api"]
    assert client.traces.get(service="api", error=True)["data"] == []
    assert client.traces.get(service="api", max_duration="1ms")["data"] == []


def test_errors_raise_one_exception_type_carrying_the_server_body(client: Client) -> None:
    with pytest.raises(ClientError) as caught:
        client.jobs.get_by_id("missing")
    error = caught.value
    assert (error.status, error.kind) == (404, "not_found")
    assert error.body == {
        "error": "not_found",
        "message": error.message,
        "detail": {"id": "missing"},
        "status": 404,
    }
    with pytest.raises(ClientError) as caught:
        client.jobs.get(page_length=5000)
    assert caught.value.status == 400 and caught.value.kind == "invalid_paging"


def test_an_unreachable_server_raises_the_same_exception_type() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", timeout=5) as client,
        pytest.raises(ClientError) as caught,
    ):
        client.health()
    assert caught.value.status is None and caught.value.kind == "connection_error"


# -- metrics against the real server -----------------------------------------------------------


def test_metrics_round_trip_with_nan_and_infinities(client: Client) -> None:
    import numpy as np

    job = client.jobs.create(name="train", experiment="exp")
    values = [0.5, math.nan, math.inf, -math.inf, np.float32(0.25), True, 3]
    for step, value in enumerate(values):
        point = client.jobs.append_metric_by_id(job["id"], "loss", value, metric_step=step)
        assert point["step"] == step
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    client.jobs.append_metric_by_id(job["id"], "acc", "inf", timestamp=when)
    latest = client.jobs.get_metrics_by_id(job["id"])
    assert [(p["name"], p["value"], p["step"]) for p in latest] == [
        ("acc", "inf", 0),
        ("loss", 3.0, 6),
    ]
    assert latest[0]["timestamp"] == "2026-01-02T03:04:05.000+00:00"
    page = client.jobs.get_metrics_snapshots_by_id(job["id"], "loss", index=1, page_length=3)
    assert [p["value"] for p in page["data"]] == ["nan", "inf", "-inf"]
    assert (page["index"], page["totalNumResults"], page["isComplete"]) == (1, 7, False)
    history = [
        to_float(p["value"])
        for p in client.jobs.iter_metric_snapshots(job["id"], "loss", page_length=2)
    ]
    assert history[0] == 0.5 and math.isnan(history[1] or 0.0)
    assert history[2:] == [math.inf, -math.inf, 0.25, 1.0, 3.0]


def test_a_downsampled_history_through_the_client(client: Client) -> None:
    job = client.jobs.create(job_id="j1")
    records = [(model.METRIC, "j1", "loss", s, math.sin(s / 10), 1e9 + s) for s in range(500)]
    client.ingest([model.to_dict(r) for r in records], "history")
    series = client.jobs.get_metrics_snapshots_by_id(job["id"], "loss", max_points=20)
    steps = [p["step"] for p in series["data"]]
    assert len(steps) <= 20 and (steps[0], steps[-1]) == (0, 499) and series["next"] is None


def test_experiment_metrics_through_the_client_sorted_searched_and_iterated(client: Client) -> None:
    client.experiments.create("exp")
    for i in range(7):
        job = client.jobs.create(job_id=f"j{i}", name=f"net-{i}", experiment="exp")
        client.jobs.append_metric_by_id(job["id"], "acc", i / 10, metric_step=1)
    page = client.experiments.get_metrics_by_id(
        "exp", page_length=2, sort_by="acc", descending=True, search="metric.acc>=0.2"
    )
    assert page["totalNumResults"] == 5
    assert [(j["id"], j["metrics"][0]["value"]) for j in page["data"]] == [("j6", 0.6), ("j5", 0.5)]
    every = client.experiments.iter_metrics("exp", page_length=3, sort_by="metric.acc")
    assert [j["id"] for j in every] == [f"j{i}" for i in range(7)]
    with pytest.raises(ClientError) as caught:
        client.experiments.get_metrics_by_id("exp", search="metric.acc>>1")
    assert (caught.value.status, caught.value.kind) == (422, "invalid_search")
    assert caught.value.detail["position"] >= 0


def test_metric_errors_raise_the_client_exception_with_the_server_body(client: Client) -> None:
    with pytest.raises(ClientError) as caught:
        client.jobs.append_metric_by_id("missing", "loss", 1.0)
    assert (caught.value.status, caught.value.detail) == (404, {"id": "missing"})
    client.jobs.create(job_id="j1")
    with pytest.raises(ClientError) as caught:
        client.jobs.append_metric_by_id("j1", "loss", 1.0, metric_step=-1)
    assert caught.value.status == 422 and caught.value.detail[0]["loc"] == ["body", "step"]
    assert client.jobs.get_metrics_by_id("j1") == []


# -- the exact requests (a mock transport) ----------------------------------------------------


class Recorded:
    def __init__(self, reply: Any, status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.reply, self.status = reply, status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, content=orjson.dumps(self.reply))


def mock_client(handler: Recorded) -> Client:
    return Client("http://jobtrace.test", transport=httpx.MockTransport(handler))


def test_append_metric_by_id_posts_dioptra_s_fields() -> None:
    handler = Recorded({"name": "loss", "value": "nan", "step": 3})
    with mock_client(handler) as client:
        when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        client.jobs.append_metric_by_id("job/1", "loss", math.nan, metric_step=3, timestamp=when)
        client.jobs.append_metric_by_id("job/1", "acc", True)
    first, second = handler.requests
    assert (first.method, first.url.raw_path) == ("POST", b"/api/v1/jobs/job%2F1/metrics")
    assert orjson.loads(first.content) == {
        "name": "loss",
        "value": "nan",
        "step": 3,
        "timestamp": "2026-01-02T03:04:05+00:00",
    }
    assert orjson.loads(second.content) == {"name": "acc", "value": 1.0}


def test_metric_reads_send_the_paging_and_search_parameters() -> None:
    handler = Recorded({"data": []})
    with mock_client(handler) as client:
        client.jobs.get_metrics_by_id("j1")
        client.jobs.get_metrics_snapshots_by_id("j1", "loss", index=20, page_length=10)
        client.experiments.get_metrics_by_id(
            "e1", index=10, page_length=5, sort_by="loss", descending=True, search="metric.acc>0.9"
        )
    paths = [(r.url.path, dict(r.url.params)) for r in handler.requests]
    assert paths == [
        ("/api/v1/jobs/j1/metrics", {}),
        ("/api/v1/jobs/j1/metrics/loss/snapshots", {"index": "20", "pageLength": "10"}),
        (
            "/api/v1/experiments/e1/metrics",
            {
                "index": "10",
                "pageLength": "5",
                "sortBy": "loss",
                "descending": "true",
                "search": "metric.acc>0.9",
            },
        ),
    ]


@pytest.mark.parametrize(
    ("wire", "expected"),
    [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf), (0.5, 0.5), (2, 2.0), (None, None)],
)
def test_to_float_turns_wire_values_into_floats(wire: Any, expected: float | None) -> None:
    value = to_float(wire)
    if expected is None or not math.isnan(expected):
        assert value == expected
    else:
        assert value is not None and math.isnan(value)


def test_to_float_refuses_anything_else() -> None:
    with pytest.raises(ValueError, match="expected a number"):
        to_float("lots")
