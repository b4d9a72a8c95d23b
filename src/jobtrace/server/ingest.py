"""Decoding and checking an ingest batch: ``{"id": "…", "records": [record, …]}``.

Records use the model's own codecs: an object (:func:`jobtrace.model.to_dict`, readable)
or an array in the record tuple's order (:func:`jobtrace.model.to_list`, what the
``http://`` sink sends: no keys to build or check). Either way: the recorder's fields,
epoch-second times, span ids as hex, special floats as ``"nan"``/``"inf"``/``"-inf"``. This
endpoint carries many thousands of records per request, so there is no per-record pydantic
model: orjson parses the body and checks derived once from the store's schema (type,
length, required) plus a few rules of the data model run on plain tuples.

Strict (the default), a batch is all or nothing: the first bad record fails it with a 422
naming the record's index, kind and field, and nothing of it is stored. Lenient (the
``http://`` sink's choice, see :mod:`jobtrace.server.routes.batches`), every bad record is
listed as a :data:`Rejection` and left out, and the rest goes on to the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson
import sqlalchemy as sa

from jobtrace import limits, model
from jobtrace.server.errors import APIError
from jobtrace.store import schema

__all__ = ["MAX_BATCH_ID", "Rejection", "decode_batch", "rejection"]

MAX_BATCH_ID = 128

#: The table each record kind is stored in; its columns say what a field may hold.
_TABLES: dict[str, sa.Table] = {
    model.EXPERIMENT: schema.experiments,
    model.JOB: schema.jobs,
    model.METRIC: schema.metrics,
    model.SPAN: schema.spans,
    model.ITEM: schema.items,
    model.SERIES: schema.series,
    model.PROFILE: schema.profiles,
}
_HEX_32 = re.compile(r"[0-9a-f]{32}")
_HEX_16 = re.compile(r"[0-9a-f]{16}")
_INT_LIMITS = {sa.BigInteger: 2**63, sa.Integer: 2**31}

#: A record left out of a lenient batch, as the response lists it:
#: ``{"index": int, "kind": str | None, "field": str | None, "message": str}``.
Rejection = dict[str, Any]

#: Returns a problem ("must be …") or None.
Check = Callable[[Any], "str | None"]


def _string(limit: int | None, nonempty: bool) -> Check:
    # Only keys have a limit here: other text is cut, and NUL replaced, by the store writer
    # (jobtrace.limits), exactly as for a record written by the library itself.
    def check(v: Any) -> str | None:
        if type(v) is not str:
            return "must be a string"
        if limit is not None and len(v) > limit:
            return f"must be at most {limit} characters (got {len(v)})"
        if nonempty and not v:
            return "must not be empty"
        return None

    return check


def _integer(limit: int, low: int | None) -> Check:
    def check(v: Any) -> str | None:
        if type(v) is not int:
            return "must be an integer"
        if low is not None and v < low:
            return f"must be {low} or more"
        if not -limit <= v < limit:
            return "is out of range"
        return None

    return check


def _number(v: Any) -> str | None:
    t = type(v)
    return None if t is float or t is int else "must be a number"


def _epoch(v: Any) -> str | None:
    # Times the API renders as ISO-8601: bounded to what an ISO time in UTC can say.
    t = type(v)
    if t is not float and t is not int:
        return "must be a number"
    return limits.epoch_problem(v)


def _anything(v: Any) -> str | None:
    return None


def _one_of(values: tuple[str, ...]) -> Check:
    def check(v: Any) -> str | None:
        return None if v in values else f"must be one of {', '.join(values)}"

    return check


def _pattern(regex: re.Pattern[str], what: str) -> Check:
    def check(v: Any) -> str | None:
        return None if type(v) is str and regex.fullmatch(v) else f"must be {what}"

    return check


# Rules of the data model beyond column types: (kind, field) → check.
_RULES: dict[tuple[str, str], Check] = {
    (model.JOB, "status"): _one_of(model.JOB_STATUSES),
    (model.ITEM, "status"): _one_of(model.ITEM_STATUSES),
    (model.METRIC, "step"): _integer(2**63, 0),
    (model.METRIC, "timestamp"): _epoch,
    (model.JOB, "start_time"): _epoch,
    (model.JOB, "end_time"): _epoch,
    (model.JOB, "last_heartbeat"): _epoch,
    (model.EXPERIMENT, "created_at"): _epoch,
    (model.ITEM, "start_time"): _epoch,
    (model.SERIES, "updated_at"): _epoch,
    (model.PROFILE, "created_at"): _epoch,
    (model.SPAN, "trace_id"): _pattern(_HEX_32, "32 lowercase hex digits"),
    (model.SPAN, "span_id"): _pattern(_HEX_16, "16 lowercase hex digits"),
    (model.SPAN, "parent_id"): _pattern(_HEX_16, "16 lowercase hex digits"),
}
# Keys and names that must not be empty strings.
_NONEMPTY = {
    (model.JOB, "id"),
    (model.METRIC, "job_id"),
    (model.METRIC, "name"),
    (model.EXPERIMENT, "name"),
    (model.ITEM, "id"),
    (model.SERIES, "name"),
    (model.PROFILE, "id"),
}


#: Fields required although their column is nullable: a metric's value is split into two
#: nullable columns (``value``, ``special``), yet a point without one is meaningless.
_REQUIRED = {(model.METRIC, "value")}


def _column_check(kind: str, column: sa.Column[Any]) -> Check:
    rule = _RULES.get((kind, column.name))
    if rule is not None:
        return rule
    kind_type = column.type
    if isinstance(kind_type, sa.String):  # Text is a String without a length
        bound = limits.text_limit(kind, column.name)
        limit = bound[0] if bound is not None and bound[1] else None
        return _string(limit, (kind, column.name) in _NONEMPTY)
    if isinstance(kind_type, sa.Integer):
        return _integer(_INT_LIMITS.get(type(kind_type), 2**63), None)
    if isinstance(kind_type, sa.Float):
        return _number
    return _anything  # JSON documents


def _plan(kind: str) -> tuple[tuple[int, str, bool, Check], ...]:
    table = _TABLES[kind]
    return tuple(
        (
            position,
            name,
            not table.c[name].nullable or (kind, name) in _REQUIRED,
            _column_check(kind, table.c[name]),
        )
        for position, name in enumerate(model.FIELDS[kind], 1)
    )


_PLANS = {kind: _plan(kind) for kind in model.FIELDS}


def _bad(index: int, kind: str | None, field: str | None, problem: str) -> APIError:
    what = f"record {index}" + (f" ({kind})" if kind else "")
    where = f" field {field!r}" if field else ""
    return APIError(
        422,
        f"{what}{where} {problem}" if field else f"{what}: {problem}",
        kind="invalid_record",
        detail={"index": index, "kind": kind, "field": field},
    )


def rejection(index: int, kind: str | None, field: str | None, message: str) -> Rejection:
    """One entry of a lenient batch's ``rejected`` list."""
    return {"index": index, "kind": kind, "field": field, "message": message}


