"""What ``GET /metrics`` serves, and the background fold that keeps it cheap.

A scrape reads the store once and writes, with prometheus_client's exposition code:

- the **instrument series of every process** that reported to the store, merged by
  :func:`jobtrace.instruments.merge.merge_series` (counters, summaries and histogram
  buckets add; gauges by their declared mode; ``live-sum`` over live sources only);
- **what the store knows**, bounded by windows and caps (:class:`RollupLimits`, see
  :mod:`jobtrace.store.rollups`), under names starting ``jobtrace_``:

  ============================================  ==========================================
  ``jobtrace_jobs`` (gauge)                     jobs started in the job window, by
                                                ``job_name``, ``experiment``, ``status``
                                                (``lost`` worked out from heartbeats)
  ``jobtrace_job_duration_seconds``             their durations (finished jobs), same
  (gauge histogram)                             labels
  ``jobtrace_job_peak_memory_bytes`` (gauge)    peak memory of each group's latest job
  ``jobtrace_job_metric`` (gauge)               latest value of each metric of running
                                                jobs and of jobs ended in the metric
                                                window, by ``job_id``, ``job_name``,
                                                ``experiment``, ``metric``
  ``jobtrace_job_metric_step`` (gauge)          the step of that value
  ``jobtrace_span_duration_seconds``            span durations of traces begun in the span
  (gauge histogram)                             window, by ``span`` (the span's name)
  ``jobtrace_scrape_truncated`` (gauge)         1 when a cap left something out, by
                                                ``part`` (``jobs``, ``metrics``, ``spans``,
                                                ``series``)
  ``jobtrace_series_overflow`` (gauge)          instrument series left out by the caps
                                                per metric name and per source
                                                (:mod:`jobtrace.limits`)
  ============================================  ==========================================

  Windowed counts go up and down as jobs and spans enter and leave the window, so they are
  gauges and *gauge histograms* (OpenMetrics's type for "the distribution now"): query
  buckets directly, e.g. ``histogram_quantile(0.9, sum by (le) (…_bucket))``, without
  ``rate()``. In the classic text format a gauge histogram is written as a histogram
  whose ``_gcount``/``_gsum`` are gauges. Labels are not ``job``: Prometheus sets that one
  on every scraped series itself. Job ids appear only on the latest metric values, whose
  jobs are few by construction (running, or recently ended, capped).

The OpenMetrics format is written when the ``Accept`` header prefers
``application/openmetrics-text``; anything else, garbage included, gets the classic text
format (never an error).

Scrape cost stays that of the live series however many workers came and went: each
server process runs :class:`SourceRetirer`, which every ``retire_interval`` seconds (with
jitter) asks the store, by one cheap indexed read, whether a source finished or went
silent, and only then folds (:func:`jobtrace.store.series.retire_sources`, under the
store's write lock, so workers that ask at the same moment fold once between them).

A single service can instead expose its own instruments in-process with
:class:`jobtrace.instruments.InstrumentCollector` registered in prometheus_client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from jobtrace.instruments.merge import DEFAULT_LIVE_WINDOW, MergedSeries, merge_series
from jobtrace.instruments.registry import SOURCE_SERIES, SeriesRow
from jobtrace.limits import MAX_SERIES_PER_NAME, MAX_SERIES_PER_SOURCE
from jobtrace.store import rollups
from jobtrace.store.core import describe_error
from jobtrace.store.rollups import RollupLimits
from jobtrace.store.series import (
    DEFAULT_FORGET_AFTER,
    DEFAULT_RETIRE_AFTER,
    retire_sources,
    retirement_due,
    series_overflow,
    series_rows,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric as PromMetric

    from jobtrace.store.core import Store

__all__ = [
    "OPENMETRICS_TYPE",
    "STORE_FAMILIES",
    "TEXT_TYPE",
    "ScrapeSettings",
    "SourceRetirer",
    "render_scrape",
    "scrape_families",
    "wants_openmetrics",
]

log = logging.getLogger("jobtrace.server")

TEXT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"

#: Names of the store-derived families; an instrument of the same name is left out.
STORE_FAMILIES: Final = frozenset(
    {
        "jobtrace_jobs",
        "jobtrace_job_duration_seconds",
        "jobtrace_job_peak_memory_bytes",
        "jobtrace_job_metric",
        "jobtrace_job_metric_step",
        "jobtrace_span_duration_seconds",
        "jobtrace_scrape_truncated",
        "jobtrace_series_overflow",
    }
)
_JOB_LABELS: Final = ["job_name", "experiment", "status"]
_METRIC_LABELS: Final = ["job_id", "job_name", "experiment", "metric"]


@dataclass(frozen=True)
class ScrapeSettings:
    """How ``/metrics`` merges, what it adds from the store, and how often dead sources
    are folded (``retire_interval=0`` turns the background fold off)."""

    live_window: float = DEFAULT_LIVE_WINDOW
    retire_interval: float = 30.0
    retire_after: float = DEFAULT_RETIRE_AFTER
    forget_after: float = DEFAULT_FORGET_AFTER
    store_metrics: bool = True
    limits: RollupLimits = field(default_factory=RollupLimits)


# -- content negotiation ---------------------------------------------------------------------


def _quality(params: list[str]) -> float:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def wants_openmetrics(accept: str | None) -> bool:
    """Whether an ``Accept`` header prefers OpenMetrics to the classic text format (ties go
    to OpenMetrics, as a Prometheus server that lists both asks for it first)."""
    if not accept:
        return False
    best_om, best_text = 0.0, 0.0
    for part in accept[:4096].split(","):
        media, *params = part.split(";")
        kind = media.strip().lower()
        q = _quality(params)
        if kind == "application/openmetrics-text":
            best_om = max(best_om, q)
        elif kind in ("text/plain", "text/*", "*/*"):
            best_text = max(best_text, q)
    return best_om > 0.0 and best_om >= best_text


# -- families ---------------------------------------------------------------------------------


def _go(bound: float) -> str:
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


def _buckets(bounds: tuple[float, ...], cumulative: tuple[int, ...]) -> list[tuple[str, float]]:
    texts = [_go(b) for b in bounds] + ["+Inf"]
    return [(t, float(c)) for t, c in zip(texts, cumulative, strict=True)]


def _job_families(groups: rollups.Rollup) -> list[PromMetric]:
    from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily

    count = GaugeMetricFamily(
        "jobtrace_jobs", "Jobs started within the job window, by status", labels=_JOB_LABELS
    )
    durations = GaugeHistogramMetricFamily(
        "jobtrace_job_duration_seconds",
        "Durations of finished jobs started within the job window (seconds)",
        labels=_JOB_LABELS,
    )
    peaks = GaugeMetricFamily(
        "jobtrace_job_peak_memory_bytes",
        "Peak memory of the most recently ended job of each group (bytes)",
        labels=_JOB_LABELS,
    )
    for group in groups.rows:
        values = [group.name, group.experiment, group.status]
        count.add_metric(values, group.jobs)
        if group.finished:
            buckets = _buckets(rollups.JOB_BUCKETS, group.cumulative)
            durations.add_metric(values, buckets, group.duration_sum)
        if group.last_peak_memory_bytes is not None:
            peaks.add_metric(values, group.last_peak_memory_bytes)
    return [count, durations, peaks]


def _metric_families(latest: rollups.Rollup) -> list[PromMetric]:
    from prometheus_client.core import GaugeMetricFamily

    values = GaugeMetricFamily(
        "jobtrace_job_metric",
        "Latest value of each metric of running and recently ended jobs",
        labels=_METRIC_LABELS,
    )
    steps = GaugeMetricFamily(
        "jobtrace_job_metric_step", "Step of that latest value", labels=_METRIC_LABELS
    )
    for point in latest.rows:
        labels = [point.job_id, point.job_name, point.experiment, point.name]
        values.add_metric(labels, point.value)
        steps.add_metric(labels, point.step)
    return [values, steps]


def _span_families(groups: rollups.Rollup) -> list[PromMetric]:
    from prometheus_client.core import GaugeHistogramMetricFamily

    durations = GaugeHistogramMetricFamily(
        "jobtrace_span_duration_seconds",
        "Durations of the spans of traces begun within the span window (seconds)",
        labels=["span"],
    )
    for group in groups.rows:
        buckets = _buckets(rollups.SPAN_BUCKETS, group.cumulative)
        durations.add_metric([group.name], buckets, group.duration_sum)
    return [durations]


def _merged(
    conn: sa.Connection, *, now: float, live_window: float
) -> tuple[list[MergedSeries], int]:
    """Every source's rows merged, within the series caps, and how many rows the caps left
    out; should a malformed row break the merge, each name is merged on its own and the
    names that fail are left out (and logged)."""
    rows = series_rows(conn, for_merge=True, capped=True)
    overflow = series_overflow(conn, len(rows))
    if overflow:
        log.warning(
            "jobtrace /metrics: %d instrument series left out (over %d per name or %d per source)",
            overflow,
            MAX_SERIES_PER_NAME,
            MAX_SERIES_PER_SOURCE,
        )
    return _merge(rows, now=now, live_window=live_window), overflow


def _merge(rows: list[SeriesRow], *, now: float, live_window: float) -> list[MergedSeries]:
    try:
        return merge_series(rows, now=now, live_window=live_window)
    except Exception:
        pass
    by_name: dict[str, list[SeriesRow]] = {}
    beats = []
    for row in rows:
        if row.name == SOURCE_SERIES:
            beats.append(row)
        else:
            by_name.setdefault(row.name, []).append(row)
    merged: list[MergedSeries] = []
    for name, named in sorted(by_name.items()):
        try:
            merged += merge_series(named + beats, now=now, live_window=live_window)
        except Exception as exc:
            log.warning(
                "jobtrace /metrics: series %r left out, its rows do not merge: %s", name, exc
            )
    return merged


def _families(merged: list[MergedSeries]) -> list[PromMetric]:
    """prometheus_client families of the merged series, leaving out (and logging) a name
    whose stored data does not fit its type."""
    from jobtrace.instruments.exposition import families

    try:
        return families(merged)
    except Exception:
        pass
    by_name: dict[str, list[MergedSeries]] = {}
    for series in merged:
        by_name.setdefault(series.name, []).append(series)
    out = []
    for name, named in by_name.items():
        try:
            out += families(named)
        except Exception as exc:
            log.warning("jobtrace /metrics: series %r left out (malformed data): %s", name, exc)
    return out


def scrape_families(
    conn: sa.Connection, *, now: float, settings: ScrapeSettings
) -> list[PromMetric]:
    """Every family one scrape serves: merged instrument series, then the store's own."""
    from prometheus_client.core import GaugeMetricFamily

    merged, overflow = _merged(conn, now=now, live_window=settings.live_window)
    out = [f for f in _families(merged) if f.name not in STORE_FAMILIES]
    if not settings.store_metrics:
        return out
    limits = settings.limits
    jobs = rollups.job_groups(conn, now=now, limits=limits)
    latest = rollups.latest_metrics(conn, now=now, limits=limits)
    spans = rollups.span_groups(conn, now=now, limits=limits)
    truncated = GaugeMetricFamily(
        "jobtrace_scrape_truncated",
        "1 when a cap of the store-derived families left series out",
        labels=["part"],
    )
    for part, rollup in (("jobs", jobs), ("metrics", latest), ("spans", spans)):
        truncated.add_metric([part], 1.0 if rollup.truncated else 0.0)
    truncated.add_metric(["series"], 1.0 if overflow else 0.0)
    left_out = GaugeMetricFamily(
        "jobtrace_series_overflow",
        "Instrument series stored but left out of this scrape by the caps per metric name "
        "and per source (jobtrace.limits)",
        value=float(overflow),
    )
    return [
        *out,
        *_job_families(jobs),
        *_metric_families(latest),
        *_span_families(spans),
        truncated,
        left_out,
    ]


