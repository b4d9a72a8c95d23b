"""Runs side by side from the store, on SQLite and PostgreSQL: metric summaries with the
steps of their extremes, jobs with their latest metrics, sorting by params and tags, and
``jobtrace.search_runs`` with and without pandas (and through the REST API)."""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

import jobtrace
from jobtrace import model
from jobtrace.client import Client
from jobtrace.errors import JobNotFoundError, QueryError, SearchError
from jobtrace.runs import RUN_FIELDS, parse_columns
from jobtrace.store import Store
from tests.server_helpers import thread_server


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as s:
        yield s


def metric(job: str, name: str, step: int, value: float) -> model.Record:
    return (model.METRIC, job, name, step, value, 1000.0 + step)


def three_runs(store: Store) -> None:
    """Three jobs of experiment ``mnist`` (lr 0.1, 0.01 and the text 'auto') and one other."""
    store.create_job(
        job_id="a",
        name="train",
        experiment="mnist",
        params={"lr": 0.1, "opt": "adam"},
        tags={"team": "ds"},
        start_time=1.0,
    )
    store.create_job(
        job_id="b", name="train", experiment="mnist", params={"lr": 0.01}, start_time=2.0
    )
    store.create_job(
        job_id="c", name="train", experiment="mnist", params={"lr": "auto"}, start_time=3.0
    )
    store.create_job(job_id="d", name="other", start_time=4.0)
    store.write(
        [metric("a", "loss", s, v) for s, v in enumerate([0.9, 0.3, 0.2, 0.4])]
        + [metric("b", "loss", s, v) for s, v in enumerate([0.8, 0.7])]
        + [metric("a", "acc", 0, 0.5), metric("c", "acc", 0, 0.1)]
    )


# -- the store -------------------------------------------------------------------------------


def test_metric_summaries_give_each_metric_its_extremes_and_their_first_steps(
    store: Store,
) -> None:
    store.create_job(job_id="j")
    store.write(
        [metric("j", "loss", s, v) for s, v in enumerate([3.0, 1.0, math.nan, 1.0, 2.0])]
        + [metric("j", "gain", 0, -math.inf), metric("j", "gain", 5, math.inf)]
        + [metric("j", "void", 0, math.nan)]
    )
    by_name = {s.name: s for s in store.metric_summaries("j")}
    assert list(by_name) == ["gain", "loss", "void"]
    loss = by_name["loss"]
    assert (loss.min, loss.min_step, loss.max, loss.max_step) == (1.0, 1, 3.0, 0)
    assert (loss.count, loss.nan_count, loss.latest and loss.latest.step) == (5, 1, 4)
    gain = by_name["gain"]
    assert (gain.min, gain.min_step, gain.max, gain.max_step) == (-math.inf, 0, math.inf, 5)
    void = by_name["void"]
    assert (void.min, void.min_step, void.max, void.max_step) == (None, None, None, None)
    # One metric's summary is the same figures.
    assert store.metric_summary("j", "loss") == loss


def test_metric_summaries_of_an_unknown_job_raise_not_found(store: Store) -> None:
    with pytest.raises(JobNotFoundError):
        store.metric_summaries("nope")


def test_metric_summaries_of_a_long_history_find_the_extremes_anywhere(store: Store) -> None:
    store.create_job(job_id="j")
    rng = random.Random(7)
    values = [rng.uniform(-1, 1) for _ in range(20_000)]
    store.write([metric("j", "x", s, v) for s, v in enumerate(values)])
    (summary,) = store.metric_summaries("j")
    assert summary.min == min(values) and summary.min_step == values.index(min(values))
    assert summary.max == max(values) and summary.max_step == values.index(max(values))


def test_find_job_metrics_gives_each_job_its_latest_metrics(store: Store) -> None:
    three_runs(store)
    page = store.find_job_metrics(experiment="mnist", sort_by="start_time")
    assert [run.job["id"] for run in page.data] == ["a", "b", "c"]
    latest = {run.job["id"]: {p.name: p.value for p in run.metrics} for run in page.data}
    assert latest == {"a": {"acc": 0.5, "loss": 0.4}, "b": {"loss": 0.7}, "c": {"acc": 0.1}}


@pytest.mark.parametrize("prefix", ["param", "params"])
def test_jobs_sort_by_a_param_numbers_as_numbers_then_text_then_missing(
    store: Store, prefix: str
) -> None:
    three_runs(store)
    up = store.find_jobs(sort_by=f"{prefix}.lr").data
    down = store.find_jobs(sort_by=f"{prefix}.lr", descending=True).data
    assert [j["id"] for j in up] == ["b", "a", "c", "d"]
    assert [j["id"] for j in down] == ["a", "b", "c", "d"]


def test_jobs_sort_by_a_tag_with_the_jobs_without_it_last(store: Store) -> None:
    three_runs(store)
    assert [j["id"] for j in store.find_jobs(sort_by="tag.team").data] == ["a", "b", "c", "d"]
    down = store.find_jobs(sort_by="tag.team", descending=True).data
    assert [j["id"] for j in down] == ["a", "d", "c", "b"]  # ties: by id, descending too


def test_sorting_a_thousand_jobs_by_a_param_pages_through_them_in_numeric_order(
    store: Store,
) -> None:
    rng = random.Random(3)
    values = {f"j{i:04d}": rng.choice([rng.randint(-50, 50), rng.random()]) for i in range(1000)}
    for job_id, value in values.items():
        store.create_job(job_id=job_id, params={"x": value} if value != 0 else {})
    seen: list[str] = []
    index = 0
    while True:
        page = store.find_jobs(sort_by="param.x", index=index, limit=97)
        seen += [j["id"] for j in page.data]
        if page.is_complete:
            break
        index += 97
    with_value = sorted((v, k) for k, v in values.items() if v != 0)
    missing = sorted(k for k, v in values.items() if v == 0)
    assert seen == [k for _, k in with_value] + missing


