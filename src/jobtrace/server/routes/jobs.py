"""``/jobs``: create, get and list jobs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field, field_validator

from jobtrace import _ids, model
from jobtrace.errors import JobNotFoundError
from jobtrace.server.auth import Guard, IdentityDep, forbidden_jobs
from jobtrace.server.deps import StoreDep
from jobtrace.server.paging import PageDep, envelope
from jobtrace.server.params import APIModel, Descending, Search, SortBy, sort_field
from jobtrace.server.wire import JSONBody, job_metrics_out, job_out, parse_time
from jobtrace.store.jobs import JOB_SORT_FIELDS
from jobtrace.store.paging import Page

__all__ = ["JobCreate", "router"]

router = APIRouter(tags=["jobs"])

JobId = Annotated[str, Path(min_length=1, max_length=128, description="The job's id.")]


class JobCreate(APIModel):
    """A job registered through the API (a process recording with jobtrace creates its
    jobs itself). ``id`` defaults to a new time-ordered id, ``startTime`` to now."""

    id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^/\s]+$")
    # Not keys: cut to the store's width like a job recorded by the library (jobtrace.limits).
    name: str | None = None
    experiment: str | None = Field(None, min_length=1, max_length=256)
    status: Literal["running", "succeeded", "failed", "killed"] = "running"
    start_time: str | float | None = None
    end_time: str | float | None = None
    heartbeat_interval: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Seconds between the heartbeats the job's owner promises; a running job "
        "whose heartbeat is stale for five intervals plus ten seconds reads as lost.",
    )
    host: str | None = None
    tags: dict[str, Any] | None = None
    params: dict[str, Any] | None = None

    @field_validator("start_time", "end_time")
    @classmethod
    def _time(cls, value: str | float | None) -> float | None:
        return parse_time(value)


@router.post("/jobs", status_code=201, summary="Register a job", response_class=JSONBody)
def create_job(
    body: JobCreate, store: StoreDep, request: Request, identity: IdentityDep
) -> JSONBody:
    job_id = body.id or _ids.time_ordered_id()
    # The caller's token claims the id before the job exists (an existing job is not
    # claimed, and creating it again is a 409 below).
    guard: Guard = request.app.state.auth
    if guard.check_jobs(identity, {job_id}):
        assert identity is not None
        raise forbidden_jobs(identity, {job_id})
    # One INSERT … ON CONFLICT DO NOTHING: of two requests racing for an id, one gets 409.
    created = store.create_job(
        job_id=job_id,
        name=body.name,
        experiment=body.experiment,
        status=body.status,
        start_time=body.start_time if isinstance(body.start_time, float) else None,
        end_time=body.end_time if isinstance(body.end_time, float) else None,
        host=body.host,
        heartbeat_interval=body.heartbeat_interval,
        tags=body.tags,
        params=body.params,
    )
    location = str(request.url_for("get_job", job_id=created["id"]).path)
    return JSONBody(job_out(created), status_code=201, headers={"Location": location})


@router.get(
    "/jobs/{job_id}",
    summary="One job",
    description="With `prefix=true`, `job_id` may be a unique prefix of the id, as the CLI "
    "takes it (an ambiguous prefix is a 400).",
    response_class=JSONBody,
)
def get_job(
    job_id: JobId,
    store: StoreDep,
    prefix: Annotated[bool, Query(description="Accept a unique prefix of the id.")] = False,
) -> JSONBody:
    if not prefix:
        return JSONBody(job_out(store.job_by_id(job_id)))
    found = store.get_job(job_id)
    if found is None:
        raise JobNotFoundError(job_id)
    return JSONBody(job_out(found))


@router.get(
    "/jobs",
    summary="Jobs, newest first (paged, sorted, searched)",
    description="`sortBy`: a job field (camelCase), `metric.NAME` (its latest value), "
    "`param.NAME` or `tag.NAME` (numbers before other values). "
    "`search`: the search language, e.g. `name:resnet*, status:failed, metric.acc>0.9`.",
)
def list_jobs(
    request: Request,
    store: StoreDep,
    page: PageDep,
    sort_by: SortBy = None,
    descending: Descending = None,
    search: Search = None,
    experiment: Annotated[str | None, Query(max_length=256)] = None,
    status: Annotated[
        str | None, Query(description="One of " + ", ".join(model.JOB_STATUSES))
    ] = None,
    with_metrics: Annotated[
        bool,
        Query(
            alias="withMetrics",
            description="Add `metrics` to each job: its latest points, as "
            "`GET /jobs/{id}/metrics` gives them.",
        ),
    ] = False,
    metrics: Annotated[
        list[str] | None,
        Query(
            alias="metric",
            max_length=20,
            description="A metric whose latest point each job carries in `metrics` "
            "(repeatable); with it the envelope also holds `metricNames`, every metric the "
            "page's jobs have.",
        ),
    ] = None,
) -> JSONBody:
    sort = sort_field(sort_by, JOB_SORT_FIELDS, metric_prefix=True)
    if metrics is not None:
        chosen, names = store.jobs_with_metrics(
            metrics,
            experiment=experiment,
            status=status,
            search=search,
            sort_by=sort,
            descending=descending,
            index=page.index,
            limit=page.page_length,
        )
        body = envelope(request, chosen.map(job_metrics_out))
        body["metricNames"] = names
        return JSONBody(body)
    find = store.find_job_metrics if with_metrics else store.find_jobs
    found: Page[Any] = find(
        experiment=experiment,
        status=status,
        search=search,
        sort_by=sort,
        descending=descending,
        index=page.index,
        limit=page.page_length,
    )
    return JSONBody(envelope(request, found.map(job_metrics_out if with_metrics else job_out)))