def _render(items: list[PromMetric], openmetrics: bool) -> bytes:
    """Render, leaving out (and logging) a family that prometheus_client refuses — rows of
    any shape can reach the store over HTTP, and one must not take the scrape down."""
    from jobtrace.instruments.exposition import render_families

    try:
        return render_families(items, openmetrics=openmetrics)
    except Exception:
        pass
    good = []
    for family in items:
        try:
            render_families([family], openmetrics=False)
        except Exception as exc:
            log.warning("jobtrace /metrics: family %r left out: %s", family.name, exc)
            continue
        good.append(family)
    return render_families(good, openmetrics=openmetrics)


def render_scrape(
    store: Store,
    *,
    accept: str | None = None,
    settings: ScrapeSettings | None = None,
    now: float | None = None,
) -> tuple[bytes, str]:
    """One scrape of ``store``: (body, content type) for an ``Accept`` header."""
    settings = settings or ScrapeSettings()
    now = time.time() if now is None else now
    items: list[PromMetric] = store._read(
        lambda conn: scrape_families(conn, now=now, settings=settings)
    )
    openmetrics = wants_openmetrics(accept)
    return _render(items, openmetrics), OPENMETRICS_TYPE if openmetrics else TEXT_TYPE


# -- the background fold ----------------------------------------------------------------------