def test_an_unknown_sort_field_names_the_param_and_tag_forms(store: Store) -> None:
    with pytest.raises(QueryError, match=r"param\.NAME or tag\.NAME"):
        store.find_jobs(sort_by="lr")


# -- search_runs -----------------------------------------------------------------------------


def test_search_runs_returns_a_dataframe_with_params_metrics_and_tags(store: Store) -> None:
    three_runs(store)
    runs = jobtrace.search_runs("metrics.loss < 0.5", store=store)
    assert list(runs["run_id"]) == ["a"]
    assert list(runs.columns) == [
        *RUN_FIELDS,
        "metrics.acc",
        "metrics.loss",
        "params.lr",
        "params.opt",
        "tags.team",
    ]
    row = runs.iloc[0]
    assert (row["params.lr"], row["metrics.loss"], row["tags.team"]) == (0.1, 0.4, "ds")
    assert row["start_time"] == datetime.fromtimestamp(1.0, UTC)
    assert str(runs["start_time"].dtype).startswith("datetime64")


def test_search_runs_takes_mlflow_filter_strings(store: Store) -> None:
    three_runs(store)
    found = jobtrace.search_runs("params.lr = '0.1'", store=store)
    assert list(found["run_id"]) == ["a"]
    both = jobtrace.search_runs("metrics.loss < 0.75 AND params.lr = '0.01'", store=store)
    assert list(both["run_id"]) == ["b"]
    none = jobtrace.search_runs("metrics.loss < 0.5 and params.lr = '0.01'", store=store)
    assert none.empty


def test_search_runs_orders_limits_and_picks_columns(store: Store) -> None:
    three_runs(store)
    runs = jobtrace.search_runs(
        experiment="mnist",
        store=store,
        columns=["param.lr", "metrics.loss", "status"],
        order_by=["metrics.loss DESC"],
        max_results=2,
    )
    assert list(runs.columns) == ["run_id", "params.lr", "metrics.loss", "status"]
    assert list(runs["run_id"]) == ["b", "a"]
    assert list(runs["metrics.loss"]) == [0.7, 0.4]


def test_search_runs_orders_by_the_names_of_its_columns(store: Store) -> None:
    three_runs(store)
    by_id = jobtrace.search_runs(store=store, order_by="run_id DESC", columns=["status"])
    assert list(by_id["run_id"]) == ["d", "c", "b", "a"]
    by_tag = jobtrace.search_runs(store=store, order_by=["tags.team"], columns=["tags.team"])
    assert list(by_tag["run_id"]) == ["a", "b", "c", "d"]  # the jobs without the tag last


def test_search_runs_without_pandas_returns_dicts_with_the_same_keys(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_runs(store)
    with_pandas = jobtrace.search_runs(experiment="mnist", store=store, order_by="start_time")
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now raises ImportError
    rows = jobtrace.search_runs(experiment="mnist", store=store, order_by="start_time")
    assert isinstance(rows, list) and [r["run_id"] for r in rows] == ["a", "b", "c"]
    assert all(list(r) == list(with_pandas.columns) for r in rows)
    assert rows[1]["metrics.acc"] is None and rows[1]["params.lr"] == 0.01
    assert rows[0]["start_time"] == datetime.fromtimestamp(1.0, UTC)


def test_search_runs_opens_a_store_url(store_url: str) -> None:
    with Store(store_url) as store:
        three_runs(store)
    runs = jobtrace.search_runs("name:other", store=store_url)
    assert list(runs["run_id"]) == ["d"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": "foo.bar > 1"}, "unknown field prefix"),
        ({"columns": ["nope"]}, "unknown column 'nope'"),
        ({"order_by": ["a", "b"]}, "one field"),
        ({"order_by": "metrics.loss SIDEWAYS"}, "ASC or DESC"),
        ({"max_results": 0}, "max_results"),
    ],
)
def test_search_runs_refuses_bad_arguments_clearly(
    store: Store, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises((QueryError, SearchError), match=message):
        jobtrace.search_runs(store=store, **kwargs)


def test_columns_accept_both_spellings_and_job_fields() -> None:
    columns = parse_columns("param.lr, metrics.loss,tags.team,id,duration")
    assert [(c.kind, c.key) for c in columns] == [
        ("param", "lr"),
        ("metric", "loss"),
        ("tag", "team"),
        ("field", "run_id"),
        ("field", "duration"),
    ]
    with pytest.raises(QueryError, match="empty column"):
        parse_columns("param.lr,,metric.loss")


# -- the REST API ----------------------------------------------------------------------------


def test_the_rest_api_lists_jobs_with_metrics_sorted_by_a_param(store_url: str) -> None:
    with Store(store_url) as store:
        three_runs(store)
    with thread_server(store_url) as url, Client(url) as client:
        page = client.jobs.get(sort_by="param.lr", with_metrics=True, experiment="mnist")
        assert [j["id"] for j in page["data"]] == ["b", "a", "c"]
        assert [p["name"] for p in page["data"][1]["metrics"]] == ["acc", "loss"]
        plain = client.jobs.get(search="params.lr = '0.1'")
        assert [j["id"] for j in plain["data"]] == ["a"] and "metrics" not in plain["data"][0]
        summaries = client.jobs.get_metric_summaries_by_id("a")
        loss = next(s for s in summaries if s["name"] == "loss")
        assert (loss["min"], loss["minStep"], loss["max"], loss["maxStep"]) == (0.2, 2, 0.9, 0)
        assert loss["latest"]["value"] == 0.4
