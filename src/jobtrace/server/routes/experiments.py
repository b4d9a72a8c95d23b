"""``/experiments``: create, get and list experiments (an experiment's id is its name)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import Field

from jobtrace import model
from jobtrace.server.deps import StoreDep, read
from jobtrace.server.errors import APIError
from jobtrace.server.paging import PageDep, envelope
from jobtrace.server.params import APIModel, Descending, Search, SortBy, sort_field
from jobtrace.server.wire import JSONBody, experiment_out
from jobtrace.store import pages

__all__ = ["ExperimentCreate", "router"]

router = APIRouter(tags=["experiments"])

ExperimentId = Annotated[str, Path(min_length=1, max_length=256, description="Its name.")]


class ExperimentCreate(APIModel):
    """A new experiment: a named group of jobs."""

    name: str = Field(min_length=1, max_length=256, pattern=r"^[^/]+$")
    description: str | None = Field(None, max_length=100_000)
    tags: dict[str, Any] | None = None


@router.post(
    "/experiments", status_code=201, summary="Create an experiment", response_class=JSONBody
)
def create_experiment(body: ExperimentCreate, store: StoreDep, request: Request) -> JSONBody:
    if read(store, pages.get_experiment, body.name) is not None:
        raise APIError(409, f"experiment {body.name!r} already exists", detail={"id": body.name})
    store.write([(model.EXPERIMENT, body.name, body.description, body.tags, time.time())])
    created = read(store, pages.get_experiment, body.name)
    assert created is not None
    location = str(request.url_for("get_experiment", experiment_id=body.name).path)
    return JSONBody(experiment_out(created), status_code=201, headers={"Location": location})


@router.get("/experiments/{experiment_id}", summary="One experiment", response_class=JSONBody)
def get_experiment(experiment_id: ExperimentId, store: StoreDep) -> JSONBody:
    found = read(store, pages.get_experiment, experiment_id)
    if found is None:
        raise APIError(
            404, f"no experiment with id {experiment_id!r}", detail={"id": experiment_id}
        )
    return JSONBody(experiment_out(found))


@router.get("/experiments", summary="Experiments by name (paged, sorted, searched)")
def list_experiments(
    request: Request,
    store: StoreDep,
    page: PageDep,
    sort_by: SortBy = None,
    descending: Descending = None,
    search: Search = None,
) -> JSONBody:
    total, rows = read(
        store,
        pages.page_experiments,
        offset=page.index,
        limit=page.page_length,
        sort_by=sort_field(sort_by, pages.EXPERIMENT_SORT_FIELDS),
        descending=descending,
        search=search,
    )
    return JSONBody(envelope(request, page, total, [experiment_out(r) for r in rows]))
