"""A jobtrace server read as a store: :class:`RemoteStore` has the read methods of
:class:`~jobtrace.store.Store`, with their signatures and result types, answered through
the server's REST API (:class:`~jobtrace.client.Client`, ``JOBTRACE_TOKEN`` sent if set).

>>> from jobtrace.store.reader import open_reader
>>> with open_reader("http://127.0.0.1:8000") as store:             # doctest: +SKIP
...     store.find_jobs(search="metric.loss<0.5").data

The wire forms are read back by :mod:`jobtrace.wire` (the module the server writes them
with), so a job, a metric point, an experiment, a span, an item, a batch summary or a
profile comes back as the store would give it. A server's errors become the store's:
404 a :class:`~jobtrace.errors.NotFoundError` (or ``None``, where the store says so), a
bad search a :class:`~jobtrace.errors.SearchError`, other 4xx a
:class:`~jobtrace.errors.QueryError`, and an unreachable server, a refused token or a
5xx a :class:`~jobtrace.errors.StoreError` whose one line says what to do.

Keyword ``now`` (the time "lost" jobs are judged at) is accepted for the signature's sake;
the server judges at its own time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from jobtrace._config import ENV_TOKEN, mask_url
from jobtrace.client import Client, ClientError, _segment
from jobtrace.errors import (
    ExperimentNotFoundError,
    JobNotFoundError,
    JobtraceError,
    NotFoundError,
    QueryError,
    SearchError,
    StoreError,
)
from jobtrace.store.paging import DEFAULT_PAGE_LENGTH, MAX_PAGE_LENGTH, Page, check_paging
from jobtrace.wire import (
    batch_stats_in,
    experiment_in,
    item_in,
    job_in,
    job_metrics_in,
    metric_summary_in,
    point_in,
    span_in,
)

if TYPE_CHECKING:
    import httpx

    from jobtrace.batch.summary import BatchSummary
    from jobtrace.profiles.folded import JobProfile
    from jobtrace.store.experiments import Experiment
    from jobtrace.store.metrics import JobMetrics, MetricPoint, MetricSummary
    from jobtrace.store.trace_search import TraceSearch

__all__ = ["RemoteStore"]

T = TypeVar("T")

#: What a trace id (or a prefix of one) looks like; anything else names no trace.
_TRACE_ID = re.compile(r"[0-9a-f]{1,32}")


class RemoteStore:
    """The store behind the jobtrace server at ``url`` (``http(s)://host:port``), read
    through its REST API; ``token`` defaults to ``JOBTRACE_TOKEN``."""

    is_sqlite = False

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._client = Client(self.url, token=token, timeout=timeout, transport=transport)

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for messages."""
        return mask_url(self.url)

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # -- the transport ----------------------------------------------------------------------

    def _get(self, path: str, **params: Any) -> Any:
        try:
            return self._client.get(path, **params)
        except ClientError as exc:
            raise self._error(exc) from None

    def _get_or_none(self, path: str, **params: Any) -> Any:
        """Like :meth:`_get`, with ``None`` for a 404 (the store's "no such thing")."""
        try:
            return self._get(path, **params)
        except NotFoundError:
            return None

    def _error(self, exc: ClientError) -> JobtraceError:
        """The store's exception for a failed request, its message one actionable line."""
        status, message = exc.status, exc.message.strip().splitlines()[0] if exc.message else ""
        detail = exc.detail if isinstance(exc.detail, dict) else {}
        if status == 404:
            return NotFoundError(message)
        if exc.kind == "invalid_search" and "reason" in detail and "position" in detail:
            return SearchError(str(detail["reason"]), int(detail["position"]), "")
        if status is not None and 400 <= status < 500 and status not in (401, 403):
            return QueryError(message)
        if status is None:
            text = f"{message} (is `jobtrace serve` running there?)"
        elif status in (401, 403):
            text = f"{self.safe_url} refused the request (HTTP {status}): {message}"
            if status == 401 and ENV_TOKEN not in message:  # the server's message says so
                text += f"; set {ENV_TOKEN} to an API token of that server"
        else:
            text = f"{self.safe_url} answered {status}: {message}"
        return StoreError(text)

    def _paged(
        self,
        path: str,
        decode: Callable[[Any], T],
        index: int,
        limit: int | None,
        **params: Any,
    ) -> Page[T]:
        """``limit`` elements (None: all) from element ``index``, in as many requests as
        the server's longest page needs."""
        check_paging(index, limit)
        data: list[T] = []
        at, total = index, 0
        while True:
            want = MAX_PAGE_LENGTH if limit is None else min(MAX_PAGE_LENGTH, limit - len(data))
            page = self._get(path, index=at, pageLength=want, **params)
            total = int(page["totalNumResults"])
            data.extend(decode(x) for x in page["data"])
            at += len(page["data"])
            if page["isComplete"] or not page["data"] or len(data) == limit:
                return Page(data, index, limit, total)

    def _iter_paged(
        self, path: str, decode: Callable[[Any], T], page_size: int, **params: Any
    ) -> Iterator[T]:
        at, length = 0, max(1, min(page_size, MAX_PAGE_LENGTH))
        while True:
            page = self._get(path, index=at, pageLength=length, **params)
            yield from map(decode, page["data"])
            at += len(page["data"])
            if page["isComplete"] or not page["data"]:
                return

    @staticmethod
    def _path(*parts: str) -> str:
        """An API path of ``parts``, each quoted whole (a metric name may hold "/")."""
        return "/" + "/".join(map(_segment, parts))

    # -- jobs ------------------------------------------------------------------------------

    def list_jobs(
        self,
        *,
        experiment: str | None = None,
        status: str | None = None,
        limit: int | None = 50,
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """Jobs, newest first, with ``lost`` worked out from stale heartbeats."""
        return self.find_jobs(experiment=experiment, status=status, limit=limit).data

    def get_job(self, job_id: str, *, now: float | None = None) -> dict[str, Any] | None:
        """One job by id (or by a unique prefix of it), or ``None``."""
        if not job_id:
            return None
        found = self._get_or_none(self._path("jobs", job_id), prefix=True)
        return None if found is None else job_in(found)

    def job_by_id(self, job_id: str, *, now: float | None = None) -> dict[str, Any]:
        """The job with exactly this id; raises JobNotFoundError."""
        try:
            return job_in(self._get(self._path("jobs", job_id)))
        except NotFoundError:
            raise JobNotFoundError(job_id) from None

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
        job field or ``metric.NAME`` (default: newest first), paged."""
        return self._paged(
            "/jobs",
            job_in,
            index,
            limit,
            experiment=experiment,
            status=status,
            search=search,
            sortBy=sort_by,
            descending=descending,
        )

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
        """The jobs :meth:`find_jobs` finds (same arguments), each with its latest metrics."""
        return self._paged(
            "/jobs",
            job_metrics_in,
            index,
            limit,
            experiment=experiment,
            status=status,
            search=search,
            sortBy=sort_by,
            descending=descending,
            withMetrics=True,
        )

    # -- metrics ---------------------------------------------------------------------------

    def latest_metrics(self, job_id: str) -> list[MetricPoint]:
        """The latest (highest-step) point of each metric of job ``job_id``, by name."""
        return [point_in(p) for p in self._get(self._path("jobs", job_id, "metrics"))]

    def metric_history(
        self, job_id: str, name: str, *, index: int = 0, limit: int | None = DEFAULT_PAGE_LENGTH
    ) -> Page[MetricPoint]:
        """Points of metric ``name`` ascending by step: ``limit`` (None: all) from element
        ``index``, with the total count."""
        path = self._path("jobs", job_id, "metrics", name, "snapshots")
        return self._paged(path, point_in, index, limit)

    def metric_series(self, job_id: str, name: str, *, max_points: int) -> list[MetricPoint]:
        """At most ``max_points`` points of a metric for a chart, keeping the first, the
        last and each bucket's extremes."""
        path = self._path("jobs", job_id, "metrics", name, "snapshots")
        return [point_in(p) for p in self._get(path, maxPoints=max_points)["data"]]

    def metric_summary(self, job_id: str, name: str) -> MetricSummary:
        """Count, step range, min/max and NaN/Inf counts of a metric's history."""
        path = self._path("jobs", job_id, "metrics", name, "summary")
        return metric_summary_in(self._get(path), name)

    def metric_summaries(self, job_id: str) -> list[MetricSummary]:
        """The summary of each metric of job ``job_id``, by name."""
        docs = self._get(self._path("jobs", job_id, "metrics", "summary"))
        return [metric_summary_in(doc, doc["name"]) for doc in docs]

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
        """The latest metrics of each job of ``experiment``, paged over jobs."""
        try:
            return self._paged(
                self._path("experiments", experiment, "metrics"),
                job_metrics_in,
                index,
                limit,
                search=search,
                sortBy=sort_by,
                descending=descending,
            )
        except NotFoundError:
            raise ExperimentNotFoundError(experiment) from None

    # -- experiments -----------------------------------------------------------------------

    def get_experiment(self, name: str) -> Experiment:
        """One experiment with its job count; ExperimentNotFoundError if unknown."""
        try:
            return experiment_in(self._get(self._path("experiments", name)))
        except NotFoundError:
            raise ExperimentNotFoundError(name) from None

    def find_experiments(
        self,
        *,
        search: str | None = None,
        sort_by: str | None = None,
        descending: bool | None = None,
        index: int = 0,
        limit: int | None = DEFAULT_PAGE_LENGTH,
    ) -> Page[Experiment]:
        """Experiments matching ``search`` with their job counts, paged."""
        return self._paged(
            "/experiments",
            experiment_in,
            index,
            limit,
            search=search,
            sortBy=sort_by,
            descending=descending,
        )

    # -- traces ----------------------------------------------------------------------------

    def get_trace(self, trace_id: str) -> list[dict[str, Any]] | None:
        """Every span of one trace (by id or a unique prefix of it), ordered by start, or
        ``None`` if no span has that trace id."""
        if not _TRACE_ID.fullmatch(trace_id):
            return None  # no stored trace id looks like it (the store would find none)
        found = self._get_or_none(self._path("traces", trace_id), prefix=True)
        return None if found is None else [span_in(s) for s in found["spans"]]

    def list_traces(
        self,
        *,
        job_id: str | None = None,
        search: TraceSearch | None = None,
        limit: int | None = 50,
    ) -> list[dict[str, Any]]:
        """Summaries of the newest traces, newest first (of job ``job_id``, and with a span
        meeting every condition of ``search``, if given)."""
        return self.find_traces(job_id=job_id, search=search, limit=limit).data

    def find_traces(
        self,
        *,
        job_id: str | None = None,
        search: TraceSearch | None = None,
        index: int = 0,
        limit: int | None = DEFAULT_PAGE_LENGTH,
    ) -> Page[dict[str, Any]]:
        """Trace summaries (of job ``job_id``, matching ``search``, if given), newest first,
        paged."""
        params = {} if search is None else _trace_search_params(search)
        if job_id is not None:
            params["jobId"] = job_id
        return self._paged("/traces", span_in, index, limit, **params)

    def job_trace_ids(self, job_id: str) -> list[str]:
        """The ids of every trace with a span in job ``job_id``, newest first."""
        summaries = self._iter_paged("/traces", span_in, MAX_PAGE_LENGTH, jobId=job_id)
        return sorted((str(s["trace_id"]) for s in summaries), reverse=True)

    # -- batches ---------------------------------------------------------------------------

    def resolve_batch_id(self, batch_id: str) -> str | None:
        """The full id of a batch (given whole or as a unique job id prefix), or ``None``."""
        found = self._get_or_none(self._path("batches", batch_id)) if batch_id else None
        return None if found is None else str(found["id"])

    def batch_summary(self, batch_id: str) -> BatchSummary | None:
        """The summary of batch ``batch_id`` (id or unique prefix), or ``None``."""
        from jobtrace.batch.summary import BatchSummary

        found = self._get_or_none(self._path("batches", batch_id)) if batch_id else None
        if found is None:
            return None
        return BatchSummary.from_stats(str(found["id"]), batch_stats_in(found["stats"]))

    def list_items(
        self,
        batch_id: str,
        *,
        status: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Items of batch ``batch_id`` (a full id), in the order they were recorded."""
        path = self._path("batches", batch_id, "items")
        return self._paged(path, item_in, offset, limit, status=status).data

    def iter_items(
        self, batch_id: str, *, status: str | None = None, page_size: int = 5000
    ) -> Iterator[dict[str, Any]]:
        """Items of batch ``batch_id`` (a full id) in the order they were recorded, a page
        at a time: memory stays flat however large the batch."""
        path = self._path("batches", batch_id, "items")
        return self._iter_paged(path, item_in, page_size, status=status)

    def count_items(self, batch_id: str, *, status: str | None = None) -> int:
        """How many items batch ``batch_id`` (a full id) has, with ``status`` if given."""
        page = self._get(self._path("batches", batch_id, "items"), pageLength=1, status=status)
        return int(page["totalNumResults"])

    # -- profiles and reports --------------------------------------------------------------

    def job_profile(self, job_id: str) -> JobProfile:
        """The folded profiles of job ``job_id`` (exact id); JobNotFoundError if none."""
        from jobtrace.report.profile_data import profile_from_json

        try:
            return profile_from_json(self._get(self._path("jobs", job_id, "profile")))
        except NotFoundError:
            raise JobNotFoundError(job_id) from None

    def get_bundle(self, key: str) -> dict[str, Any]:
        """The encrypted bundle stored under ``key``; NotFoundError if none."""
        import base64

        found = self._get(self._path("reports", key))
        return {
            "key": found["key"],
            "job_id": found.get("jobId"),
            "created_at": found.get("createdAt"),
            "data": base64.b64decode(found["data"]),
        }


def _trace_search_params(search: TraceSearch) -> dict[str, Any]:
    """The ``GET /traces`` parameters that ask the server for ``search``."""
    from jobtrace._clock import iso

    def ns_time(ns: int | None) -> str | None:
        return None if ns is None else iso(ns / 1e9)

    return {
        "service": search.service,
        "name": search.name,
        "minDuration": None if search.min_duration_ns is None else f"{search.min_duration_ns}ns",
        "maxDuration": None if search.max_duration_ns is None else f"{search.max_duration_ns}ns",
        "error": search.error or None,
        "since": ns_time(search.since_ns),
        "until": ns_time(search.until_ns),
        "jobId": search.job_id,
    }
