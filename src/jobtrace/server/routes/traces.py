"""``/traces``: trace summaries and the spans of one trace."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from jobtrace.server.deps import StoreDep, read
from jobtrace.server.errors import APIError
from jobtrace.server.paging import PageDep, envelope
from jobtrace.server.wire import JSONBody, span_out, trace_summary_out
from jobtrace.store import traces as trace_queries

__all__ = ["router"]

router = APIRouter(tags=["traces"])

TraceId = Annotated[
    str,
    Path(
        pattern=r"^[0-9a-f]{1,32}$",
        description="The trace id: 32 lowercase hex digits (fewer with `prefix=true`).",
    ),
]


@router.get("/traces", summary="Trace summaries, newest first (paged)")
def list_traces(
    request: Request,
    store: StoreDep,
    page: PageDep,
    job_id: Annotated[
        str | None, Query(alias="jobId", max_length=128, description="Only this job's traces.")
    ] = None,
) -> JSONBody:
    found = store.find_traces(job_id=job_id, index=page.index, limit=page.page_length)
    return JSONBody(envelope(request, found.map(trace_summary_out)))


@router.get(
    "/traces/{trace_id}",
    summary="Every span of one trace, by start",
    description="With `prefix=true`, `trace_id` may be a unique prefix of the id, as the "
    "CLI takes it (an ambiguous prefix is a 400).",
)
def get_trace(
    trace_id: TraceId,
    store: StoreDep,
    prefix: Annotated[bool, Query(description="Accept a unique prefix of the id.")] = False,
) -> JSONBody:
    if len(trace_id) != 32 and not prefix:
        raise APIError(
            422,
            "a trace id is 32 lowercase hex digits (add prefix=true to look one up by a prefix)",
            kind="invalid_input",
            detail={"id": trace_id},
        )
    spans = read(store, trace_queries.get_trace, trace_id)
    if spans is None:
        raise APIError(404, f"no trace with id {trace_id!r}", detail={"id": trace_id})
    full_id = spans[0]["trace_id"] if spans else trace_id
    return JSONBody({"traceId": full_id, "spans": [span_out(s) for s in spans]})
