"""jobtrace.log_metric: what it records, and bad input dropped, counted and logged once."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

import jobtrace
from jobtrace import metrics
from jobtrace.model import METRIC
from jobtrace.sinks.memory import MemorySink
from jobtrace.store import Store


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_rejected", {})


def points(sink: MemorySink) -> list[tuple[Any, ...]]:
    jobtrace.flush()
    return [r[1:] for r in sink.of_kind(METRIC)]


def test_a_point_carries_the_job_name_step_value_and_time(memory_sink: MemorySink) -> None:
    with jobtrace.job("train") as job:
        jobtrace.log_metric("loss", 0.25, step=7, timestamp=1234.5)
        jobtrace.log_metric("acc", 0.5)
    [loss, acc] = points(memory_sink)
    assert loss == (job.id, "loss", 7, 0.25, 1234.5)
    assert acc[:4] == (job.id, "acc", 0, 0.5)
    assert job.start_time is not None and job.end_time is not None
    assert job.start_time <= acc[4] <= job.end_time


def test_numbers_of_every_kind_become_floats(memory_sink: MemorySink) -> None:
    numpy = pytest.importorskip("numpy")
    values = [3, True, Decimal("0.5"), Fraction(1, 4), numpy.float32(1.5), numpy.int64(-2)]
    with jobtrace.job("kinds"):
        for step, value in enumerate(values):
            jobtrace.log_metric("v", value, step=step)
        jobtrace.log_metric("v", 1.0, step=numpy.int64(99))
    got = [(p[2], p[3]) for p in points(memory_sink)]
    assert got == [(0, 3.0), (1, 1.0), (2, 0.5), (3, 0.25), (4, 1.5), (5, -2.0), (99, 1.0)]
    assert all(type(p[3]) is float and type(p[2]) is int for p in points(memory_sink))


def test_nan_and_infinities_are_recorded_as_they_are(memory_sink: MemorySink) -> None:
    with jobtrace.job("specials"):
        for step, value in enumerate([math.nan, math.inf, -math.inf]):
            jobtrace.log_metric("v", value, step=step)
    nan, inf, neg = (p[3] for p in points(memory_sink))
    assert math.isnan(nan) and inf == math.inf and neg == -math.inf


def test_an_aware_datetime_is_a_timestamp(memory_sink: MemorySink) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with jobtrace.job("dt"):
        jobtrace.log_metric("v", 1.0, timestamp=when)
        jobtrace.log_metric("v", 1.0, step=1, timestamp=1_700_000_000)
    assert [p[4] for p in points(memory_sink)] == [when.timestamp(), 1_700_000_000.0]


BAD_CALLS = [
    ("value", ("v", "1.5")),
    ("value", ("v", None)),
    ("value", ("v", [1.0])),
    ("value", ("v", 1j)),
    ("value", ("v", 10**400)),
    ("name", ("", 1.0)),
    ("name", ("   ", 1.0)),
    ("name", (None, 1.0)),
    ("name", (["v"], 1.0)),
    ("name", ("x" * 257, 1.0)),
    ("step", ("v", 1.0, -1)),
    ("step", ("v", 1.0, 1.5)),
    ("step", ("v", 1.0, True)),
    ("step", ("v", 1.0, "3")),
    ("step", ("v", 1.0, 2**63)),
    ("timestamp", ("v", 1.0, 0, "yesterday")),
    ("timestamp", ("v", 1.0, 0, math.nan)),
    ("timestamp", ("v", 1.0, 0, math.inf)),
    ("timestamp", ("v", 1.0, 0, True)),
    ("timestamp", ("v", 1.0, 0, 10**400)),
]


@pytest.mark.parametrize(("kind", "args"), BAD_CALLS)
def test_bad_input_is_dropped_counted_and_never_raises(
    kind: str, args: tuple[Any, ...], memory_sink: MemorySink
) -> None:
    with jobtrace.job("bad"):
        jobtrace.log_metric(*args)
        jobtrace.log_metric("good", 1.0)
    assert [p[1] for p in points(memory_sink)] == ["good"]
    assert metrics.rejected_metrics() == {kind: 1}


def test_each_kind_of_mistake_is_logged_once(
    memory_sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jobtrace.metrics")
    with jobtrace.job("bad"):
        for _ in range(5):
            jobtrace.log_metric("v", "text")
            jobtrace.log_metric("v", 1.0, step=-1)
    lines = [r.getMessage() for r in caplog.records if r.name == "jobtrace.metrics"]
    assert len(lines) == 2
    assert "'text' is not a number" in lines[0] and "step -1" in lines[1]
    assert metrics.rejected_metrics() == {"value": 5, "step": 5}


def test_outside_a_job_a_point_is_dropped(memory_sink: MemorySink) -> None:
    jobtrace.log_metric("v", 1.0)
    assert points(memory_sink) == []
    assert metrics.rejected_metrics() == {"no_job": 1}


def test_an_unprintable_value_is_still_dropped_quietly(memory_sink: MemorySink) -> None:
    class Weird:
        def __float__(self) -> float:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            raise RuntimeError("no repr either")

    with jobtrace.job("weird"):
        jobtrace.log_metric("v", Weird())
    assert points(memory_sink) == []
    assert metrics.rejected_metrics() == {"value": 1}


def test_names_are_cleaned_of_what_stores_refuse(memory_sink: MemorySink) -> None:
    # NUL becomes U+FFFD, as on every path (jobtrace.limits): dropping it would make
    # "a\0b" and "ab" one name.
    with jobtrace.job("names"):
        jobtrace.log_metric("a\x00b", 1.0)
    assert [p[1] for p in points(memory_sink)] == ["a\ufffdb"]


def test_recording_off_makes_log_metric_a_no_op(memory_sink: MemorySink) -> None:
    jobtrace.configure(url="memory://off", enabled=False)
    with jobtrace.job("off"):
        jobtrace.log_metric("v", 1.0)
    assert MemorySink.named("off").records == []
    assert metrics.rejected_metrics() == {}


def test_points_reach_a_sqlite_store_with_upsert_and_latest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    jobtrace.configure(url=url)
    with jobtrace.job("train") as job:
        for step in (0, 2, 1):
            jobtrace.log_metric("loss", float(step), step=step)
        jobtrace.log_metric("loss", math.nan, step=1)  # replaces step 1
    jobtrace.flush()
    with Store(url) as store:
        history = store.metric_history(job.id, "loss", limit=None).data
        [latest] = store.latest_metrics(job.id)
    assert [p.step for p in history] == [0, 1, 2] and math.isnan(history[1].value)
    assert (latest.step, latest.value) == (2, 2.0)
