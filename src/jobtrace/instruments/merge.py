"""Merging instrument series from many processes into one: pure functions over rows.

Every process (a *source*) reports its own state of each series (see
:mod:`jobtrace.instruments.registry`); a reader — a store query, the server's ``/metrics``,
the in-process Collector — merges the rows of all sources with :func:`merge_series`:

- counters, summaries (count and sum) and histogram buckets add;
- gauges combine by their declared mode: ``sum``, ``max``, ``min``, ``last`` (the newest
  row), ``live-sum`` (the sum over sources seen within ``live_window`` seconds that have not
  said they finished);
- info and enum: the newest row wins.

The result depends on the set of rows only, never on their order: sums use ``math.fsum``
(exactly rounded), ties between equally new rows go to the greater source id, and rows of
one name that disagree on type (or a gauge on its mode) resolve to the newest kind.
Histograms whose buckets differ between sources (a deploy changed them) merge onto the
union of the bounds, each source contributing its cumulative count at its own largest bound
not above each bound: exact at every bound they share, never overstated, exact at +Inf.

Dead sources. A worker that restarts is a new source, so without care rows pile up and
every scrape gets slower. :func:`fold_sources` folds the rows of sources that finished (their
heartbeat said ``final``) or fell silent for ``retire_after`` seconds into one retained row
per series under the source :data:`RETIRED_SOURCE` — counters, histograms, summaries and
``sum``/``max``/``min``/``last`` gauges merge into it, ``live-sum`` gauges of dead sources
already count for nothing and are dropped — and leaves one small *tombstone* row per dead
source. ``merge_series(rows)`` is the same before and after a fold (that is tested). The
tombstone makes the merge ignore rows a late spool replay brings back for that source
(their ``updated_at`` is not newer than the tombstone's), and the next fold deletes them.
Rows of a retired source that *are* newer than its tombstone (it was only silent: its sink
was unreachable for longer than ``retire_after``, and its spool replayed later) carry
totals that already include what was folded. The tombstone therefore keeps, in its
``data["folded"]``, what the source contributed to each adding series (counters,
summaries, histograms, ``sum`` gauges), and such rows count only past that.
:func:`jobtrace.store.series.retire_sources` runs a fold inside the store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple

from jobtrace import model
from jobtrace.instruments.registry import SOURCE_SERIES, SOURCE_TYPE, SeriesRow

__all__ = [
    "DEFAULT_LIVE_WINDOW",
    "RETIRED_SOURCE",
    "TOMBSTONE_LABELS",
    "TOMBSTONE_TYPE",
    "MergedSeries",
    "dead_sources",
    "fold_sources",
    "merge_series",
]

#: Seconds within which a source must have been seen for its ``live-sum`` gauges to count.
DEFAULT_LIVE_WINDOW: Final = 60.0
#: The source that holds what dead sources contributed.
RETIRED_SOURCE: Final = "retired"
#: A dead source's tombstone: the heartbeat series under these labels and this type.
TOMBSTONE_TYPE: Final = "retired"
TOMBSTONE_LABELS: Final = '{"state":"retired"}'

_ADDING: Final = frozenset({"counter", "summary", "histogram"})
#: The tombstone's record of what its source contributed to the retired source.
FOLDED_KEY: Final = "folded"
_NEWEST_WINS: Final = frozenset({"info", "enum"})


class MergedSeries(NamedTuple):
    """One series merged over every source."""

    name: str
    type: str
    mode: str | None
    labels: str
    value: float | None
    data: Any
    updated_at: float
    sources: int


def _fsum(values: Iterable[float | None]) -> float:
    present = [v for v in values if v is not None]
    return math.fsum(present) if present else 0.0


def _extreme(values: list[float | None], pick: Any) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if any(math.isnan(v) for v in present):
        return math.nan  # max/min with NaN depend on argument order: make NaN win always
    value: float = pick(present)
    return value


def _newest(rows: Sequence[SeriesRow]) -> SeriesRow:
    return max(rows, key=lambda r: (r.updated_at, r.source))


def _help(rows: Sequence[SeriesRow]) -> dict[str, Any]:
    text = _newest(rows).data
    if isinstance(text, dict) and "help" in text:
        return {"help": text["help"]}
    return {}


def _created(rows: Sequence[SeriesRow]) -> dict[str, Any]:
    found = [r.data["created"] for r in rows if isinstance(r.data, dict) and "created" in r.data]
    return {"created": min(found)} if found else {}


def _same_buckets(rows: Sequence[SeriesRow]) -> dict[str, Any] | None:
    """The common case, fast: every source has the same bounds, so counts add bucket by
    bucket. ``None`` when they differ (or a row is malformed): the general merge decides."""
    first = rows[0].data
    bounds = first.get("le") if isinstance(first, dict) else None
    if not isinstance(bounds, list):
        return None
    width = len(bounds)
    totals = [0] * width
    try:
        for row in rows:
            data = row.data
            cum = data.get("cum") if isinstance(data, dict) else None
            if not isinstance(cum, list) or data.get("le") != bounds or len(cum) != width:
                return None
            totals = [t + int(c) for t, c in zip(totals, cum, strict=True)]
        ordered = [model.decode_float(b) for b in bounds]
    except (model.RecordError, TypeError, ValueError):
        return None
    if ordered != sorted(set(ordered)):
        return None  # unsorted or repeated bounds: let the general merge normalise them
    return {"le": [model.encode_float(b) for b in ordered], "cum": totals}


def _histogram(rows: Sequence[SeriesRow]) -> dict[str, Any]:
    """Cumulative bucket counts on the union of every source's bounds (see module doc)."""
    same = _same_buckets(rows)
    if same is not None:
        return same
    per_source: list[tuple[list[float], list[int]]] = []
    union: set[float] = set()
    for row in rows:
        data = row.data if isinstance(row.data, dict) else {}
        try:
            bounds = [model.decode_float(b) for b in data.get("le", ())]
            cum = [int(c) for c in data.get("cum", ())]
        except (model.RecordError, TypeError, ValueError):
            continue  # a malformed row (any shape can arrive over HTTP): skipped
        if len(bounds) != len(cum):
            continue  # a malformed row: skipped rather than failing the whole scrape
        per_source.append((bounds, cum))
        union.update(bounds)
    merged_bounds = sorted(union)
    totals = [0] * len(merged_bounds)
    for bounds, cum in per_source:
        j, running = 0, 0
        for i, bound in enumerate(merged_bounds):
            while j < len(bounds) and bounds[j] <= bound:
                running = cum[j]
                j += 1
            totals[i] += running
    return {"le": [model.encode_float(b) for b in merged_bounds], "cum": totals}