class SourceRetirer:
    """Folds dead sources away in the background of one server process.

    Every ``interval`` seconds, jittered between half and one and a half times it so that a
    server's workers drift apart, one indexed read of the heartbeat rows says whether there
    is anything to fold; only then is :func:`retire_sources` run, in a thread. A failure is
    logged once (until a turn succeeds again) and retried at the next turn; it never stops
    the server.
    """

    def __init__(
        self,
        store: Store,
        settings: ScrapeSettings,
        *,
        clock: Any = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self.folds = 0
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    def run_once(self) -> bool:
        """Fold now if anything is due; whether a fold ran."""
        s = self.settings
        now = self.clock()
        with self.store.engine.connect() as conn:
            due = retirement_due(
                conn, now=now, retire_after=s.retire_after, forget_after=s.forget_after
            )
        if not due:
            return False
        result = retire_sources(
            self.store.engine, now=now, retire_after=s.retire_after, forget_after=s.forget_after
        )
        self.folds += 1
        if result.sources:
            log.info(
                "jobtrace: folded %d dead source(s) into %d retained series",
                len(result.sources),
                result.retired_rows,
            )
        return True

    async def _loop(self) -> None:
        interval = self.settings.retire_interval
        while True:
            await asyncio.sleep(interval * self.rng.uniform(0.5, 1.5))
            await self.turn()

    async def turn(self) -> None:
        """One turn of the loop: :meth:`run_once` in a thread, never raising.

        A failure is logged in one line when a run of failures starts (a database that is
        down fails every turn), with the traceback only at debug level, and once more when
        a turn succeeds again.
        """
        try:
            await asyncio.to_thread(self.run_once)
        except Exception as exc:
            if not self._failing:
                log.warning(
                    "jobtrace: folding dead sources failed (%s); retrying every turn",
                    describe_error(exc),
                )
            log.debug("jobtrace: folding dead sources failed", exc_info=True)
            self._failing = True
        else:
            if self._failing:
                log.warning("jobtrace: folding dead sources works again")
            self._failing = False

    def start(self) -> None:
        """Start the loop on the running event loop (nothing if the interval is 0)."""
        if self.settings.retire_interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
