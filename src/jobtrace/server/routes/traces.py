"""``/traces``: trace summaries and the spans of one trace."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from jobtrace.server.deps import StoreDep, read
from jobtrace.server.errors import APIError
from jobtrace.server.paging import PageDep, envelope
from jobtrace.server.wire import JSONBody, span_out, trace_summary_out
from jobtrace.store import traces as trace_queries
from jobtrace.store.trace_search import TraceSearch

__all__ = ["router"]

router = APIRouter(tags=["traces"])

TraceId = Annotated[
    str,
    Path(
        pattern=r"^[0-9a-f]{1,32}$",
        description="The trace id: 32 lowercase hex digits (fewer with `prefix=true`).",
    ),
]


_DURATION_HELP = "a span's duration with a unit: 250ms, 1.5s, 2m (ns, us, ms, s, m, h, d)"
_TIME_HELP = "an ISO 8601 time (2026-12-07T10:00:00Z) or a time ago (30m, 1h, 2d)"


@router.get(
    "/traces",
    summary="Trace summaries, newest first (paged); searched like Jaeger's search form",
    description=(
        "A trace matches when one of its spans meets every condition given "
        "(service, name, durations, error, time range, job)."
    ),
)
def list_traces(
    request: Request,
    store: StoreDep,
    page: PageDep,
    job_id: Annotated[
        str | None, Query(alias="jobId", max_length=128, description="Only this job's traces.")
    ] = None,
    service: Annotated[
        str | None, Query(max_length=256, description="A span's service name.")
    ] = None,
    name: Annotated[
        str | None,
        Query(max_length=512, description="A span's name, a glob (* and ?; case-sensitive)."),
    ] = None,
    min_duration: Annotated[
        str | None,
        Query(alias="minDuration", max_length=40, description=f"At least {_DURATION_HELP}."),
    ] = None,
    max_duration: Annotated[
        str | None,
        Query(alias="maxDuration", max_length=40, description=f"At most {_DURATION_HELP}."),
    ] = None,
    error: Annotated[bool, Query(description="Only spans that ended with an error.")] = False,
    since: Annotated[
        str | None, Query(max_length=64, description=f"Spans started at or after {_TIME_HELP}.")
    ] = None,
    until: Annotated[
        str | None, Query(max_length=64, description=f"Spans started at or before {_TIME_HELP}.")
    ] = None,
) -> JSONBody:
    search = TraceSearch.parse(
        service=service,
        name=name,
        min_duration=min_duration,
        max_duration=max_duration,
        error=error,
        since=since,
        until=until,
        job_id=job_id,
    )
    found = store.find_traces(search=search, index=page.index, limit=page.page_length)
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