def _combine(
    name: str, kind: str, mode: str | None, labels: str, rows: list[SeriesRow]
) -> MergedSeries:
    updated_at = max(r.updated_at for r in rows)
    value: float | None
    data: dict[str, Any] = _help(rows)
    if kind in _ADDING:
        value = _fsum(r.value for r in rows)
        data.update(_created(rows))
        if kind == "summary":
            counts = [r.data.get("count", 0) for r in rows if isinstance(r.data, dict)]
            data["count"] = sum(int(c) for c in counts)
        elif kind == "histogram":
            data.update(_histogram(rows))
    elif kind in _NEWEST_WINS:
        newest = _newest(rows)
        value = newest.value
        data = dict(newest.data) if isinstance(newest.data, dict) else {}
    elif mode in ("sum", "live-sum", None):
        value = _fsum(r.value for r in rows)
    elif mode == "max":
        value = _extreme([r.value for r in rows], max)
    elif mode == "min":
        value = _extreme([r.value for r in rows], min)
    else:  # "last"
        value = _newest(rows).value
    sources = len({r.source for r in rows})
    return MergedSeries(name, kind, mode, labels, value, data, updated_at, sources)


def _as_rows(rows: Iterable[Sequence[Any]]) -> list[SeriesRow]:
    return [r if isinstance(r, SeriesRow) else SeriesRow(*r) for r in rows]


