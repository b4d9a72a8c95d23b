"""A quantile sketch in bounded memory: a log-bucketed histogram with a relative-error bound.

>>> from jobtrace.batch.sketch import QuantileSketch
>>> sketch = QuantileSketch(relative_accuracy=0.01)
>>> sketch.add_many([0.5, 1.0, 2.0, 4.0])
>>> sketch.quantile(0.0), sketch.quantile(1.0)       # the extremes are exact
(0.5, 4.0)
>>> abs(sketch.median() - 1.5) <= 0.01 * 1.5          # the rest within 1 %
True

The scheme is DDSketch's (Masson, Rim & Lee, VLDB 2019). With a relative accuracy
``alpha`` and ``gamma = (1 + alpha) / (1 - alpha)``, a positive value ``x`` is counted in
bucket ``k = ceil(log(x) / log(gamma))``; every value in bucket ``k`` lies in
``(gamma**(k-1), gamma**k]``, and the bucket's estimate ``2 * gamma**k / (gamma + 1)`` is
within ``alpha`` of each of them, relatively. So :meth:`value_at_rank` returns a value
within ``alpha * x`` of the exact ``x`` of that rank, whatever the data, and :meth:`median`
(the mean of the two middle ranks for an even count, as :func:`statistics.median`)
likewise.

Memory is one dict entry per non-empty bucket. With the default ``alpha = 0.5 %`` a bucket
spans 1 % of its value, so durations from 1 ns to a year fill at most ~3,800 buckets; the
sketch never keeps more than ``max_buckets`` (4,096): past that it merges its lowest buckets
into one (DDSketch's "collapsing lowest" store), which keeps the bound for every rank above
the merged ones. The count, minimum and maximum are exact, and estimates are clamped to
them (the lowest and highest ranks read them exactly). Only positive, finite values are
counted (a duration of 0 carries no timing).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from itertools import repeat
from operator import mul

__all__ = ["QuantileSketch"]

_log = math.log
_ceil = math.ceil


class QuantileSketch:
    """Counts of positive values in log-spaced buckets; quantiles within ``relative_accuracy``.

    Not thread-safe: callers that share one serialise :meth:`add_many` and the reads.
    """

    __slots__ = ("_counts", "_gamma", "_inv_log_gamma", "count", "max", "max_buckets", "min")

    def __init__(self, relative_accuracy: float = 0.005, max_buckets: int = 4096) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy!r}")
        if max_buckets < 2:
            raise ValueError(f"max_buckets must be at least 2, got {max_buckets!r}")
        self._gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._inv_log_gamma = 1.0 / _log(self._gamma)
        self.max_buckets = max_buckets
        self._counts: Counter[int] = Counter()
        #: How many values were added; and the exact smallest and largest of them.
        self.count = 0
        self.min = math.inf
        self.max = -math.inf

    @property
    def relative_accuracy(self) -> float:
        """The bound ``alpha`` on ``|estimate - exact| / exact`` for any rank."""
        return (self._gamma - 1.0) / (self._gamma + 1.0)

    @property
    def buckets(self) -> int:
        """Non-empty buckets held (at most :attr:`max_buckets`)."""
        return len(self._counts)

    def add(self, value: float) -> None:
        """Count one value (positive and finite, else :class:`ValueError`)."""
        self.add_many((value,))

    def add_many(self, values: Iterable[float]) -> None:
        """Count many values at once; the bucket indexes are computed in C (``map``), which
        makes a chunk of thousands cost well under a microsecond per value."""
        chunk = values if isinstance(values, list | tuple) else list(values)
        if not chunk:
            return
        low, high = min(chunk), max(chunk)
        try:
            if not 0.0 < low <= high < math.inf:
                raise ValueError
            # A NaN can hide from min and max (it compares False); ceil(NaN) raises.
            keys = list(map(_ceil, map(mul, map(_log, chunk), repeat(self._inv_log_gamma))))
        except ValueError:
            raise ValueError(
                f"values must be positive and finite, got {low!r}..{high!r}"
                + (" and NaN" if any(map(math.isnan, chunk)) else "")
            ) from None
        # Counter.update over an iterable counts in C (_collections._count_elements).
        self._counts.update(keys)
        self.count += len(chunk)
        self.min = min(self.min, low)
        self.max = max(self.max, high)
        if len(self._counts) > self.max_buckets:
            self._collapse()

    def merge(self, other: QuantileSketch) -> None:
        """Add every value ``other`` counted (both must have the same accuracy)."""
        if other._gamma != self._gamma:
            raise ValueError("cannot merge sketches of different relative accuracy")
        self._counts.update(other._counts)
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        if len(self._counts) > self.max_buckets:
            self._collapse()

    def _collapse(self) -> None:
        # Fold the lowest buckets into the lowest one kept: the small values lose their
        # resolution (they read as larger), every rank above them keeps the alpha bound.
        keys = sorted(self._counts)
        excess = keys[: len(keys) - self.max_buckets + 1]
        into = keys[len(excess)]
        self._counts[into] += sum(self._counts.pop(k) for k in excess)

    def value_at_rank(self, rank: int) -> float:
        """An estimate of the ``rank``-th smallest value (0-based), within ``alpha`` of it."""
        if not 0 <= rank < self.count:
            raise IndexError(f"rank {rank} out of range for {self.count} values")
        if rank == 0:
            return self.min  # the extremes are known exactly
        if rank == self.count - 1:
            return self.max
        seen = 0
        for key in sorted(self._counts):
            seen += self._counts[key]
            if seen > rank:
                estimate = 2.0 * self._gamma**key / (self._gamma + 1.0)
                # The exact value lies within [min, max]: clamping only brings us closer.
                return min(max(estimate, self.min), self.max)
        raise AssertionError("unreachable: counts add up to count")  # pragma: no cover

    def quantile(self, q: float) -> float:
        """The value at rank ``floor(q · (count - 1))`` (``q`` in [0, 1]); 0.0 when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q!r}")
        if self.count == 0:
            return 0.0
        return self.value_at_rank(math.floor(q * (self.count - 1)))

    def median(self) -> float:
        """The median as :func:`statistics.median` defines it (the mean of the two middle
        values for an even count), each middle value within ``alpha``; 0.0 when empty."""
        n = self.count
        if n == 0:
            return 0.0
        if n % 2:
            return self.value_at_rank(n // 2)
        return (self.value_at_rank(n // 2 - 1) + self.value_at_rank(n // 2)) / 2
