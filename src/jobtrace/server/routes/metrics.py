"""Metrics, in Dioptra's shapes: log a point, the latest point of each name, a metric's
history (paged, or downsampled for a chart), and the latest metrics of an experiment's jobs.

A point on the wire is ``{"name", "value", "step", "timestamp"}``: ``value`` a number or
one of ``"nan"``, ``"inf"``, ``"-inf"``; ``timestamp`` ISO-8601 with an offset. Writes go
through :meth:`jobtrace.store.Store.write` as ``metric`` records, the one write path of the
store, so (job, name, step) stays the key and the latest point is the highest step.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field, field_validator

from jobtrace import model
from jobtrace.metrics import MAX_NAME, MAX_STEP
from jobtrace.model import encode_float
from jobtrace.server.auth import Guard, IdentityDep, forbidden_jobs
from jobtrace.server.deps import StoreDep, read
from jobtrace.server.errors import APIError
from jobtrace.server.paging import PageDep, envelope
from jobtrace.server.params import APIModel, Descending, Search, SortBy
from jobtrace.server.routes.experiments import ExperimentId
from jobtrace.server.routes.jobs import JobId
from jobtrace.server.wire import JSONBody
from jobtrace.store.jobs import require_job
from jobtrace.store.metrics import (
    MAX_BUCKET_JOBS,
    MAX_BUCKETS,
    MIN_SERIES_POINTS,
    MetricBuckets,
    MetricPoint,
)
from jobtrace.store.paging import Page
from jobtrace.wire import job_metrics_out, metric_summary_out, parse_time, point_out

__all__ = ["MAX_SERIES_POINTS", "MetricIn", "buckets_out", "router"]

router = APIRouter(tags=["metrics"])

#: Most points ``maxPoints`` may ask for (a chart rarely draws more than its pixels).
MAX_SERIES_POINTS: Final = 10_000

MetricName = Annotated[
    str, Path(min_length=1, max_length=MAX_NAME, description="The metric's name (may hold '/').")
]


class MetricIn(APIModel):
    """A metric point to log: ``step`` defaults to 0, ``timestamp`` to the server's time."""

    name: str = Field(min_length=1, max_length=MAX_NAME, description="The metric's name.")
    value: float | str = Field(description='A number, or "nan", "inf" or "-inf".')
    step: int = Field(0, ge=0, le=MAX_STEP, strict=True, description="An integer >= 0.")
    timestamp: str | float | None = Field(
        None, description="ISO-8601 with an offset, or epoch seconds; default: now."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        cleaned = model.clean_text(name)  # as log_metric does: no NUL, no lone surrogates
        if not cleaned.strip():
            raise ValueError("must not be blank")
        return cleaned

    @field_validator("value", mode="before")
    @classmethod
    def _value(cls, value: Any) -> float:
        # Before pydantic's own parsing, which would take true for 1.0 and "0.5" for 0.5.
        if isinstance(value, str):
            try:
                return model.decode_float(value)  # only "nan", "inf", "-inf" get through
            except model.RecordError:
                raise ValueError('must be a number or one of "nan", "inf", "-inf"') from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError('must be a number or one of "nan", "inf", "-inf"')
        try:
            number = float(value)
        except OverflowError:  # an integer literal past a float's range
            number = math.inf
        if not math.isfinite(number):
            # A JSON number cannot be NaN or infinite: this is 1e400 read as inf.
            raise ValueError('is too large for a 64-bit float (send "inf" for infinity)')
        return number

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> float | None:
        if value is not None and not isinstance(value, str | int | float):
            raise ValueError("must be an ISO-8601 time or epoch seconds")
        return parse_time(value)


@router.post(
    "/jobs/{job_id}/metrics",
    summary="Log a metric point of a job",
    description="Logging the same (name, step) again replaces its value. Returns the point "
    "as stored.",
    response_class=JSONBody,
)
def append_metric(
    job_id: JobId, body: MetricIn, store: StoreDep, request: Request, identity: IdentityDep
) -> JSONBody:
    read(store, require_job, job_id)
    guard: Guard = request.app.state.auth
    if guard.check_jobs(identity, {job_id}):
        assert identity is not None
        raise forbidden_jobs(identity, {job_id})
    value = body.value
    assert isinstance(value, float)  # the validator's doing
    timestamp = time.time() if body.timestamp is None else float(body.timestamp)
    store.write([(model.METRIC, job_id, body.name, body.step, value, timestamp)])
    return JSONBody(point_out(MetricPoint(body.name, value, body.step, timestamp)))


@router.get(
    "/jobs/{job_id}/metrics",
    summary="The latest point of each metric of a job",
    description="A list of `{name, value, step, timestamp}` by name; the latest point of a "
    "name is the one at its highest step.",
    response_class=JSONBody,
)
def latest_metrics(job_id: JobId, store: StoreDep) -> JSONBody:
    return JSONBody([point_out(p) for p in store.latest_metrics(job_id)])


@router.get(
    "/jobs/{job_id}/metrics/summary",
    summary="A summary of each metric of a job",
    description="A list by name of `{name, count, firstStep, lastStep, min, minStep, max, "
    "maxStep, nanCount, infCount, latest}`: `min`/`max` include infinities, never NaN (null "
    "when no point is a number), `minStep`/`maxStep` the first steps holding them, `latest` "
    "the point at the highest step.",
    response_class=JSONBody,
)
def metric_summaries(job_id: JobId, store: StoreDep) -> JSONBody:
    return JSONBody(
        [{"name": s.name, **metric_summary_out(s)} for s in store.metric_summaries(job_id)]
    )


@router.get(
    "/jobs/{job_id}/metrics/{name:path}/snapshots",
    summary="A metric's history, ascending by step",
    description="Paged with `index` and `pageLength`. With `maxPoints=N` (2 to "
    f"{MAX_SERIES_POINTS}), the whole history downsampled for a chart instead: at most N "
    "points keeping the first, the last and each bucket's extremes, as one complete page "
    "(`index` 0, `isComplete` true, `next` null, `totalNumResults` the number of points "
    "returned). An unknown name of a known job is an empty history.",
    response_class=JSONBody,
)
def metric_snapshots(
    request: Request,
    job_id: JobId,
    name: MetricName,
    store: StoreDep,
    page: PageDep,
    max_points: Annotated[
        int | None,
        Query(alias="maxPoints", description="Downsample the history to at most this many."),
    ] = None,
) -> JSONBody:
    if max_points is None:
        history = store.metric_history(job_id, name, index=page.index, limit=page.page_length)
        return JSONBody(envelope(request, history.map(point_out)))
    if not MIN_SERIES_POINTS <= max_points <= MAX_SERIES_POINTS:
        raise APIError(
            400,
            f"maxPoints must be between {MIN_SERIES_POINTS} and {MAX_SERIES_POINTS}, "
            f"got {max_points}",
            kind="invalid_query",
            detail={"field": "maxPoints", "maxPoints": MAX_SERIES_POINTS},
        )
    if page.index != 0:
        raise APIError(
            400,
            "maxPoints returns the whole downsampled series as one page; leave index at 0",
            kind="invalid_query",
            detail={"field": "index"},
        )
    series = [point_out(p) for p in store.metric_series(job_id, name, max_points=max_points)]
    whole = Page(series, 0, None, len(series))
    return JSONBody(envelope(request, whole, page.page_length))


@router.get(
    "/jobs/{job_id}/metrics/{name:path}/summary",
    summary="A metric's history in figures",
    description="`count`, `firstStep`, `lastStep`, `min` and `max` (±infinity included, NaN "
    "not; null when no point is a number), `nanCount`, `infCount` and `latest`, the point "
    "at the highest step. An unknown name of a known job has `count` 0.",
    response_class=JSONBody,
)
def metric_summary(job_id: JobId, name: MetricName, store: StoreDep) -> JSONBody:
    return JSONBody(metric_summary_out(store.metric_summary(job_id, name)))


@router.get(
    "/experiments/{experiment_id}/metrics",
    summary="The latest metrics of each job of an experiment",
    description="Paged over jobs; each element is the job (as `GET /jobs/{id}` gives it) "
    "with `metrics`, its latest points. `sortBy`: a job field (camelCase), `metric.NAME` or, "
    "as in Dioptra, a bare metric name (jobs without it last). `search`: the search "
    "language, e.g. `name:resnet*, metric.accuracy>0.9`.",
    response_class=JSONBody,
)
def experiment_metrics(
    request: Request,
    experiment_id: ExperimentId,
    store: StoreDep,
    page: PageDep,
    sort_by: SortBy = None,
    descending: Descending = None,
    search: Search = None,
) -> JSONBody:
    found = store.experiment_metrics(
        experiment_id,
        search=search,
        sort_by=sort_by,
        descending=descending,
        index=page.index,
        limit=page.page_length,
    )
    return JSONBody(envelope(request, found.map(job_metrics_out)))


def buckets_out(found: MetricBuckets) -> dict[str, Any]:
    """A :class:`~jobtrace.store.metrics.MetricBuckets` on the wire: each run's points as
    ``[step, value, epochSeconds]`` (specials as strings), compact for a chart."""
    return {
        "name": found.name,
        "start": found.start,
        "end": found.end,
        "buckets": found.buckets,
        "exact": found.exact,
        "series": [
            {
                "jobId": s.job_id,
                "total": s.total,
                "points": [
                    [
                        p.step,
                        p.value if p.value - p.value == 0.0 else encode_float(p.value),
                        p.timestamp,
                    ]
                    for p in s.points
                ],
            }
            for s in found.series
        ],
    }


@router.get(
    "/metric-buckets",
    summary="A metric of one or more runs downsampled alike for a chart",
    description="The step range `start`..`end` (default: every step the runs have) is cut "
    f"into `buckets` (1 to {MAX_BUCKETS}) equal ranges, the same for every run; a run with "
    "more than two points per bucket comes back as each bucket's lowest value at its first "
    "step and highest at its last, so spikes survive. Each run: `{jobId, total, points}` "
    "with points `[step, value, epochSeconds]`. A dashboard chart calls this again with the "
    "zoomed range for more detail.",
    response_class=JSONBody,
)
def metric_buckets(
    store: StoreDep,
    name: Annotated[str, Query(min_length=1, max_length=MAX_NAME, description="Metric name.")],
    job_id: Annotated[
        list[str],
        Query(alias="jobId", description=f"A run's job id; 1 to {MAX_BUCKET_JOBS} of them."),
    ],
    buckets: Annotated[int, Query(ge=1, le=MAX_BUCKETS, description="Buckets (pixels).")] = 1000,
    start: Annotated[int | None, Query(ge=0, le=MAX_STEP, description="First step.")] = None,
    end: Annotated[int | None, Query(ge=0, le=MAX_STEP, description="Last step.")] = None,
) -> JSONBody:
    if len(job_id) > MAX_BUCKET_JOBS:
        raise APIError(
            400,
            f"at most {MAX_BUCKET_JOBS} jobId values, got {len(job_id)}",
            kind="invalid_query",
            detail={"field": "jobId", "max": MAX_BUCKET_JOBS},
        )
    found = store.metric_buckets(job_id, name, buckets=buckets, start=start, end=end)
    return JSONBody(buckets_out(found))