def _is_additive(row: SeriesRow) -> bool:
    """Whether the retired source holds this row's value in a sum (so a newer row of the
    same source must not count again what was folded)."""
    return row.type in _ADDING or (row.type == "gauge" and row.mode in ("sum", None))


def _series_key(row: SeriesRow) -> str:
    # Names have no spaces (see metrics._NAME), so the first space ends the name.
    return f"{row.name} {row.labels}"


def _contribution(row: SeriesRow) -> dict[str, Any]:
    out: dict[str, Any] = {"type": row.type, "value": row.value}
    data = row.data if isinstance(row.data, dict) else {}
    if row.type == "summary":
        out["count"] = data.get("count", 0)
    elif row.type == "histogram":
        out["le"], out["cum"] = data.get("le", []), data.get("cum", [])
    return out


def _folded_of(rows: Sequence[SeriesRow]) -> dict[str, dict[str, Any]]:
    """What each retired source contributed, per series (from its newest tombstone)."""
    newest: dict[str, SeriesRow] = {}
    for row in rows:
        if row.name == SOURCE_SERIES and row.type == TOMBSTONE_TYPE:
            seen = newest.get(row.source)
            if seen is None or row.updated_at > seen.updated_at:
                newest[row.source] = row
    out = {}
    for source, row in newest.items():
        folded = row.data.get(FOLDED_KEY) if isinstance(row.data, dict) else None
        out[source] = folded if isinstance(folded, dict) else {}
    return out


def _past(row: SeriesRow, base: Any) -> SeriesRow:
    """``row`` less what its source already contributed to the retired source."""
    if not isinstance(base, dict) or base.get("type") != row.type:
        return row
    value = row.value
    if value is not None and isinstance(base.get("value"), int | float):
        value = value - base["value"]
    data = row.data
    if row.type == "summary" and isinstance(data, dict):
        data = {**data, "count": int(data.get("count", 0)) - int(base.get("count", 0))}
    elif row.type == "histogram" and isinstance(data, dict):
        cum, old = data.get("cum", []), base.get("cum", [])
        if data.get("le") == base.get("le") and len(cum) == len(old):
            data = {**data, "cum": [int(a) - int(b) for a, b in zip(cum, old, strict=True)]}
    return row._replace(value=value, data=data)


def _liveness(rows: Sequence[SeriesRow]) -> tuple[dict[str, float], set[str], dict[str, float]]:
    """(last seen per source, sources that said they finished, tombstone time per source)."""
    last_seen: dict[str, float] = {}
    finished: set[str] = set()
    tombstones: dict[str, float] = {}
    for row in rows:
        seen = last_seen.get(row.source)
        if seen is None or row.updated_at > seen:
            last_seen[row.source] = row.updated_at
        if row.name == SOURCE_SERIES:
            if row.type == TOMBSTONE_TYPE:
                tombstones[row.source] = max(row.updated_at, tombstones.get(row.source, -math.inf))
            elif isinstance(row.data, dict) and row.data.get("final"):
                finished.add(row.source)
    return last_seen, finished, tombstones


def _kind_order(item: tuple[tuple[str, str | None], list[SeriesRow]]) -> tuple[float, str, str]:
    (kind, mode), rows = item
    return max(r.updated_at for r in rows), kind, mode or ""


def merge_series(
    rows: Iterable[Sequence[Any]],
    *,
    now: float,
    live_window: float = DEFAULT_LIVE_WINDOW,
) -> list[MergedSeries]:
    """Merge series rows ``(source, name, type, mode, labels, value, data, updated_at)`` of
    any number of sources into one :class:`MergedSeries` per (name, labels), sorted by name
    then labels. ``now`` and ``live_window`` decide which sources count as live for
    ``live-sum`` gauges. Heartbeat and tombstone rows are read, never returned.
    """
    all_rows = _as_rows(rows)
    last_seen, finished, tombstones = _liveness(all_rows)
    folded = _folded_of(all_rows) if tombstones else {}
    live_after = now - live_window
    groups: dict[tuple[str, str], dict[tuple[str, str | None], list[SeriesRow]]] = {}
    for stored in all_rows:
        if stored.name == SOURCE_SERIES:
            continue
        row = stored
        tomb = tombstones.get(row.source)
        if tomb is not None:
            if row.updated_at <= tomb:
                continue  # already folded into the retired source
            if _is_additive(row):  # newer: only what it added since it was folded
                row = _past(row, folded[row.source].get(_series_key(row)))
        if (
            row.type == "gauge"
            and row.mode == "live-sum"
            and (row.source in finished or last_seen[row.source] < live_after)
        ):
            continue
        kinds = groups.setdefault((row.name, row.labels), {})
        kinds.setdefault((row.type, row.mode), []).append(row)
    merged = []
    for (name, labels), kinds in sorted(groups.items()):
        # One name, several kinds (a type changed between deploys): the newest kind wins.
        (kind, mode), chosen = max(kinds.items(), key=_kind_order)
        merged.append(_combine(name, kind, mode, labels, chosen))
    return merged


