"""QuantileSketch: every rank within the stated relative error, in bounded memory."""

from __future__ import annotations

import doctest
import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobtrace.batch import sketch as sketch_module
from jobtrace.batch.sketch import QuantileSketch

positive = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)
#: A hair above alpha for the rounding of log() at a bucket's edge.
SLACK = 1 + 1e-9


@settings(max_examples=300, deadline=None)
@given(st.lists(positive, min_size=1, max_size=300), st.floats(min_value=0.0, max_value=1.0))
def test_any_quantile_is_within_the_relative_accuracy(values: list[float], q: float) -> None:
    sketch = QuantileSketch(relative_accuracy=0.01, max_buckets=100_000)
    sketch.add_many(values)
    exact = sorted(values)[math.floor(q * (len(values) - 1))]
    assert abs(sketch.quantile(q) - exact) <= 0.01 * exact * SLACK


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=1e-9, max_value=1e6), min_size=1, max_size=200))
def test_the_median_is_within_the_relative_accuracy_of_statistics_median(
    values: list[float],
) -> None:
    values = [v for v in values if v > 0] or [1.0]
    sketch = QuantileSketch()  # the default: 0.5 %, as BatchMetrics uses
    sketch.add_many(values)
    exact = statistics.median(values)
    assert abs(sketch.median() - exact) <= 0.005 * exact * SLACK


def test_count_min_and_max_are_exact_and_extreme_ranks_clamp_to_them() -> None:
    rng = random.Random(5)
    values = [rng.expovariate(3.0) for _ in range(10_000)]
    sketch = QuantileSketch()
    for start in range(0, len(values), 999):  # chunks of any size add up alike
        sketch.add_many(values[start : start + 999])
    assert (sketch.count, sketch.min, sketch.max) == (10_000, min(values), max(values))
    assert sketch.quantile(0.0) == min(values) and sketch.quantile(1.0) == max(values)


def test_memory_is_bounded_by_max_buckets_and_high_ranks_keep_the_bound() -> None:
    sketch = QuantileSketch(relative_accuracy=0.01, max_buckets=80)
    # 300 values spread over 300 orders of magnitude, then 1000 values in [1, 2) that fill
    # its 64 buckets (2**-7 accuracy: 64 per doubling): the spread ones are collapsed, the
    # others keep their resolution.
    values = [10.0**e for e in range(-300, 0)] + [1.0 + i / 1000 for i in range(1000)]
    sketch.add_many(values)
    assert sketch.buckets <= 80
    exact = sorted(values)
    for rank in range(300, len(values), 7):
        assert abs(sketch.value_at_rank(rank) - exact[rank]) <= 0.01 * exact[rank] * SLACK
    assert sketch.value_at_rank(150) > exact[150]  # a collapsed rank reads larger


def test_merging_equals_adding_everything_to_one() -> None:
    rng = random.Random(9)
    a_values = [rng.lognormvariate(0, 2) for _ in range(3000)]
    b_values = [rng.lognormvariate(1, 1) for _ in range(2000)]
    a, b, both = QuantileSketch(), QuantileSketch(), QuantileSketch()
    a.add_many(a_values)
    b.add_many(b_values)
    both.add_many(a_values + b_values)
    a.merge(b)
    assert [a.quantile(q / 10) for q in range(11)] == [both.quantile(q / 10) for q in range(11)]
    assert (a.count, a.min, a.max) == (both.count, both.min, both.max)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_values_that_are_not_positive_and_finite_are_refused(bad: float) -> None:
    sketch = QuantileSketch()
    with pytest.raises(ValueError, match="positive and finite"):
        sketch.add_many([1.0, bad])
    assert sketch.count == 0


def test_an_empty_sketch_reads_zero_and_bad_arguments_are_refused() -> None:
    sketch = QuantileSketch()
    assert sketch.median() == sketch.quantile(0.5) == 0.0
    with pytest.raises(ValueError, match="q must be"):
        sketch.quantile(1.5)
    with pytest.raises(ValueError, match="relative_accuracy"):
        QuantileSketch(relative_accuracy=1.0)
    with pytest.raises(ValueError, match="different relative accuracy"):
        sketch.merge(QuantileSketch(relative_accuracy=0.01))
    # The guarantee is the power of two at or below the accuracy asked for.
    assert QuantileSketch(relative_accuracy=0.02).relative_accuracy == 2.0**-6
    assert QuantileSketch().relative_accuracy == 2.0**-8


def test_the_module_docstring_example_runs() -> None:
    result = doctest.testmod(sketch_module, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0
