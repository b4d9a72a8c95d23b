"""``GET /batches/{id}`` and ``/batches/{id}/items``: a recorded batch's aggregates and its
items, read back (``POST /batches`` is ingest, in :mod:`~jobtrace.server.routes.batches`).

A batch's summary travels as its aggregates (:class:`~jobtrace.batch.summary.BatchStats`)
beside the summary itself, so a client computes from them exactly the summary the store
gives (:meth:`~jobtrace.batch.summary.BatchSummary.from_stats`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request

from jobtrace.batch.summary import BatchStats, BatchSummary
from jobtrace.errors import NotFoundError
from jobtrace.server.deps import StoreDep, read
from jobtrace.server.paging import PageDep, envelope
from jobtrace.server.wire import JSONBody
from jobtrace.store import items as item_queries
from jobtrace.store.paging import Page
from jobtrace.wire import batch_stats_out, item_out

__all__ = ["router"]

router = APIRouter(tags=["batches"])

BatchId = Annotated[
    str,
    Path(min_length=1, max_length=128, description="The batch's id (its job's), or a prefix."),
]


@router.get(
    "/batches/{batch_id}",
    summary="A recorded batch's summary",
    description="`batch_id` may be a unique prefix of its job's id. The answer holds the "
    "full `id`, the `summary` (TraceKit's shape) and the `stats` it is computed from.",
)
def get_batch(batch_id: BatchId, store: StoreDep) -> JSONBody:
    def stats_of(conn: sa.Connection) -> tuple[str, BatchStats] | None:
        full_id = item_queries.resolve_batch_id(conn, batch_id)
        if full_id is None:
            return None
        return full_id, item_queries.batch_stats(conn, full_id)

    found = read(store, stats_of)
    if found is None:
        raise NotFoundError(f"no batch {batch_id!r}")
    full_id, stats = found
    summary = BatchSummary.from_stats(full_id, stats)
    return JSONBody({"id": full_id, "summary": summary.to_dict(), "stats": batch_stats_out(stats)})


@router.get(
    "/batches/{batch_id}/items",
    summary="A batch's items in the order they were recorded (paged)",
    description="`batch_id` is the full id. Each item's `startTime` is ISO-8601 and "
    "`startSeconds` the same in exact epoch seconds.",
)
def list_items(
    request: Request,
    batch_id: BatchId,
    store: StoreDep,
    page: PageDep,
    status: Annotated[
        Literal["success", "error", "skipped"] | None, Query(description="Only these items.")
    ] = None,
) -> JSONBody:
    def page_of(conn: sa.Connection) -> Page[dict[str, Any]]:
        rows = item_queries.list_items(
            conn, batch_id, status=status, limit=page.page_length, offset=page.index
        )
        total = item_queries.count_items(conn, batch_id, status=status)
        return Page(rows, page.index, page.page_length, total)

    found = read(store, page_of)
    return JSONBody(envelope(request, found.map(item_out)))
