"""``POST /batches``: many records of every kind in one request, stored exactly once.

This is what the ``http://`` sink calls. The batch's id is written in the same transaction
as its rows (:meth:`jobtrace.store.Store.write`), so a retried batch — after a timeout, a
lost response, a replay from a spool — is acknowledged again but not stored twice.

Two ways to handle a bad record, chosen by the request's ``Prefer`` header (RFC 7240):

- Strict (the default): all or nothing. The first record that fails a check, or that the
  store itself refuses (a NUL character in a JSON document on PostgreSQL, say), fails the
  batch with a 422 ``invalid_record`` whose ``detail`` is ``{"index", "kind", "field"}``
  (``field`` is null for a store refusal); nothing of it is stored.
- ``Prefer: handling=lenient`` (what the sink sends): the server drops each bad record
  itself and stores the rest, with the batch id, in one transaction. The answer is the
  usual 201 (200 for a batch id stored before), with the header
  ``Preference-Applied: handling=lenient`` and a ``rejected`` list in the body:
  ``[{"index", "kind", "field", "message"}, …]``, ``index`` counting from 0 in the batch
  as sent. A client drops just those records: one bad record never holds up the batch
  it came in, nor any batch after it.
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
from jobtrace.server.ingest import (
    MAX_BATCH_ID,
    Rejection,
    collector_paused,
    decode_batch,
    rejection,
)
from jobtrace.server.wire import JSONBody
from jobtrace.store.core import Store

__all__ = ["LENIENT", "ingest", "router"]

router = APIRouter(tags=["ingest"])

#: The ``Prefer`` token (RFC 7240, section 4.4) asking for per-record handling.
LENIENT = "handling=lenient"

_RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["kind"],
    "properties": {"kind": {"enum": sorted(model.FIELDS)}},
    "description": "A record in jobtrace's codec (jobtrace.model.to_dict): the "
    "kind's fields, epoch-second times, special floats as 'nan', 'inf', '-inf'.",
}
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
        "records": {"type": "array", "items": _RECORD_SCHEMA},
    },
}
_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "records", "duplicate"],
    "properties": {
        "id": {"type": "string"},
        "records": {"type": "integer", "description": "Records in the batch as sent."},
        "duplicate": {"type": "boolean"},
        "rejected": {
            "type": "array",
            "description": "Lenient handling only: the records left out, each named by its "
            "0-based index in the batch as sent, with the reason.",
            "items": {
                "type": "object",
                "required": ["index", "kind", "field", "message"],
                "properties": {
                    "index": {"type": "integer"},
                    "kind": {"type": ["string", "null"]},
                    "field": {"type": ["string", "null"]},
                    "message": {"type": "string"},
                },
            },
        },
    },
}
_DESCRIPTION = (
    "Stores a batch exactly once per id. By default a batch is all or nothing: the first "
    "bad record (a failed check, or a record the store refuses) fails it with a 422 "
    "`invalid_record` whose `detail` names its `index`, `kind` and `field`. With the header "
    "`Prefer: handling=lenient`, bad records are dropped by the server, the rest is stored, "
    "and the answer (201, or 200 for a duplicate; header `Preference-Applied: "
    "handling=lenient`) lists the dropped records in `rejected`."
)


def ingest(
    store: Store,
    body: bytes,
    lenient: bool = False,
    allow: Callable[[Sequence[model.Record], Sequence[int] | None], None] | None = None,
) -> dict[str, Any]:
    """Decode, check and store one batch; the response body (see the module docstring).
    ``allow(records, sent)`` raises to refuse the batch before anything is written;
    ``sent`` maps the records to their indexes in the batch as sent (None: the same)."""
    # The collector paused: see collector_paused (a batch is many short-lived containers).
    with collector_paused():
        return _ingest(store, body, lenient, allow)


def _ingest(
    store: Store,
    body: bytes,
    lenient: bool,
    allow: Callable[[Sequence[model.Record], Sequence[int] | None], None] | None,
) -> dict[str, Any]:
    from jobtrace.store.writer import RecordsRefused, _is_data_error

    rejected: list[Rejection] | None = [] if lenient else None
    batch_id, records = decode_batch(body, rejected)
    if allow is not None:
        allow(records, _sent_positions(len(records), rejected) if rejected else None)
    if rejected is None:
        try:
            stored = store.write(records, batch_id)
        except RecordsRefused as exc:
            first = exc.refused[0]
            kind = records[first.position][0]
            raise APIError(
                422,
                f"record {first.position} ({kind}) was refused by the store: {first.message}",
                kind="invalid_record",
                detail={"index": first.position, "kind": kind, "field": None},
            ) from exc
        except StoreError as exc:
            if exc.__cause__ is not None and _is_data_error(exc.__cause__):
                raise APIError(422, str(exc), kind="invalid_record") from exc
            raise
        return {"id": batch_id, "records": len(records), "duplicate": not stored}
    sent = len(records) + len(rejected)
    result = store.write_partial(records, batch_id)
    if result.refused:
        # Refusals index the checked records; the client counts in the batch it sent.
        positions = _sent_positions(len(records), rejected)
        for refusal in result.refused:
            index, kind = positions[refusal.position], records[refusal.position][0]
            reason = f"record {index} ({kind}) was refused by the store: {refusal.message}"
            rejected.append(rejection(index, kind, None, reason))
        rejected.sort(key=lambda r: int(r["index"]))
    return {"id": batch_id, "records": sent, "duplicate": not result.stored, "rejected": rejected}


def _sent_positions(kept: int, rejected: Sequence[Rejection]) -> list[int]:
    """Each kept record's index in the batch as sent, the ``rejected`` ones left out."""
    dropped = {r["index"] for r in rejected}
    return [i for i in range(kept + len(rejected)) if i not in dropped]


def _lenient(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(p.strip().lower() == LENIENT for p in prefer.replace(";", ",").split(","))


@router.post(
    "/batches",
    summary="Ingest a batch of records (idempotent by batch id)",
    description=_DESCRIPTION,
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}
    },
    responses={
        201: {
            "description": "Stored (lenient: minus the records listed in `rejected`).",
            "content": {"application/json": {"schema": _RESULT_SCHEMA}},
        },
        200: {
            "description": "Already stored earlier under this id; nothing changed.",
            "content": {"application/json": {"schema": _RESULT_SCHEMA}},
        },
        422: {"description": "Strict handling: a bad record, named in `detail`; nothing stored."},
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
    lenient = _lenient(request)
    guard: Guard = request.app.state.auth

    def allow(records: Sequence[model.Record], sent: Sequence[int] | None) -> None:
        guard.check_records(identity, records, sent)

    # Decoding and writing take milliseconds per thousand records: off the event loop.
    result = await run_in_threadpool(
        ingest, store, body, lenient, None if identity is None else allow
    )
    return JSONBody(
        result,
        status_code=200 if result["duplicate"] else 201,
        headers={"Preference-Applied": LENIENT} if lenient else None,
    )
