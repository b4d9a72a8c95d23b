"""A Python client for the ``jobtrace serve`` REST API, with Dioptra's method names.

>>> from jobtrace.client import Client, to_float
>>> with Client("http://127.0.0.1:8000") as client:               # doctest: +SKIP
...     job = client.jobs.create(name="train", experiment="mnist")
...     client.jobs.append_metric_by_id(job["id"], "loss", 0.25, metric_step=1)
...     latest = client.jobs.get_metrics_by_id(job["id"])
...     for found in client.jobs.iter_all(search="metric.loss<0.3", sort_by="startTime"):
...         print(found["id"], found["status"])
...     history = client.jobs.iter_metric_snapshots(job["id"], "loss")
...     losses = [to_float(point["value"]) for point in history]

Responses are the server's JSON as plain dicts and lists. Lists come in the paging envelope
(``index``, ``isComplete``, ``totalNumResults``, ``first``, ``next``, ``prev``, ``data``);
``iter_all`` follows ``next`` for you. Special metric values come back as Dioptra returns
them — the strings ``"nan"``, ``"inf"``, ``"-inf"`` — and :func:`to_float` turns any value
into a float. Every failure raises :class:`ClientError`, carrying the server's error body.

Tests (and programs that embed a server) pass an ``httpx`` transport, e.g.
``httpx.MockTransport(handler)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jobtrace._config import ENV_TOKEN
from jobtrace.errors import JobtraceError
from jobtrace.model import RecordError, decode_float, encode_float

if TYPE_CHECKING:
    import httpx

__all__ = [
    "API_PREFIX",
    "Client",
    "ClientError",
    "ExperimentsCollection",
    "JobsCollection",
    "TracesCollection",
    "to_float",
]

API_PREFIX = "/api/v1"
JSONDict = dict[str, Any]


class ClientError(JobtraceError):
    """A request failed: ``status`` (None when the server was not reached), the error
    ``kind``, ``message`` and ``detail`` from the server's error body, and the ``body``."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        kind: str = "error",
        detail: Any = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"HTTP {status}: {message}" if status is not None else message)
        self.status = status
        self.kind = kind
        self.message = message
        self.detail = detail
        self.body = body


def to_float(value: float | int | str | None) -> float | None:
    """A metric value as a float: ``"nan"``, ``"inf"``, ``"-inf"`` become the floats."""
    if value is None:
        return None
    try:
        return decode_float(value)
    except RecordError as exc:
        raise ValueError(str(exc)) from None


