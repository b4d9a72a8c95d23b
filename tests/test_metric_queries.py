"""Metric queries on SQLite and on the real PostgreSQL server: latest, history, series."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobtrace import model
from jobtrace.errors import JobNotFoundError, QueryError
from jobtrace.store import Store
from jobtrace.store.metrics import MetricPoint


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as s:
        s.create_job(job_id="j1", name="train", experiment="exp")
        yield s


def metric(step: int, value: float, name: str = "loss", job: str = "j1") -> model.Record:
    return (model.METRIC, job, name, step, value, 1000.0 + step)


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_a_second_write_to_a_key_replaces_the_first(store: Store) -> None:
    store.write([metric(1, 0.9), metric(2, 0.8)])
    store.write([metric(1, 0.7)])
    page = store.metric_history("j1", "loss")
    assert [(p.step, p.value) for p in page.data] == [(1, 0.7), (2, 0.8)]
    assert page.total == 2 and page.is_complete


def test_latest_is_the_highest_step_whatever_the_write_order(store: Store) -> None:
    store.write([metric(5, 5.0), metric(9, 9.0)])
    store.write([metric(3, 3.0), metric(0, 1.0, "acc")])
    latest = store.latest_metrics("j1")
    assert [(p.name, p.step, p.value) for p in latest] == [("acc", 0, 1.0), ("loss", 9, 9.0)]
    assert latest[1] == MetricPoint("loss", 9.0, 9, 1009.0)


def test_rewriting_the_latest_step_replaces_the_latest_value(store: Store) -> None:
    store.write([metric(9, 9.0), metric(3, 3.0)])
    store.write([metric(9, 1.0), metric(9, math.inf)])
    [latest] = store.latest_metrics("j1")
    assert (latest.step, latest.value) == (9, math.inf)


SPECIALS = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]


def test_specials_are_returned_exactly_by_every_query(store: Store) -> None:
    store.write([metric(step, v) for step, v in enumerate(SPECIALS)])
    store.write([metric(0, v, name=f"m{i}") for i, v in enumerate(SPECIALS)])
    history = store.metric_history("j1", "loss", limit=None).data
    assert all(same(p.value, v) for p, v in zip(history, SPECIALS, strict=True))
    latest = {p.name: p.value for p in store.latest_metrics("j1")}
    assert all(same(latest[f"m{i}"], v) for i, v in enumerate(SPECIALS))
    series = store.metric_series("j1", "loss", max_points=100)
    assert all(same(p.value, v) for p, v in zip(series, SPECIALS, strict=True))


def test_queries_on_an_unknown_job_raise_not_found(store: Store) -> None:
    for call in (
        lambda: store.latest_metrics("nope"),
        lambda: store.metric_history("nope", "loss"),
        lambda: store.metric_series("nope", "loss", max_points=10),
        lambda: store.metric_summary("nope", "loss"),
    ):
        with pytest.raises(JobNotFoundError, match="nope"):
            call()


def test_an_unknown_metric_of_a_known_job_is_an_empty_history(store: Store) -> None:
    page = store.metric_history("j1", "nothing")
    assert (page.data, page.total, page.is_complete) == ([], 0, True)


def test_paging_over_a_10000_step_history_returns_every_point_once(store: Store) -> None:
    steps = list(range(10_000))
    random.Random(4).shuffle(steps)
    store.write([metric(s, s / 7) for s in steps])
    for limit in (1000, 777):
        seen: list[int] = []
        index: int | None = 0
        while index is not None:
            page = store.metric_history("j1", "loss", index=index, limit=limit)
            assert page.total == 10_000 and len(page.data) <= limit
            seen += [p.step for p in page.data]
            index = page.next_index
        assert seen == list(range(10_000))
    last = store.metric_history("j1", "loss", index=9_990, limit=1000)
    assert len(last.data) == 10 and last.is_complete and last.prev_index == 8_990
    assert store.metric_history("j1", "loss", index=20_000).data == []


@pytest.mark.parametrize(("index", "limit"), [(-1, 10), (0, 0), (0, -1), (1.5, 10)])
def test_bad_paging_is_a_query_error(store: Store, index: int, limit: int) -> None:
    with pytest.raises(QueryError):
        store.metric_history("j1", "loss", index=index, limit=limit)


def test_a_short_history_is_not_downsampled(store: Store) -> None:
    store.write([metric(s, float(s)) for s in range(10)])
    assert [p.step for p in store.metric_series("j1", "loss", max_points=10)] == list(range(10))


@pytest.mark.parametrize("max_points", [2, 3, 4, 7, 50, 333])
def test_downsampling_keeps_first_last_and_extremes(store: Store, max_points: int) -> None:
    rng = random.Random(max_points)
    values = [math.sin(s / 50) + rng.random() for s in range(2000)]
    values[1234] = 40.0  # a spike
    values[77] = -40.0
    store.write([metric(s, v) for s, v in enumerate(values)])
    series = store.metric_series("j1", "loss", max_points=max_points)
    steps = [p.step for p in series]
    assert len(series) <= max_points and steps == sorted(set(steps))
    assert steps[0] == 0 and steps[-1] == 1999
    assert all(p.value == values[p.step] for p in series)
    if max_points >= 4:
        assert 1234 in steps and 77 in steps


def test_downsampling_keeps_each_buckets_extremes(store: Store) -> None:
    values = [float(s % 100) for s in range(1000)]  # a saw: every bucket spans 0..99
    store.write([metric(s, v) for s, v in enumerate(values)])
    series = store.metric_series("j1", "loss", max_points=22)  # 10 buckets of 100
    lows = [p for p in series if p.value == 0.0]
    highs = [p for p in series if p.value == 99.0]
    assert len(lows) == 10 and len(highs) == 10


def test_infinities_count_as_extremes_when_downsampling(store: Store) -> None:
    values = [1.0] * 1000
    values[300], values[600], values[900] = math.inf, -math.inf, math.nan
    store.write([metric(s, v) for s, v in enumerate(values)])
    steps = [p.step for p in store.metric_series("j1", "loss", max_points=4)]
    assert 300 in steps and 600 in steps and 900 not in steps


def test_series_needs_at_least_two_points(store: Store) -> None:
    with pytest.raises(QueryError, match="at least 2"):
        store.metric_series("j1", "loss", max_points=1)


def test_summary_counts_specials_and_extremes(store: Store) -> None:
    store.write([metric(s, v) for s, v in enumerate([3.0, math.nan, -1.0, math.inf, 2.0])])
    summary = store.metric_summary("j1", "loss")
    assert (summary.count, summary.first_step, summary.last_step) == (5, 0, 4)
    assert (summary.min, summary.max) == (-1.0, math.inf)
    assert (summary.nan_count, summary.inf_count) == (1, 1)
    assert summary.latest == MetricPoint("loss", 2.0, 4, 1004.0)
    empty = store.metric_summary("j1", "nothing")
    assert (empty.count, empty.min, empty.latest) == (0, None, None)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20))
def test_every_float_comes_back_from_the_store_as_logged(store: Store, values: list[float]) -> None:
    name = f"p{uuid.uuid4().hex}"
    store.write([metric(step, v, name) for step, v in enumerate(values)])
    history = store.metric_history("j1", name, limit=None).data
    assert all(same(p.value, v) for p, v in zip(history, values, strict=True))
    [latest] = [p for p in store.latest_metrics("j1") if p.name == name]
    assert same(latest.value, values[-1])
