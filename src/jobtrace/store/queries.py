"""The :class:`~jobtrace.store.Store` methods for metrics, experiments and paged job lists:
typed results for readers (the CLI, the REST server), errors from :mod:`jobtrace.errors`.

>>> with Store("sqlite:///.jobtrace/jobtrace.db") as store:          # doctest: +SKIP
...     page = store.metric_history(job_id, "loss", index=0, limit=1000)
...     page.data[0].value, page.total, page.is_complete

Each method runs one query function of :mod:`jobtrace.store.metrics`,
:mod:`jobtrace.store.jobs` or :mod:`jobtrace.store.experiments` on a pooled connection
(creating ones in a transaction). Errors a reader should turn into a response are
:class:`~jobtrace.errors.NotFoundError` (404), :class:`~jobtrace.errors.ConflictError`
(409), :class:`~jobtrace.errors.SearchError` (422) and other
:class:`~jobtrace.errors.QueryError` (400); a database failure is a
:class:`~jobtrace.errors.StoreError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from jobtrace.store import experiments as experiment_queries
from jobtrace.store import jobs as job_queries
from jobtrace.store import metrics as metric_queries
from jobtrace.store import traces as trace_queries
from jobtrace.store.experiments import Experiment
from jobtrace.store.metrics import JobMetrics, MetricBuckets, MetricPoint, MetricSummary
from jobtrace.store.paging import DEFAULT_PAGE_LENGTH, Page
from jobtrace.store.trace_search import TraceSearch

__all__ = ["StoreQueries"]

R = TypeVar("R")


class StoreQueries:
    """Reader methods of :class:`~jobtrace.store.Store` (a mixin: Store runs the SQL)."""

    def _read(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        raise NotImplementedError

    def _transact(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        raise NotImplementedError

    # -- metrics ---------------------------------------------------------------------------

    def latest_metrics(self, job_id: str) -> list[MetricPoint]:
        """The latest (highest-step) point of each metric of job ``job_id``, by name."""
        return self._read(metric_queries.latest_metrics, job_id)

    def metric_history(
        self, job_id: str, name: str, *, index: int = 0, limit: int | None = DEFAULT_PAGE_LENGTH
    ) -> Page[MetricPoint]:
        """Points of metric ``name`` ascending by step: ``limit`` (None: all) from element
        ``index``, with the total count."""
        return self._read(metric_queries.metric_history, job_id, name, index=index, limit=limit)

    def metric_series(self, job_id: str, name: str, *, max_points: int) -> list[MetricPoint]:
        """At most ``max_points`` points of a metric for a chart, keeping the first, the
        last and each bucket's extremes."""
        return self._read(metric_queries.metric_series, job_id, name, max_points=max_points)

    def metric_buckets(
        self,
        job_ids: Sequence[str],
        name: str,
        *,
        buckets: int,
        start: int | None = None,
        end: int | None = None,
    ) -> MetricBuckets:
        """Metric ``name`` of several runs reduced alike for a chart ``buckets`` pixels
        wide: each bucket's extremes survive (:func:`~jobtrace.store.metrics.metric_buckets`)."""
        return self._read(
            metric_queries.metric_buckets, job_ids, name, buckets=buckets, start=start, end=end
        )

    def metric_extremes(self, job_ids: Sequence[str]) -> dict[str, dict[str, tuple[float, float]]]:
        """Job id → metric name → (min, max) over its whole history."""
        return self._read(metric_queries.metric_extremes_of_jobs, job_ids)

    def metric_summary(self, job_id: str, name: str) -> MetricSummary:
        """Count, step range, min/max and NaN/Inf counts of a metric's history."""
        return self._read(metric_queries.metric_summary, job_id, name)

    def metric_summaries(self, job_id: str) -> list[MetricSummary]:
        """The summary of each metric of job ``job_id``, by name: latest point, min and max
        with the first step holding each, count and NaN/Inf counts."""
        return self._read(metric_queries.metric_summaries, job_id)

    def find_job_metrics(
        self,
        *,
        experiment: str | None = None,
        status: str | None = None,
        search: str | None = None,
        sort_by: str | None = None,
        descending: bool | None = None,
        index: int = 0,
        limit: int | None = DEFAULT_PAGE_LENGTH,
        now: float | None = None,
    ) -> Page[JobMetrics]:
        """The jobs :meth:`find_jobs` finds (same arguments), each with its latest metrics:
        the rows of a runs table (``jobtrace jobs list --columns``, ``search_runs``)."""
        return self._read(
            metric_queries.find_job_metrics,
            experiment=experiment,
            status=status,
            search=search,
            sort_by=sort_by,
            descending=descending,
            index=index,
            limit=limit,
            now=now,
        )

    def experiment_metrics(
        self,
        experiment: str,
        *,
        search: str | None = None,
        sort_by: str | None = None,
        descending: bool | None = None,
        index: int = 0,
        limit: int | None = DEFAULT_PAGE_LENGTH,
        now: float | None = None,
    ) -> Page[JobMetrics]:
        """The latest metrics of each job of ``experiment``, paged over jobs; ``sort_by`` a
        job field, ``metric.NAME`` or a bare metric name."""
        return self._read(
            metric_queries.experiment_metrics,
            experiment,
            search=search,
            sort_by=sort_by,
            descending=descending,
            index=index,
            limit=limit,
            now=now,
        )

    # -- jobs ------------------------------------------------------------------------------

    def jobs_with_metrics(
        self,
        names: Sequence[str],
        *,
        experiment: str | None = None,
        status: str | None = None,
        search: str | None = None,
        sort_by: str | None = None,
        descending: bool | None = None,
        index: int = 0,
        limit: int | None = DEFAULT_PAGE_LENGTH,
        now: float | None = None,
    ) -> tuple[Page[JobMetrics], list[str]]:
        """A page of jobs as :meth:`find_jobs` finds them, each with its latest point of the
        metrics ``names``, and every metric name the page's jobs have."""
        return self._read(
            metric_queries.jobs_with_metrics,
            names,
            experiment=experiment,
            status=status,
            search=search,
            sort_by=sort_by,
            descending=descending,
            index=index,
            limit=limit,
            now=now,
        )

    def job_by_id(self, job_id: str, *, now: float | None = None) -> dict[str, Any]:
        """The job with exactly this id (unlike ``get_job``, no prefixes); raises
        JobNotFoundError."""
        return self._read(job_queries.job_by_id, job_id, now=now)

    def find_jobs(
        self,
        *,
        experiment: str | None = None,
        status: str | None = None,
        search: str | None = None,
        sort_by: str | None = None,
        descending: bool | None = None,
        index: int = 0,
        limit: int | None = DEFAULT_PAGE_LENGTH,
        now: float | None = None,
    ) -> Page[dict[str, Any]]:
        """Jobs matching ``search`` (and ``experiment``, ``status`` if given), sorted by a
        job field, ``metric.NAME``, ``param.NAME`` or ``tag.NAME`` (default: newest first),
        paged."""
        return self._read(
            job_queries.find_jobs,
            experiment=experiment,
            status=status,
            search=search,
            sort_by=sort_by,
            descending=descending,
            index=index,
            limit=limit,
            now=now,
        )

    def create_job(
        self,
        *,
        job_id: str | None = None,
        name: str | None = None,
        experiment: str | None = None,
        status: str = "running",
        start_time: float | None = None,
        end_time: float | None = None,
        host: str | None = None,
        heartbeat_interval: float | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a job record (id generated unless given); ConflictError if it exists."""
        return self._transact(
            job_queries.create_job,
            job_id=job_id,
            name=name,
            experiment=experiment,
            status=status,
            start_time=start_time,
            end_time=end_time,
            host=host,
            heartbeat_interval=heartbeat_interval,
            tags=tags,
            params=params,
        )

    # -- traces ----------------------------------------------------------------------------

    def find_traces(
        self,
        *,
        job_id: str | None = None,
        search: TraceSearch | None = None,
        index: int = 0,
        limit: int | None = DEFAULT_PAGE_LENGTH,
    ) -> Page[dict[str, Any]]:
        """Trace summaries (of job ``job_id``, matching ``search``, if given), newest
        first, paged; see :func:`jobtrace.store.traces.list_traces`."""
        return self._read(
            trace_queries.find_traces, job_id=job_id, search=search, index=index, limit=limit
        )

    # -- experiments -----------------------------------------------------------------------

    def create_experiment(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> Experiment:
        """Create an experiment; ConflictError if the name is taken."""
        return self._transact(
            experiment_queries.create_experiment, name, description=description, tags=tags
        )

    def get_experiment(self, name: str) -> Experiment:
        """One experiment with its job count; ExperimentNotFoundError if unknown."""
        return self._read(experiment_queries.get_experiment, name)

    def find_experiments(
        self,
        *,
        search: str | None = None,
        sort_by: str | None = None,
        descending: bool | None = None,
        index: int = 0,
        limit: int | None = DEFAULT_PAGE_LENGTH,
    ) -> Page[Experiment]:
        """Experiments matching ``search`` with their job counts, sorted by ``name``,
        ``created_at`` or ``job_count`` (default: newest first), paged."""
        return self._read(
            experiment_queries.find_experiments,
            search=search,
            sort_by=sort_by,
            descending=descending,
            index=index,
            limit=limit,
        )
