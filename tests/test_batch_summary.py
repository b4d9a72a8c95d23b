"""The batch summary's aggregates: the SQL of jobtrace.store.items against the Python of
jobtrace.batch.summary, on any batch (property-based)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobtrace import _ids
from jobtrace.batch.summary import BatchStats, BatchSummary, stats_of_items, summary_row
from jobtrace.model import ITEM
from jobtrace.store import Store
from jobtrace.store import items as item_queries

durations = st.one_of(
    st.just(0.0), st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)
)
items = st.lists(
    st.tuples(
        st.sampled_from(["success", "success", "success", "error", "skipped"]),
        durations,
        st.integers(min_value=0, max_value=10**12),
        st.sampled_from([None, "ValueError", "OSError", "pkg.mod.Error"]),
    ),
    max_size=40,
)


#: Aggregates SQL and Python must agree on to the bit: counts, extremes, the median.
EXACT = (
    "total", "processed", "errors", "skipped", "timed", "duration_min", "duration_max",
    "duration_median", "samples", "measurements", "nbytes",
)  # fmt: skip


def record(batch_id: str, status: str, duration: float, count: int, etype: str | None) -> tuple:
    etype = etype if status == "error" else None
    return (ITEM, _ids.local_unique_id(), batch_id, "f", 1.0, duration, count, count // 3,
            count // 7, status, etype, None, None, None)  # fmt: skip


def test_sql_and_python_aggregate_any_batch_alike(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")

    @settings(max_examples=150, deadline=None)
    @given(items)
    def check(batch: list[tuple[str, float, int, str | None]]) -> None:
        batch_id = _ids.time_ordered_id()
        records = [record(batch_id, *item) for item in batch]
        if records:
            store.write(records)
        with store.engine.connect() as conn:
            sql = item_queries.batch_stats(conn, batch_id)
        python = stats_of_items(records, None, None)
        for name in EXACT:
            assert getattr(sql, name) == getattr(python, name), name
        assert dict(sql.error_types) == dict(python.error_types)
        assert list(sql.error_types) == list(python.error_types)  # one order for both
        # Sums may differ in the last bits: SQL adds in its own order, Python exactly.
        assert sql.duration_sum == pytest.approx(python.duration_sum, rel=1e-12, abs=1e-300)
        assert sql.duration_sq_dev == pytest.approx(python.duration_sq_dev, rel=1e-9, abs=1e-9)

    try:
        check()
    finally:
        store.close()


def test_an_empty_batch_has_no_division_by_zero() -> None:
    summary = BatchSummary.from_stats("empty", BatchStats()).to_dict()
    assert summary["success_rate_percent"] == 0 and summary["errors"]["rate_percent"] == 0
    assert set(summary["throughput"].values()) == {0.0}
    assert set(summary["timing"].values()) == {0.0}


def test_one_timed_file_has_no_spread() -> None:
    stats = BatchStats(total=1, processed=1, timed=1, duration_sum=2.0, duration_min=2.0,
                       duration_max=2.0, duration_median=2.0)  # fmt: skip
    timing = BatchSummary.from_stats("one", stats).timing
    assert (timing.average_per_file, timing.stddev_per_file) == (2.0, 0.0)


def test_summary_rows_flatten_nested_fields_and_error_types() -> None:
    stats = BatchStats(total=2, errors=2, error_types={"KeyError": 2})
    row = summary_row(BatchSummary.from_stats("b", stats).to_dict())
    assert row["errors.by_type.KeyError"] == 2 and row["timing.total_duration_seconds"] == 0.0
    assert not any(isinstance(v, dict) for v in row.values())
