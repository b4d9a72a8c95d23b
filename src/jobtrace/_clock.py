"""Clocks in one place, so tests and readers agree on units.

Epoch times are float seconds (`wall()`) or integer nanoseconds (`wall_ns()`); durations
come from the monotonic clock, which never jumps when NTP adjusts the wall clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

wall = time.time
wall_ns = time.time_ns
monotonic = time.perf_counter
monotonic_ns = time.perf_counter_ns


def iso(epoch_seconds: float | None) -> str | None:
    """Render epoch seconds as ISO-8601 with an explicit UTC offset (``None`` stays ``None``).

    A time no ISO-8601 form can say (outside years 1 to 9999, NaN) is ``None`` too: new
    records are range-checked (:mod:`jobtrace.limits`), but a store written by an older
    version may hold one, and it must not break every read of its job."""
    if epoch_seconds is None:
        return None
    try:
        return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return None
