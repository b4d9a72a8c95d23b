"""Jobs and experiments on SQLite and PostgreSQL: create, get, find with sort, search, pages."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from jobtrace import model
from jobtrace.errors import (
    ConflictError,
    ExperimentNotFoundError,
    JobNotFoundError,
    QueryError,
    SearchError,
)
from jobtrace.store import Store, schema

NOW = 10_000.0
#: Job id -> (name, latest accuracy or None for no such metric).
JOBS: dict[str, tuple[str, float | None]] = {
    "a1": ("ResNet-50", 0.91),
    "a2": ("resnet_18", math.inf),
    "a3": ("vit", math.nan),
    "a4": ("vit-large", None),
    "a5": ("mlp 100%", -math.inf),
    "a6": ("mlpx100", 0.5),
}


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as s:
        s.create_experiment("exp", description="image models", tags={"team": "cv"})
        for i, (job_id, (name, acc)) in enumerate(JOBS.items()):
            s.create_job(job_id=job_id, name=name, experiment="exp", start_time=1000.0 + i)
            if acc is not None:
                s.write(
                    [
                        (model.METRIC, job_id, "acc", 3, acc, 5.0),
                        (model.METRIC, job_id, "acc", 1, 0.0, 1.0),
                    ]
                )
            s.write([(model.METRIC, job_id, "loss", 0, float(i), 5.0)])
        yield s


def ids(page: Any) -> list[str]:
    return [row.job["id"] if hasattr(row, "job") else row["id"] for row in page.data]


def test_experiment_metrics_give_each_jobs_latest_points(store: Store) -> None:
    page = store.experiment_metrics("exp", sort_by="id", limit=2)
    assert (page.total, ids(page), page.is_complete) == (6, ["a1", "a2"], False)
    first = page.data[0]
    assert first.job["name"] == "ResNet-50" and first.job["experiment"] == "exp"
    assert [(p.name, p.step, p.value) for p in first.metrics] == [
        ("acc", 3, 0.91),
        ("loss", 0, 0.0),
    ]
    assert store.experiment_metrics("exp", sort_by="id", index=2, limit=2).data[0].job["id"] == "a3"


def test_sorting_by_a_metric_orders_infinities_and_puts_nan_and_missing_last(store: Store) -> None:
    ascending = ids(store.experiment_metrics("exp", sort_by="metric.acc", limit=10))
    descending = ids(store.experiment_metrics("exp", sort_by="acc", descending=True, limit=10))
    assert ascending[:4] == ["a5", "a6", "a1", "a2"]
    assert descending[:4] == ["a2", "a1", "a6", "a5"]
    assert set(ascending[4:]) == set(descending[4:]) == {"a3", "a4"}


def test_sorting_by_a_job_field_in_either_spelling(store: Store) -> None:
    newest = ids(store.experiment_metrics("exp", limit=10))
    assert newest == ["a6", "a5", "a4", "a3", "a2", "a1"]
    # Text order is the database's collation; these names sort alike under any of them.
    by_name = ids(store.experiment_metrics("exp", sort_by="name", search="vit*", limit=10))
    assert by_name == ["a3", "a4"]
    assert ids(store.find_jobs(sort_by="startTime", limit=1)) == ["a1"]
    assert ids(store.find_jobs(sort_by="start_time", descending=True, limit=1)) == ["a6"]


def test_pages_sorted_by_a_metric_cover_every_job_once(store: Store) -> None:
    seen: list[str] = []
    for index in range(0, 6, 4):
        seen += ids(store.experiment_metrics("exp", sort_by="metric.acc", index=index, limit=4))
    assert sorted(seen) == sorted(JOBS)


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("name:resnet*", {"a1", "a2"}),
        ("name:RESNET-50", {"a1"}),
        ("resnet", {"a1", "a2"}),
        ("name:resnet_18", {"a2"}),
        ("name:resnet?18", {"a2"}),
        ("name:vit", {"a3"}),
        ("name:vit*, name:*large", {"a4"}),
        ("vit, id:a3", {"a3"}),
        ("100%", {"a5"}),
        ("name:mlp?100*", {"a5", "a6"}),
        ("name:mlp?100", {"a6"}),
        ("_", {"a2"}),
        ('"mlp 100%"', {"a5"}),
        ("metric.acc>0.5", {"a1", "a2"}),
        ("metric.acc>=0.5", {"a1", "a2", "a6"}),
        ("metric.acc<0.5", {"a5"}),
        ("metric.acc<=inf", {"a1", "a2", "a5", "a6"}),
        ("metric.acc=nan", {"a3"}),
        ("metric.acc!=0.5", {"a1", "a2", "a3", "a5"}),
        ("metric.acc=inf", {"a2"}),
        ("metric.acc>-inf", {"a1", "a2", "a6"}),
        ("metric.loss>=2, metric.loss<4", {"a3", "a4"}),
        ("start_time>1003", {"a5", "a6"}),
        ("status:running", set(JOBS)),
        ("status:lost", set()),
        ("status:runn*", set(JOBS)),
        ("experiment:EXP", set(JOBS)),
        ("", set(JOBS)),
    ],
)
def test_search(store: Store, search: str, expected: set[str]) -> None:
    page = store.experiment_metrics("exp", search=search, limit=100)
    assert set(ids(page)) == expected
    assert page.total == len(expected)


@pytest.mark.parametrize(
    "search",
    [
        "name:'; DROP TABLE jobs; --",
        '"\'); DELETE FROM metric_latest; --"',
        "name:x' OR '1'='1",
        "id:a1\\' OR 1=1 --",
        'metric."acc\'; DROP TABLE metrics; --">0',
    ],
)
def test_sql_in_a_search_is_only_text(store: Store, search: str) -> None:
    try:
        assert store.experiment_metrics("exp", search=search, limit=100).total == 0
    except SearchError as exc:
        assert "quote" in exc.reason
    with store.engine.connect() as conn:
        for table in (schema.jobs, schema.metrics, schema.metric_latest):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() > 0


def test_status_lost_is_worked_out_from_heartbeats(store: Store) -> None:
    later = 1e12  # long after every heartbeat
    assert store.find_jobs(search="status:lost", now=later, limit=100).total == len(JOBS)
    assert store.find_jobs(search="status:running", now=later).total == 0
    assert store.find_jobs(search="status:RUNNING").total == len(JOBS)


def test_jobs_are_filtered_by_status_with_lost_worked_out(store: Store) -> None:
    store.create_job(job_id="done", status="succeeded")
    assert ids(store.find_jobs(status="succeeded")) == ["done"]
    assert store.find_jobs(status="lost", now=1e12, limit=100).total == len(JOBS)
    with pytest.raises(QueryError, match="unknown status 'exploded'"):
        store.find_jobs(status="exploded")


def test_unknown_search_fields_and_bad_syntax_are_search_errors(store: Store) -> None:
    with pytest.raises(SearchError, match="unknown text field 'colour'") as info:
        store.find_jobs(search="name:x, colour:red")
    assert info.value.position == 8
    with pytest.raises(SearchError, match="unterminated quote"):
        store.find_experiments(search='"open')
    with pytest.raises(SearchError, match=r"unknown number field 'metric\.acc'"):
        store.find_experiments(search="metric.acc>1")


def test_unknown_sort_fields_are_query_errors(store: Store) -> None:
    with pytest.raises(QueryError, match="cannot sort jobs by 'colour'"):
        store.find_jobs(sort_by="colour")
    with pytest.raises(QueryError, match="cannot sort experiments"):
        store.find_experiments(sort_by="colour")


def test_an_unknown_experiment_is_not_found(store: Store) -> None:
    with pytest.raises(ExperimentNotFoundError):
        store.experiment_metrics("nope")
    with pytest.raises(ExperimentNotFoundError):
        store.get_experiment("nope")


def test_experiments_are_created_once_and_counted(store: Store) -> None:
    with pytest.raises(ConflictError):
        store.create_experiment("exp")
    store.create_experiment("empty", description="nothing yet")
    store.create_job(job_id="b1", experiment="other")  # creates "other"
    exp = store.get_experiment("exp")
    assert (exp.job_count, exp.description, exp.tags) == (6, "image models", {"team": "cv"})
    by_count = store.find_experiments(sort_by="jobCount", descending=True)
    assert [(e.name, e.job_count) for e in by_count.data] == [
        ("exp", 6),
        ("other", 1),
        ("empty", 0),
    ]
    assert [e.name for e in store.find_experiments(search="image").data] == ["exp"]
    assert [e.name for e in store.find_experiments(search="job_count<1").data] == ["empty"]
    page = store.find_experiments(limit=2)
    assert (page.total, len(page.data), page.next_index) == (3, 2, 2)


def test_jobs_are_created_once_with_checked_fields(store: Store) -> None:
    job = store.create_job(name="made", tags={"k": 1})
    assert job["status"] == "running" and job["tags"] == {"k": 1} and len(job["id"]) == 26
    with pytest.raises(ConflictError):
        store.create_job(job_id="a1")
    finished = store.create_job(start_time=100.0, end_time=160.0, host="h", heartbeat_interval=5)
    assert (finished["duration"], finished["host"], finished["heartbeat_interval"]) == (
        60.0,
        "h",
        5.0,
    )
    assert store.job_by_id(finished["id"])["end_time"] == 160.0
    bad_fields: list[dict[str, Any]] = [
        {"job_id": "a b"},
        {"status": "lost"},
        {"tags": [1]},
        {"start_time": "x"},
        {"end_time": True},
        {"heartbeat_interval": 0},
    ]
    for bad in bad_fields:
        with pytest.raises(QueryError):
            store.create_job(**bad)
    with pytest.raises(QueryError):
        store.create_experiment("")
    assert store.get_job(job["id"]) is not None


def test_job_by_id_takes_exact_ids_only(store: Store) -> None:
    assert store.job_by_id("a1")["name"] == "ResNet-50"
    with pytest.raises(JobNotFoundError):
        store.job_by_id("a")


def test_a_created_job_takes_later_snapshots(store: Store) -> None:
    fields = dict.fromkeys(model.FIELDS[model.JOB])
    fields.update(id="a1", seq=2**62, status="succeeded", start_time=1.0, name="ResNet-50")
    store.write([(model.JOB, *fields.values())])
    job = store.get_job("a1")
    assert job is not None and job["status"] == "succeeded"


def test_params_and_tags_are_searched_by_value_and_compared_as_numbers(store_url: str) -> None:
    """``param.NAME`` / ``tag.NAME`` (and the plural spellings) on SQLite and PostgreSQL:
    text matches the value as JSON spells it, comparisons take numbers as numbers (``64``
    equals ``64.0``, ``0.1 < 0.05`` is false, a string never compares), absent keys match
    nothing."""
    runs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "p1": ({"lr": 0.1, "optimizer": "adam", "batch": 64, "warm": True}, {"team": "ds"}),
        "p2": ({"lr": 0.01, "optimizer": "sgd", "batch": 64.0}, {"team": "cv"}),
        "p3": ({"lr": "0.5", "optimizer": "Adam", "odd key": 3}, {"team": "ds", "x": 1}),
        "p4": ({}, {}),
    }
    with Store(store_url) as s:
        for job_id, (params, tags) in runs.items():
            s.create_job(job_id=job_id, start_time=1.0, params=params, tags=tags)

        def found(search: str) -> list[str]:
            return sorted(j["id"] for j in s.find_jobs(search=search, limit=100).data)

        assert found("param.lr>0.05") == ["p1"]  # "0.5" is a string: never compared
        assert found("params.lr<=0.1") == ["p1", "p2"]
        assert found("param.batch=64") == ["p1", "p2"]
        assert found("param.optimizer:adam") == ["p1", "p3"]  # case-insensitive, like all text
        assert found("param.optimizer:ad*, tag.team:ds") == ["p1", "p3"]
        assert found("params.lr:0.5") == ["p3"]
        assert found("param.warm:true") == ["p1"]
        assert found('param."odd key">2') == ["p3"]
        assert found("tags.team:cv") == ["p2"]
        assert found("tag.x>=1") == ["p3"]
        assert found("param.missing:*") == []
        assert found("param.missing!=1") == []
        with pytest.raises(SearchError) as info:
            s.find_jobs(search="status:running, foo.bar>1")
        assert info.value.position == 16 and "unknown field prefix 'foo.'" in info.value.reason
        with pytest.raises(SearchError, match=r"unknown text field 'param\.x'"):
            s.find_experiments(search="param.x:1")
