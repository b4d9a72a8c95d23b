"""``/jobs``: create, get and list jobs."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field, field_validator

from jobtrace import _ids, model
from jobtrace.server.deps import StoreDep, read
from jobtrace.server.errors import APIError
from jobtrace.server.paging import PageDep, envelope
from jobtrace.server.params import APIModel, Descending, Search, SortBy, sort_field
from jobtrace.server.wire import JSONBody, job_out, parse_time
from jobtrace.store import pages

__all__ = ["JobCreate", "job_record", "router"]

router = APIRouter(tags=["jobs"])

JobId = Annotated[str, Path(min_length=1, max_length=128, description="The job's id.")]


class JobCreate(APIModel):
    """A job registered through the API (a process recording with jobtrace creates its
    jobs itself). ``id`` defaults to a new time-ordered id, ``startTime`` to now."""

    id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^/\s]+$")
    name: str | None = Field(None, max_length=512)
    experiment: str | None = Field(None, min_length=1, max_length=256)
    status: Literal["running", "succeeded", "failed", "killed"] = "running"
    start_time: str | float | None = None
    end_time: str | float | None = None
    heartbeat_interval: float | None = Field(
        None,
        gt=0,
        description="Seconds between the heartbeats the job's owner promises; a running job "
        "whose heartbeat is stale for five intervals plus ten seconds reads as lost.",
    )
    host: str | None = Field(None, max_length=256)
    tags: dict[str, Any] | None = None
    params: dict[str, Any] | None = None

    @field_validator("start_time", "end_time")
    @classmethod
    def _time(cls, value: str | float | None) -> float | None:
        return parse_time(value)


def job_record(body: JobCreate, job_id: str, now: float) -> model.Record:
    start = body.start_time if isinstance(body.start_time, float) else now
    end = body.end_time if isinstance(body.end_time, float) else None
    values = {
        "id": job_id,
        "seq": 0,
        "name": body.name,
        "experiment": body.experiment,
        "status": body.status,
        "start_time": start,
        "end_time": end,
        "duration": None if end is None else max(0.0, end - start),
        "host": body.host,
        "tags": body.tags,
        "params": body.params,
        "last_heartbeat": now,
        "heartbeat_interval": body.heartbeat_interval,
    }
    return (model.JOB, *(values.get(name) for name in model.FIELDS[model.JOB]))


@router.post("/jobs", status_code=201, summary="Register a job", response_class=JSONBody)
def create_job(body: JobCreate, store: StoreDep, request: Request) -> JSONBody:
    job_id = body.id or _ids.time_ordered_id()
    if read(store, pages.get_job, job_id) is not None:
        raise APIError(409, f"job {job_id!r} already exists", detail={"id": job_id})
    store.write([job_record(body, job_id, time.time())])
    created = read(store, pages.get_job, job_id)
    assert created is not None
    location = str(request.url_for("get_job", job_id=job_id).path)
    return JSONBody(job_out(created), status_code=201, headers={"Location": location})


@router.get("/jobs/{job_id}", summary="One job", response_class=JSONBody)
def get_job(job_id: JobId, store: StoreDep) -> JSONBody:
    found = read(store, pages.get_job, job_id)
    if found is None:
        raise APIError(404, f"no job with id {job_id!r}", detail={"id": job_id})
    return JSONBody(job_out(found))


@router.get("/jobs", summary="Jobs, newest first (paged, sorted, searched)")
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
) -> JSONBody:
    total, rows = read(
        store,
        pages.page_jobs,
        offset=page.index,
        limit=page.page_length,
        sort_by=sort_field(sort_by, pages.JOB_SORT_FIELDS),
        descending=descending,
        experiment=experiment,
        status=status,
        search=search,
    )
    return JSONBody(envelope(request, page, total, [job_out(r) for r in rows]))
