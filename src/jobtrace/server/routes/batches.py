"""``POST /batches``: many records of every kind in one request, stored exactly once.

This is what the ``http://`` sink calls. The batch's id is written in the same transaction
as its rows (:meth:`jobtrace.store.Store.write`), so a retried batch — after a timeout, a
lost response, a replay from a spool — is acknowledged again but not stored twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from jobtrace import model
from jobtrace.errors import StoreError
from jobtrace.server.auth import Guard, IdentityDep
from jobtrace.server.errors import APIError
from jobtrace.server.ingest import MAX_BATCH_ID, decode_batch
from jobtrace.server.wire import JSONBody
from jobtrace.store.core import Store

__all__ = ["ingest", "router"]

router = APIRouter(tags=["ingest"])

_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "records"],
    "additionalProperties": False,
    "properties": {
        "id": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_BATCH_ID,
            "description": "Unique per batch; a retry sends the same id.",
        },
        "records": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["kind"],
                "properties": {"kind": {"enum": sorted(model.FIELDS)}},
                "description": "A record in jobtrace's codec (jobtrace.model.to_dict): the "
                "kind's fields, epoch-second times, special floats as 'nan', 'inf', '-inf'.",
            },
        },
    },
}


def ingest(
    store: Store,
    body: bytes,
    allow: Callable[[Sequence[model.Record]], None] | None = None,
) -> tuple[str, int, bool]:
    """Decode, check and store one batch: (batch id, record count, stored now).
    ``allow(records)`` raises to refuse the batch before anything is written."""
    from jobtrace.store.writer import _is_data_error

    batch_id, records = decode_batch(body)
    if allow is not None:
        allow(records)
    try:
        stored = store.write(records, batch_id)
    except StoreError as exc:
        if exc.__cause__ is not None and _is_data_error(exc.__cause__):
            raise APIError(422, str(exc), kind="invalid_record") from exc
        raise
    return batch_id, len(records), stored


@router.post(
    "/batches",
    summary="Ingest a batch of records (idempotent by batch id)",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}
    },
    responses={
        201: {"description": "Stored."},
        200: {"description": "Already stored earlier under this id; nothing changed."},
        403: {
            "description": "Records of jobs another token created: `detail.recordIndexes` "
            "names them, `detail.jobIds` their jobs; nothing of the batch was stored."
        },
    },
    status_code=201,
)
async def post_batch(request: Request, identity: IdentityDep) -> JSONBody:
    body = await request.body()
    store: Store = request.app.state.store
    guard: Guard = request.app.state.auth

    def allow(records: Sequence[model.Record]) -> None:
        guard.check_records(identity, records)

    # Decoding and writing take milliseconds per thousand records: off the event loop.
    batch_id, count, stored = await run_in_threadpool(
        ingest, store, body, None if identity is None else allow
    )
    return JSONBody(
        {"id": batch_id, "records": count, "duplicate": not stored},
        status_code=201 if stored else 200,
    )