def _timestamp(value: datetime | float | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp needs a timezone (e.g. datetime.now(timezone.utc))")
        return value.isoformat()
    from jobtrace._clock import iso

    return iso(value)


def _value(value: float | int | str) -> float | int | str:
    """A metric value for the wire (numpy scalars, bools and specials included)."""
    if isinstance(value, str):
        return value
    return encode_float(float(value))


def _segment(value: str) -> str:
    return quote(str(value), safe="")


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters without the unset ones; bools as ``true``/``false``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return out


class Client:
    """A connection to a jobtrace server at ``url`` (e.g. ``http://127.0.0.1:8000``).

    ``token`` is the API token sent as ``Authorization: Bearer …`` (default: the
    ``JOBTRACE_TOKEN`` environment variable; none if unset or empty)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        import httpx

        self.url = url.rstrip("/")
        all_headers = dict(headers or {})
        token = token if token is not None else os.environ.get(ENV_TOKEN, "").strip()
        if token:
            all_headers.setdefault("Authorization", f"Bearer {token}")
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            headers=all_headers,
            transport=transport,
        )
        self.jobs = JobsCollection(self)
        self.experiments = ExperimentsCollection(self)
        self.traces = TracesCollection(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the transport ----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
    ) -> Any:
        """Send a request to ``path`` (under ``/api/v1`` unless it starts with it) and
        return the decoded JSON body; raise :class:`ClientError` on any failure."""
        import httpx

        if not path.startswith(API_PREFIX):
            path = API_PREFIX + path
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = self._http.request(
                method, path, params=params, json=json, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            raise ClientError(
                f"cannot reach {self.url}: {exc or type(exc).__name__}", kind="connection_error"
            ) from exc
        body = _decode(response)
        if response.is_success:
            return body
        if isinstance(body, dict) and "message" in body:
            raise ClientError(
                str(body["message"]),
                status=response.status_code,
                kind=str(body.get("error", "error")),
                detail=body.get("detail"),
                body=body,
            )
        raise ClientError(
            response.reason_phrase or "request failed", status=response.status_code, body=body
        )

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=_params(**params))

    def post(self, path: str, json: Any) -> Any:
        return self.request("POST", path, json=json)

    def health(self) -> JSONDict:
        """The server's health (``{"status": "ok", "version": …}``)."""
        result: JSONDict = self.get("/health")
        return result

    def iter_pages(self, first_page: JSONDict) -> Iterator[JSONDict]:
        """``first_page`` and every page after it, following the envelope's ``next``."""
        page: JSONDict | None = first_page
        while page is not None:
            yield page
            link = page.get("next")
            page = self.request("GET", link) if link else None

    def iter_items(self, first_page: JSONDict) -> Iterator[Any]:
        """Every element of every page from ``first_page`` on."""
        for page in self.iter_pages(first_page):
            yield from page["data"]

    def ingest(self, records: list[JSONDict], batch_id: str) -> JSONDict:
        """Send a batch of record dicts (jobtrace's codec) as batch ``batch_id``;
        retrying with the same id never stores it twice."""
        result: JSONDict = self.post("/batches", {"id": batch_id, "records": records})
        return result


def _decode(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


class _Collection:
    def __init__(self, client: Client) -> None:
        self._client = client

    def _page(
        self,
        path: str,
        index: int,
        page_length: int,
        sort_by: str | None = None,
        descending: bool | None = None,
        search: str | None = None,
        **extra: Any,
    ) -> JSONDict:
        """One page of a paged resource, with the shared paging, sort and search params."""
        result: JSONDict = self._client.get(
            path,
            index=index,
            pageLength=page_length,
            sortBy=sort_by,
            descending=descending,
            search=search,
            **extra,
        )
        return result


class JobsCollection(_Collection):
    """``client.jobs``: jobs and their metrics."""

    def get(
        self,
        index: int = 0,
        page_length: int = 10,
        sort_by: str | None = None,
        descending: bool | None = None,
        search: str | None = None,
        experiment: str | None = None,
        status: str | None = None,
        with_metrics: bool | None = None,
    ) -> JSONDict:
        """One page of jobs (newest first unless ``sort_by`` says otherwise); with
        ``with_metrics=True`` each job has ``metrics``, its latest points."""
        return self._page(
            "/jobs",
            index,
            page_length,
            sort_by,
            descending,
            search,
            experiment=experiment,
            status=status,
            withMetrics=with_metrics,
        )

    def iter_all(self, page_length: int = 100, **filters: Any) -> Iterator[JSONDict]:
        """Every job, page by page (``filters`` as for :meth:`get`)."""
        return self._client.iter_items(self.get(page_length=page_length, **filters))

    def get_by_id(self, job_id: str) -> JSONDict:
        result: JSONDict = self._client.get(f"/jobs/{_segment(job_id)}")
        return result

    def create(
        self,
        name: str | None = None,
        experiment: str | None = None,
        *,
        job_id: str | None = None,
        status: str | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        heartbeat_interval: float | None = None,
        start_time: datetime | float | str | None = None,
        end_time: datetime | float | str | None = None,
    ) -> JSONDict:
        """Register a job (its id is generated unless given); returns the job."""
        body = {
            "id": job_id,
            "name": name,
            "experiment": experiment,
            "status": status,
            "tags": dict(tags) if tags is not None else None,
            "params": dict(params) if params is not None else None,
            "heartbeatInterval": heartbeat_interval,
            "startTime": _timestamp(start_time),
            "endTime": _timestamp(end_time),
        }
        result: JSONDict = self._client.post(
            "/jobs", {k: v for k, v in body.items() if v is not None}
        )
        return result

    def append_metric_by_id(
        self,
        job_id: str,
        metric_name: str,
        metric_value: float | int | str,
        metric_step: int | None = None,
        timestamp: datetime | float | str | None = None,
    ) -> JSONDict:
        """Log one metric point (step 0 and the server's time unless given)."""
        body: JSONDict = {"name": metric_name, "value": _value(metric_value)}
        if metric_step is not None:
            body["step"] = metric_step
        if timestamp is not None:
            body["timestamp"] = _timestamp(timestamp)
        result: JSONDict = self._client.post(f"/jobs/{_segment(job_id)}/metrics", body)
        return result

    def get_metrics_by_id(self, job_id: str) -> list[JSONDict]:
        """The latest point of each metric of a job: a list of ``{name, value, step,
        timestamp}`` by name (``value`` a number or ``"nan"``/``"inf"``/``"-inf"``)."""
        result: list[JSONDict] = self._client.get(f"/jobs/{_segment(job_id)}/metrics")
        return result

    def get_metric_summaries_by_id(self, job_id: str) -> list[JSONDict]:
        """A summary of each metric of a job, by name: ``{name, count, firstStep,
        lastStep, min, minStep, max, maxStep, nanCount, infCount, latest}``."""
        result: list[JSONDict] = self._client.get(f"/jobs/{_segment(job_id)}/metrics/summary")
        return result

    def get_metrics_snapshots_by_id(
        self,
        job_id: str,
        metric_name: str,
        index: int = 0,
        page_length: int = 10,
        max_points: int | None = None,
    ) -> JSONDict:
        """One page of a metric's history, ascending by step; with ``max_points``, the
        whole history downsampled to at most that many points (first, last and extremes
        kept) as one complete page."""
        path = f"/jobs/{_segment(job_id)}/metrics/{_segment(metric_name)}/snapshots"
        return self._page(path, index, page_length, maxPoints=max_points)

    def iter_metric_snapshots(
        self, job_id: str, metric_name: str, page_length: int = 1000
    ) -> Iterator[JSONDict]:
        """Every point of a metric's history, ascending by step, page by page."""
        first = self.get_metrics_snapshots_by_id(job_id, metric_name, page_length=page_length)
        return self._client.iter_items(first)


class ExperimentsCollection(_Collection):
    """``client.experiments``: experiments and the metrics of their jobs."""

    def get(
        self,
        index: int = 0,
        page_length: int = 10,
        sort_by: str | None = None,
        descending: bool | None = None,
        search: str | None = None,
    ) -> JSONDict:
        """One page of experiments (newest first unless ``sort_by`` says otherwise)."""
        return self._page("/experiments", index, page_length, sort_by, descending, search)

    def iter_all(self, page_length: int = 100, **filters: Any) -> Iterator[JSONDict]:
        """Every experiment, page by page."""
        return self._client.iter_items(self.get(page_length=page_length, **filters))

    def get_by_id(self, experiment_id: str) -> JSONDict:
        result: JSONDict = self._client.get(f"/experiments/{_segment(experiment_id)}")
        return result

    def create(
        self,
        name: str,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> JSONDict:
        """Create an experiment (its id is its name); returns it."""
        body: JSONDict = {"name": name}
        if description is not None:
            body["description"] = description
        if tags is not None:
            body["tags"] = dict(tags)
        result: JSONDict = self._client.post("/experiments", body)
        return result

    def get_metrics_by_id(
        self,
        experiment_id: str,
        index: int = 0,
        page_length: int = 10,
        sort_by: str | None = None,
        descending: bool | None = None,
        search: str | None = None,
    ) -> JSONDict:
        """One page of the experiment's jobs (newest first unless ``sort_by`` — a job
        field, ``metric.NAME`` or a bare metric name — says otherwise), each job with
        ``metrics``: its latest points."""
        path = f"/experiments/{_segment(experiment_id)}/metrics"
        return self._page(path, index, page_length, sort_by, descending, search)

    def iter_metrics(
        self, experiment_id: str, page_length: int = 100, **filters: Any
    ) -> Iterator[JSONDict]:
        """Every job of the experiment with its latest metrics, page by page (``filters``
        as for :meth:`get_metrics_by_id`)."""
        first = self.get_metrics_by_id(experiment_id, page_length=page_length, **filters)
        return self._client.iter_items(first)


class TracesCollection(_Collection):
    """``client.traces``: trace summaries and spans."""

    def get(
        self,
        index: int = 0,
        page_length: int = 10,
        job_id: str | None = None,
        *,
        service: str | None = None,
        name: str | None = None,
        min_duration: str | None = None,
        max_duration: str | None = None,
        error: bool = False,
        since: str | None = None,
        until: str | None = None,
    ) -> JSONDict:
        """One page of trace summaries, newest first: traces with a span that meets every
        condition given (see ``jobtrace trace list --help``)::

            client.traces.get(service="api", min_duration="250ms", since="1h")
        """
        return self._page(
            "/traces",
            index,
            page_length,
            jobId=job_id,
            service=service,
            name=name,
            minDuration=min_duration,
            maxDuration=max_duration,
            error=error or None,
            since=since,
            until=until,
        )

    def iter_all(
        self, page_length: int = 100, job_id: str | None = None, **search: Any
    ) -> Iterator[JSONDict]:
        """Every matching trace summary, page by page (``search`` as for :meth:`get`)."""
        return self._client.iter_items(self.get(page_length=page_length, job_id=job_id, **search))

    def get_by_id(self, trace_id: str) -> JSONDict:
        """Every span of one trace (``{"traceId": …, "spans": […]}``)."""
        result: JSONDict = self._client.get(f"/traces/{_segment(trace_id)}")
        return result
