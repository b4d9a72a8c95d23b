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

import gc
import operator
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import sqlalchemy as sa

from jobtrace import limits, model
from jobtrace.server.errors import APIError
from jobtrace.store import schema

__all__ = ["MAX_BATCH_ID", "Rejection", "collector_paused", "decode_batch", "rejection"]

MAX_BATCH_ID = 128

_HEX_RUN = re.compile(r"[0-9a-f]*")
_INT_LIMITS = {sa.BigInteger: 2**63, sa.Integer: 2**31}

#: A record left out of a lenient batch, as the response lists it:
#: ``{"index": int, "kind": str | None, "field": str | None, "message": str}``.
Rejection = dict[str, Any]

#: Returns a problem ("must be …") or None.
Check = Callable[[Any], "str | None"]
#: True only if the check passes every value of a column (of non-None values); False when
#: any might fail (the batch is then checked record by record, for the exact error).
ColumnCheck = Callable[[list[Any]], bool]
#: The column-at-a-time form of checks that have one; others run value by value.
_COLUMN_CHECKS: dict[Check, ColumnCheck] = {}


def _with_column(check: Check, column_check: ColumnCheck) -> Check:
    _COLUMN_CHECKS[check] = column_check
    return check


def _types(values: Iterable[Any]) -> set[type]:
    return set(map(type, values))


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

    def column(values: list[Any]) -> bool:
        if _types(values) != {str}:
            return False
        lengths = list(map(len, values))
        return (limit is None or max(lengths) <= limit) and (not nonempty or min(lengths) > 0)

    return _with_column(check, column)


def _integer(limit: int, low: int | None) -> Check:
    def check(v: Any) -> str | None:
        if type(v) is not int:
            return "must be an integer"
        if low is not None and v < low:
            return f"must be {low} or more"
        if not -limit <= v < limit:
            return "is out of range"
        return None

    def column(values: list[Any]) -> bool:
        lowest = -limit if low is None else max(low, -limit)
        return _types(values) == {int} and min(values) >= lowest and max(values) < limit

    return _with_column(check, column)


def _number(v: Any) -> str | None:
    t = type(v)
    return None if t is float or t is int else "must be a number"


_with_column(_number, lambda values: _types(values) <= {float, int})


def _epoch(v: Any) -> str | None:
    # Times the API renders as ISO-8601: bounded to what an ISO time in UTC can say.
    t = type(v)
    if t is not float and t is not int:
        return "must be a number"
    return limits.epoch_problem(v)


_with_column(
    _epoch,
    lambda values: (
        _types(values) <= {float, int}
        and min(values) >= limits.MIN_EPOCH
        and max(values) <= limits.MAX_EPOCH
    ),
)


def _anything(v: Any) -> str | None:
    return None


_with_column(_anything, lambda values: True)


def _one_of(values: tuple[str, ...]) -> Check:
    def check(v: Any) -> str | None:
        return None if v in values else f"must be one of {', '.join(values)}"

    allowed = set(values)
    return _with_column(check, lambda column: _types(column) == {str} and set(column) <= allowed)


def _hex(width: int) -> Check:
    regex = re.compile(f"[0-9a-f]{{{width}}}")

    def check(v: Any) -> str | None:
        return (
            None
            if type(v) is str and regex.fullmatch(v)
            else f"must be {width} lowercase hex digits"
        )

    def column(values: list[Any]) -> bool:
        if _types(values) != {str}:
            return False
        lengths = set(map(len, values))
        return lengths == {width} and _HEX_RUN.fullmatch("".join(values)) is not None

    return _with_column(check, column)


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
    (model.SPAN, "trace_id"): _hex(32),
    (model.SPAN, "span_id"): _hex(16),
    (model.SPAN, "parent_id"): _hex(16),
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
    table = schema.RECORD_TABLES[kind]
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
    fast = _decode_columns(items)
    if fast is not None:
        return batch_id, fast
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


_FIRST = operator.itemgetter(0)


def _decode_columns(items: list[Any]) -> list[model.Record] | None:
    """What the record-by-record decoding and checks return for a batch of well-formed
    arrays, a column at a time: the checks' column forms (``set``, ``min``, ``max``,
    ``join``) cost a few C-level passes per column instead of a Python call per field.

    Returns None whenever anything might be wrong, and the caller decodes record by record:
    so errors (which name the first bad record and field) are exactly the same.
    """
    try:
        if not items or _types(items) != {list}:
            return None
        kinds = list(map(_FIRST, items))
        distinct = dict.fromkeys(kinds)
        if not distinct.keys() <= model.FIELDS.keys():
            return None
        out: list[model.Record] = []
        if len(distinct) > 1:
            out = [()] * len(items)
        for kind in distinct:
            if len(distinct) == 1:
                positions: list[int] = []
                group = items
            else:
                positions = [i for i, k in enumerate(kinds) if k == kind]
                group = [items[i] for i in positions]
            records = _decode_kind(kind, group)
            if records is None:
                return None
            if not positions:
                return records
            for i, record in zip(positions, records, strict=True):
                out[i] = record
        return out
    except Exception:  # anything unexpected: the record-by-record path says what
        return None


def _decode_kind(kind: str, group: list[list[Any]]) -> list[model.Record] | None:
    """:func:`_decode_columns` for the arrays of one kind."""
    if set(map(len, group)) != {len(model.FIELDS[kind]) + 1}:
        return None
    columns: list[Sequence[Any]] = list(zip(*group, strict=True))
    for i in model.SPECIAL_POSITIONS.get(kind, ()):
        column = columns[i]
        if not _types(column) <= {float, type(None)}:
            columns[i] = [None if v is None else model.decode_float(v) for v in column]
    for position, _name, required, check in _PLANS[kind]:
        column = columns[position]
        values = column if None not in column else [v for v in column if v is not None]
        if required and len(values) < len(column):
            return None
        if not values:
            continue
        column_check = _COLUMN_CHECKS.get(check)
        if column_check is None:
            if any(map(check, values)):
                return None
        elif not column_check(list(values)):
            return None
    return list(zip(*columns, strict=True))


_paused = [0, True]  # batches in progress, whether the collector was on before the first
_paused_lock = threading.Lock()


@contextmanager
def collector_paused() -> Iterator[None]:
    """The garbage collector off while a batch is decoded and stored (the server's own
    process only, never a host program's).

    A batch of 20,000 records is some 40,000 containers (the parsed arrays, info dicts,
    the record tuples) alive until it is stored, none of which can form a cycle: meanwhile
    the collector would walk them dozens of times, for a third of the ingest's time.
    Concurrent batches count themselves in, so the last one out restores it.
    """
    with _paused_lock:
        if _paused[0] == 0:
            _paused[1] = gc.isenabled()
            gc.disable()
        _paused[0] += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused[0] -= 1
            if _paused[0] == 0 and _paused[1]:
                gc.enable()