def dead_sources(rows: Iterable[Sequence[Any]], *, now: float, retire_after: float) -> set[str]:
    """Sources to retire: those that said they finished, or were last seen more than
    ``retire_after`` seconds before ``now``. Never the retired source itself; a source
    already tombstoned is dead again only if it has rows the tombstone does not cover."""
    all_rows = _as_rows(rows)
    last_seen, finished, tombstones = _liveness(all_rows)
    dead = set()
    for source, seen in last_seen.items():
        if source == RETIRED_SOURCE:
            continue
        if source in tombstones:
            if any(r.source == source and r.name != SOURCE_SERIES for r in all_rows):
                dead.add(source)  # stale rows a replay brought back: delete them again
            continue
        if source in finished or seen < now - retire_after:
            dead.add(source)
    return dead


def fold_sources(
    rows: Iterable[Sequence[Any]], dead: set[str], *, now: float
) -> tuple[list[SeriesRow], list[SeriesRow]]:
    """Fold the ``dead`` sources' rows into the retired source.

    ``rows`` must hold every row of the dead sources and of :data:`RETIRED_SOURCE` (other
    rows are ignored). Returns (the retired source's new rows, the tombstones to write);
    the caller replaces the retired source's rows with the first list, deletes every row
    of the dead sources and writes the tombstones.
    """
    all_rows = _as_rows(rows)
    involved = [r for r in all_rows if r.source in dead or r.source == RETIRED_SOURCE]
    last_seen, _, tombstones = _liveness(involved)
    previously = _folded_of(involved)
    # What each dead source will have contributed once this fold is done: its newest full
    # values (the tombstone keeps them, see the module docstring).
    contributed: dict[str, dict[str, Any]] = {s: dict(previously.get(s, {})) for s in dead}
    kept = []
    for row in involved:
        if row.name == SOURCE_SERIES:
            continue
        if row.type == "gauge" and row.mode == "live-sum":
            continue  # a dead source is live nowhere
        tomb = tombstones.get(row.source)
        if tomb is not None and row.updated_at <= tomb:
            continue
        if row.source == RETIRED_SOURCE or not _is_additive(row):
            kept.append(row)
            continue
        key = _series_key(row)
        contributed[row.source][key] = _contribution(row)  # its full total, from now on
        # A source folded before counts only what it added since (None: not folded yet).
        kept.append(_past(row, previously.get(row.source, {}).get(key)))
    # Live-sum is out already; the window only matters for it, so any value will do here.
    folded = [
        SeriesRow(RETIRED_SOURCE, m.name, m.type, m.mode, m.labels, m.value, m.data, m.updated_at)
        for m in merge_series(kept, now=now)
    ]
    tombs = [
        SeriesRow(source, SOURCE_SERIES, TOMBSTONE_TYPE, None, TOMBSTONE_LABELS, None,
                  {FOLDED_KEY: contributed[source]} if contributed[source] else None,
                  max(last_seen.get(source, now), tombstones.get(source, -math.inf)))
        for source in sorted(dead)
    ]  # fmt: skip
    return folded, tombs


# The heartbeat's type, re-exported for readers that filter rows themselves.
HEARTBEAT_TYPE: Final = SOURCE_TYPE