def check_record(record: model.Record, index: int) -> None:
    """Raise a 422 naming ``record``'s first bad field."""
    kind = record[0]
    for position, name, required, check in _PLANS[kind]:
        value = record[position]
        if value is None:
            if required:
                raise _bad(index, kind, name, "is required")
            continue
        problem = check(value)
        if problem is not None:
            raise _bad(index, kind, name, problem)


def _kind_of(item: Any) -> str | None:
    kind = (
        item.get("kind")
        if isinstance(item, dict)
        else item[0]
        if item and isinstance(item, list)
        else None
    )
    return kind if isinstance(kind, str) else None


def decode_batch(
    body: bytes, rejected: list[Rejection] | None = None
) -> tuple[str, list[model.Record]]:
    """(batch id, records) from a request body, or an :class:`APIError` (400 or 422).

    Given a ``rejected`` list (lenient), a bad record is appended to it and left out of the
    records instead of failing the batch; a bad envelope fails it either way.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise APIError(
            400, f"the request body is not valid JSON: {exc}", kind="malformed_json"
        ) from None
    if not isinstance(data, dict):
        raise APIError(422, 'a batch must be an object: {"id": "…", "records": […]}')
    unknown = set(data) - {"id", "records"}
    if unknown:
        raise APIError(422, f"unknown batch field(s): {', '.join(sorted(unknown))}")
    batch_id = data.get("id")
    if type(batch_id) is not str or not 0 < len(batch_id) <= MAX_BATCH_ID:
        raise APIError(
            422,
            f"a batch needs an id: a string of 1 to {MAX_BATCH_ID} characters, unique per "
            "batch (a retry sends the same id)",
            detail={"field": "id"},
        )
    items = data.get("records")
    if type(items) is not list:
        raise APIError(422, "a batch needs records: a list of record objects or arrays")
    records: list[model.Record] = []
    append = records.append
    from_dict, from_list = model.from_dict, model.from_list
    for index, item in enumerate(items):
        try:
            record = from_list(item) if type(item) is list else from_dict(item)
            check_record(record, index)
        except model.RecordError as exc:
            if rejected is None:
                raise _bad(index, _kind_of(item), None, str(exc)) from None
            rejected.append(rejection(index, _kind_of(item), None, str(exc)))
            continue
        except APIError as exc:
            if rejected is None:
                raise
            rejected.append({**exc.error_detail, "message": exc.message})
            continue
        append(record)
    return batch_id, records
