"""The Services page's data: the merged instrument series (what ``/metrics`` serves) as
Phanos-style profiles — per metric and context (label set), count, mean and p95 — and the
plain counters and gauges beside them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ServiceTables", "bucket_quantile", "service_tables"]

_BUCKET_LABELS = frozenset({"le", "quantile"})


@dataclass(frozen=True, slots=True)
class ServiceTables:
    """``profiles``: one row per histogram/summary series; ``values``: one per other sample."""

    profiles: list[dict[str, Any]]
    values: list[dict[str, Any]]


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0..1) of a histogram from its cumulative ``(upper bound, count)``
    buckets, interpolating linearly inside the bucket it falls in (as Prometheus's
    ``histogram_quantile``); None when empty. In the +Inf bucket: its lower bound."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound  # pragma: no cover - the last bucket holds every observation


def _context(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in _BUCKET_LABELS)


def service_tables(families: Iterable[Any]) -> ServiceTables:
    """Tables from prometheus_client metric families (``name``, ``type``, ``documentation``,
    ``samples`` of ``(name, labels, value)``)."""
    profiles: list[dict[str, Any]] = []
    values: list[dict[str, Any]] = []
    for family in families:
        if family.type not in {"histogram", "summary"}:
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue  # when a counter started: noise in a table of values
                values.append(
                    {
                        "name": sample.name,
                        "type": family.type,
                        "context": _context(sample.labels),
                        "value": sample.value,
                        "help": family.documentation,
                    }
                )
            continue
        groups: dict[str, dict[str, Any]] = {}
        for sample in family.samples:
            context = _context(sample.labels)
            group = groups.setdefault(context, {"count": 0.0, "sum": 0.0, "buckets": []})
            if sample.name.endswith("_bucket") and "le" in sample.labels:
                group["buckets"].append((float(sample.labels["le"]), float(sample.value)))
            elif sample.name.endswith("_count"):
                group["count"] = float(sample.value)
            elif sample.name.endswith("_sum"):
                group["sum"] = float(sample.value)
            elif "quantile" in sample.labels and sample.labels["quantile"] == "0.95":
                group["p95"] = float(sample.value)
        for context, group in sorted(groups.items()):
            count = group["count"]
            p95 = group.get("p95")
            if p95 is None and group["buckets"]:
                p95 = bucket_quantile(0.95, group["buckets"])
            profiles.append(
                {
                    "name": family.name,
                    "type": family.type,
                    "context": context,
                    "count": count,
                    "mean": group["sum"] / count if count else None,
                    "p95": p95,
                    "help": family.documentation,
                }
            )
    return ServiceTables(profiles, values)
