"""``/experiments``: create, get and list experiments (an experiment's id is its name)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import Field

from jobtrace.server.deps import StoreDep
from jobtrace.server.paging import PageDep, envelope
from jobtrace.server.params import APIModel, Descending, Search, SortBy, sort_field
from jobtrace.server.wire import JSONBody, experiment_out
from jobtrace.store.experiments import EXPERIMENT_SORT_FIELDS

__all__ = ["ExperimentCreate", "router"]

router = APIRouter(tags=["experiments"])

ExperimentId = Annotated[str, Path(min_length=1, max_length=256, description="Its name.")]


class ExperimentCreate(APIModel):
    """A new experiment: a named group of jobs."""

    name: str = Field(min_length=1, max_length=256, pattern=r"^[^/]+$")
    description: str | None = None  # cut to jobtrace.limits.MAX_TEXT by the store
    tags: dict[str, Any] | None = None


@router.post(
    "/experiments", status_code=201, summary="Create an experiment", response_class=JSONBody
)
def create_experiment(body: ExperimentCreate, store: StoreDep, request: Request) -> JSONBody:
    created = store.create_experiment(body.name, description=body.description, tags=body.tags)
    location = str(request.url_for("get_experiment", experiment_id=created.name).path)
    return JSONBody(experiment_out(created), status_code=201, headers={"Location": location})


@router.get("/experiments/{experiment_id}", summary="One experiment", response_class=JSONBody)
def get_experiment(experiment_id: ExperimentId, store: StoreDep) -> JSONBody:
    return JSONBody(experiment_out(store.get_experiment(experiment_id)))


@router.get(
    "/experiments",
    summary="Experiments, newest first (paged, sorted, searched)",
    description="`sortBy`: `name`, `createdAt` or `jobCount`. `search`: the search language, "
    "e.g. `name:mnist*, jobCount>=3`.",
)
def list_experiments(
    request: Request,
    store: StoreDep,
    page: PageDep,
    sort_by: SortBy = None,
    descending: Descending = None,
    search: Search = None,
) -> JSONBody:
    found = store.find_experiments(
        search=search,
        sort_by=sort_field(sort_by, EXPERIMENT_SORT_FIELDS),
        descending=descending,
        index=page.index,
        limit=page.page_length,
    )
    return JSONBody(envelope(request, found.map(experiment_out)))
