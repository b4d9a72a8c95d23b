"""A quantile sketch in bounded memory: a log-bucketed histogram with a relative-error bound.

>>> from jobtrace.batch.sketch import QuantileSketch
>>> sketch = QuantileSketch(relative_accuracy=0.01)
>>> sketch.add_many([0.5, 1.0, 2.0, 4.0])
>>> sketch.quantile(0.0), sketch.quantile(1.0)       # the extremes are exact
(0.5, 4.0)
>>> abs(sketch.median() - 1.5) <= 0.01 * 1.5          # the rest within 1 %
True

The guarantee is DDSketch's (Masson, Rim & Lee, VLDB 2019): every rank's estimate is within
a relative error ``alpha`` of the exact value of that rank, whatever the data. The buckets are
log-linear, as in HdrHistogram and DDSketch's interpolated mappings, and read straight off the
IEEE-754 bits of a value: a positive double's bit pattern orders like the value itself, and
keeping its exponent and the top ``m`` bits of its mantissa (``bits >> (52 - m)``) puts
``x`` in a bucket ``[lo, hi)`` no wider than ``lo * 2**-m``. The estimate
``2 * lo * hi / (lo + hi)`` is then within ``(hi - lo) / (hi + lo) < 2**-(m + 1)`` of every
value in it, relatively; ``m`` is the smallest that makes ``2**-(m + 1) <= alpha``. Taking the
bits is a memory copy and a shift per value (no ``log``), so a chunk of thousands of values
costs a few tens of nanoseconds per value.

:meth:`value_at_rank` and :meth:`quantile` return a value within ``alpha * x`` of the exact
``x`` of that rank, and :meth:`median` (the mean of the two middle ranks for an even count,
as :func:`statistics.median`) likewise.

Memory is one dict entry per non-empty bucket: with the default ``alpha = 0.5 %``
(``m = 7``: 128 buckets per doubling, a guarantee of 0.39 %), durations from 1 ms to an hour
fill at most ~2,800. The sketch never keeps more than ``max_buckets`` (8,192, under 1 MiB):
past that it merges its lowest buckets into one (DDSketch's "collapsing lowest" store), which
keeps the bound for every rank above the merged ones. The count, minimum and maximum are
exact, and estimates are clamped to them (the lowest and highest ranks read them exactly).
Only positive, finite values are counted (a duration of 0 carries no timing); the bound
holds for normal doubles, from 2.2e-308 up (subnormals have fewer mantissa bits).
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable
from itertools import repeat
from operator import rshift

__all__ = ["QuantileSketch"]

_MANTISSA_BITS = 52


def _double(bits: int) -> float:
    """The double whose IEEE-754 bit pattern is ``bits``."""
    return array("d", array("q", (bits,)).tobytes())[0]


class QuantileSketch:
    """Counts of positive values in log-linear buckets; any quantile within
    ``relative_accuracy``.

    Not thread-safe: callers that share one serialise :meth:`add_many` and the reads.
    """

    __slots__ = ("_counts", "_shift", "count", "max", "max_buckets", "min")

    def __init__(self, relative_accuracy: float = 0.005, max_buckets: int = 8192) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy!r}")
        if max_buckets < 2:
            raise ValueError(f"max_buckets must be at least 2, got {max_buckets!r}")
        # The fewest mantissa bits m with 2**-(m + 1) <= relative_accuracy.
        mantissa_bits = min(_MANTISSA_BITS, max(0, math.ceil(-math.log2(relative_accuracy)) - 1))
        self._shift = _MANTISSA_BITS - mantissa_bits
        self.max_buckets = max_buckets
        self._counts: Counter[int] = Counter()
        #: How many values were added; and the exact smallest and largest of them.
        self.count = 0
        self.min = math.inf
        self.max = -math.inf

    @property
    def relative_accuracy(self) -> float:
        """The bound on ``|estimate - exact| / exact`` for any rank (at most the accuracy
        asked for: a power of two)."""
        return 2.0 ** -(_MANTISSA_BITS - self._shift + 1)

    @property
    def buckets(self) -> int:
        """Non-empty buckets held (at most :attr:`max_buckets`)."""
        return len(self._counts)

    def add(self, value: float) -> None:
        """Count one value (positive and finite, else :class:`ValueError`)."""
        self.add_many((value,))

    def add_many(self, values: Iterable[float]) -> None:
        """Count many values at once (positive and finite, else :class:`ValueError` and none
        is counted); the work per value is done in C. Values that are not floats (ints, say)
        go through ``array("d", …)`` like any other."""
        chunk = values if type(values) is list else list(values)
        if not chunk:
            return
        low, high = min(chunk), max(chunk)
        try:
            # min and max can step over a NaN (it compares False); a sum cannot.
            has_nan = math.isnan(math.fsum(chunk))
        except OverflowError:  # finite values too large to add up: no NaN among them
            has_nan = False
        except ValueError:  # +inf and -inf together
            has_nan = True
        if has_nan or not (low > 0.0 and high < math.inf):
            bad = next((v for v in chunk if not 0.0 < v < math.inf), low)
            raise ValueError(f"values must be positive and finite, got {bad!r}")
        # Counter.update over an iterable counts in C (_collections._count_elements).
        bits = memoryview(array("d", chunk)).cast("B").cast("q")
        self._counts.update(map(rshift, bits, repeat(self._shift)))
        self.count += len(chunk)
        self.min = min(self.min, low)
        self.max = max(self.max, high)
        if len(self._counts) > self.max_buckets:
            self._collapse()

    def merge(self, other: QuantileSketch) -> None:
        """Add every value ``other`` counted (both must have the same accuracy)."""
        if other._shift != self._shift:
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

    def _estimate(self, key: int) -> float:
        low = _double(key << self._shift)
        high = _double((key + 1) << self._shift)  # the next bucket's start, maybe +inf
        if high == math.inf:
            return low
        return low * (2.0 / (1.0 + low / high))  # 2lh / (l + h), without overflowing

    def value_at_rank(self, rank: int) -> float:
        """An estimate of the ``rank``-th smallest value (0-based), within the relative
        accuracy of it."""
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
                # The exact value lies within [min, max]: clamping only brings us closer.
                return min(max(self._estimate(key), self.min), self.max)
        raise AssertionError("unreachable: counts add up to count")  # pragma: no cover

    def quantile(self, q: float) -> float:
        """The value at rank ``floor(q * (count - 1))`` (``q`` in [0, 1]); 0.0 when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q!r}")
        if self.count == 0:
            return 0.0
        return self.value_at_rank(math.floor(q * (self.count - 1)))

    def median(self) -> float:
        """The median as :func:`statistics.median` defines it (the mean of the two middle
        values for an even count), each middle value within the relative accuracy; 0.0 when
        empty."""
        n = self.count
        if n == 0:
            return 0.0
        if n % 2:
            return self.value_at_rank(n // 2)
        return (self.value_at_rank(n // 2 - 1) + self.value_at_rank(n // 2)) / 2
