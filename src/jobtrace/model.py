"""Record types that travel from the API through the recorder to a sink, and their codecs.

On the hot path a record is a plain tuple whose first element names its kind and whose
other elements follow that kind's field order in :data:`FIELDS` — a tuple literal costs a
fraction of any object construction. Off the hot path (spool files, JSON-lines sinks, the
HTTP wire) a record is a dict with a ``"kind"`` key, via :func:`to_dict` / :func:`from_dict`,
or — where volume matters more than reading it (the ``http://`` sink's batches) — a JSON
array in the tuple's own order, via :func:`to_list` / :func:`from_list`.

Floats that JSON cannot carry (NaN, +Inf, -Inf) travel as the strings ``"nan"``, ``"inf"``
and ``"-inf"`` (Dioptra's convention) and are stored exactly, never clamped.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any, Final

from jobtrace._config import load_speedups
from jobtrace.errors import JobtraceError
from jobtrace.limits import cap_doc, cap_text, cap_text_tail

_speedups = load_speedups()

__all__ = [
    "EXPERIMENT",
    "FIELDS",
    "ITEM",
    "ITEM_STATUSES",
    "JOB",
    "JOB_STATUSES",
    "METRIC",
    "PROFILE",
    "SERIES",
    "SPAN",
    "SPAN_HEX_IDS",
    "SPECIAL_POSITIONS",
    "Record",
    "RecordError",
    "clean",
    "clean_text",
    "complete",
    "decode_float",
    "encode_float",
    "error_type_name",
    "from_dict",
    "from_list",
    "hex_ids",
    "split_float",
    "to_dict",
    "to_list",
    "to_lists",
    "traceback_text",
]

Record = tuple[Any, ...]

JOB: Final = "job"
METRIC: Final = "metric"
SPAN: Final = "span"
ITEM: Final = "item"
SERIES: Final = "series"
PROFILE: Final = "profile"
EXPERIMENT: Final = "experiment"

JOB_STATUSES: Final = ("running", "succeeded", "failed", "killed", "lost")
ITEM_STATUSES: Final = ("success", "error", "skipped")

#: Field order of each record kind (the tuple's elements after the kind).
FIELDS: Final[dict[str, tuple[str, ...]]] = {
    # A job record is a full snapshot; `seq` grows with every snapshot of one job so a
    # late-arriving older snapshot (a replayed spool) never overwrites a newer one.
    JOB: (
        "id",
        "seq",
        "name",
        "experiment",
        "status",
        "start_time",
        "end_time",
        "duration",
        "peak_memory_kb",
        "cpu_user",
        "cpu_sys",
        "exit_code",
        "error_type",
        "error_message",
        "host",
        "pid",
        "argv",
        "tags",
        "params",
        "last_heartbeat",
        "heartbeat_interval",
        "report_dir",
        # {kind: count} of this job's records the recorder had to drop (spool full), or None.
        "records_dropped",
        # The formatted traceback of the exception a failed job ended with, or None.
        "traceback",
    ),
    METRIC: ("job_id", "name", "step", "value", "timestamp"),
    SPAN: (
        "trace_id",
        "span_id",
        "parent_id",
        "name",
        "start_ns",
        "duration_ns",
        "info",
        "error_type",
        "error_message",
        "job_id",
        "host",
        "pid",
        "thread",
        # Which service (process role) ran the span: a per-process setting, see
        # jobtrace.tracing.spans.service(); last, so spans from older clients may omit it.
        "service",
    ),
    ITEM: (
        "id",
        "job_id",
        "name",
        "start_time",
        "duration",
        "samples",
        "measurements",
        "bytes",
        "status",
        "error_type",
        "error_message",
        "memory_peak_kb",
        "info",
    ),
    # One process's latest state of one instrument series; `source` names the process.
    SERIES: (
        "source",
        "job_id",
        "name",
        "type",
        "mode",
        "labels",
        "value",
        "data",
        "updated_at",
    ),
    PROFILE: ("id", "job_id", "type", "format", "data", "created_at"),
    EXPERIMENT: ("name", "description", "tags", "created_at"),
}

# Span ids travel as ints from the hot path (hex formatting is done off it) and as
# fixed-width lowercase hex everywhere else.
SPAN_HEX_IDS: Final = (("trace_id", "032x"), ("span_id", "016x"), ("parent_id", "016x"))

# Fields holding floats that may be NaN or infinite and must survive JSON.
_SPECIAL_FLOAT_FIELDS: Final = {METRIC: ("value",), SERIES: ("value",)}
_SPECIAL_NAMES: Final = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class RecordError(JobtraceError, ValueError):
    """A record dict could not be decoded."""


def _shown(value: object) -> str:
    """``value`` for an error message, bounded: the repr of a scalar (strings cut), the type
    of anything else (a document's repr may be megabytes, or too deep to make)."""
    if isinstance(value, str):
        return repr(value if len(value) <= 64 else value[:61] + "...")
    if value is None or isinstance(value, bool | int | float):
        text = repr(value)
        return text if len(text) <= 64 else text[:61] + "..."
    return f"a value of type {type(value).__name__}"


def encode_float(value: float) -> float | str:
    """A JSON-safe form: finite floats unchanged, specials as ``"nan"``, ``"inf"``, ``"-inf"``."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def decode_float(value: float | int | str) -> float:
    """Inverse of :func:`encode_float`; raises :class:`RecordError` for anything else."""
    if isinstance(value, bool):
        raise RecordError(f"expected a number, got {_shown(value)}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        special = _SPECIAL_NAMES.get(value.strip().lower())
        if special is not None:
            return special
    raise RecordError(f"expected a number or one of 'nan', 'inf', '-inf', got {_shown(value)}")


def split_float(value: float) -> tuple[float | None, str | None]:
    """Split a float into the store's two columns: (finite value or None, special name or None).

    SQLite turns NaN into NULL, so specials live in their own column on every backend.
    """
    if math.isfinite(value):
        return value, None
    encoded = encode_float(value)
    assert isinstance(encoded, str)
    return None, encoded


def clean_text(text: str, limit: int | None = None) -> str:
    """Text every store and encoder accepts: lone surrogates (from undecodable bytes in file
    names or argv) become backslash escapes, NUL characters become U+FFFD, and the result is
    cut to ``limit`` characters (see :func:`jobtrace.limits.cap_text`)."""
    return cap_text(text, limit)


def clean(value: Any) -> Any:
    """``value`` as a bounded JSON document: :func:`clean_text` applied through dicts, lists
    and tuples (keys included), nesting and sizes capped (see :func:`jobtrace.limits.cap_doc`)."""
    return cap_doc(value)


def error_type_name(exc: BaseException) -> str:
    """``ValueError`` for builtins, ``package.module.Error`` for everything else."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def traceback_text(exc: BaseException) -> str | None:
    """``exc``'s traceback as Python prints it (causes and contexts included), cut to
    :data:`jobtrace.limits.MAX_TRACEBACK` keeping its end; None when ``exc`` has no traceback
    (it was never raised) or it cannot be formatted. Never raises."""
    if exc.__traceback__ is None:
        return None
    import traceback  # at a job's failure only: `import jobtrace` stays light

    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:  # a broken exception object must not break the job's end
        return None
    return cap_text_tail(text)


def to_dict(record: Record) -> dict[str, Any]:
    """Encode a record tuple as a JSON-safe dict with a ``"kind"`` key."""
    kind = record[0]
    out: dict[str, Any] = {"kind": kind}
    out.update(zip(FIELDS[kind], record[1:], strict=True))
    for name in _SPECIAL_FLOAT_FIELDS.get(kind, ()):
        value = out[name]
        if isinstance(value, float):
            out[name] = encode_float(value)
    if kind == SPAN:
        for name, fmt in SPAN_HEX_IDS:
            if type(out[name]) is int:
                out[name] = format(out[name], fmt)
    return out


def from_dict(data: object) -> Record:
    """Decode a dict made by :func:`to_dict` (missing fields become ``None``)."""
    if not isinstance(data, Mapping):
        raise RecordError(f"a record must be an object, got {type(data).__name__}")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in FIELDS:
        raise RecordError(
            f"unknown record kind {_shown(kind)}; expected one of {', '.join(FIELDS)}"
        )
    fields = FIELDS[kind]
    unknown = set(data) - set(fields) - {"kind"}
    if unknown:
        raise RecordError(f"unknown field(s) for a {kind} record: {', '.join(sorted(unknown))}")
    values = [data.get(name) for name in fields]
    specials: tuple[str, ...] = _SPECIAL_FLOAT_FIELDS.get(kind, ())
    for name in specials:
        index = fields.index(name)
        value = values[index]
        if value is not None:
            values[index] = decode_float(value)
    return (kind, *values)


#: Trailing fields added to a kind after its wire form shipped: a record may leave them out.
_OPTIONAL_TAIL: Final = {JOB: 2, SPAN: 1}

_SIZES: Final = {kind: len(fields) + 1 for kind, fields in FIELDS.items()}


def complete(records: list[Record]) -> list[Record]:
    """``records`` with trailing fields added since they were written (a spool written by
    an older version, replayed after an upgrade) filled with None; the list itself when
    every record is whole, as it is unless jobtrace was upgraded in between."""
    sizes = _SIZES
    if all(len(r) == sizes.get(r[0], len(r)) for r in records):
        return records
    out = []
    for r in records:
        missing = sizes.get(r[0], len(r)) - len(r)
        out.append((*r, *(None,) * missing) if 0 < missing <= _OPTIONAL_TAIL.get(r[0], 0) else r)
    return out


#: Tuple positions (kind at 0) of the fields holding special floats, by kind.
SPECIAL_POSITIONS: Final = {
    kind: tuple(FIELDS[kind].index(name) + 1 for name in names)
    for kind, names in _SPECIAL_FLOAT_FIELDS.items()
}
_HEX_POSITIONS: Final = tuple((FIELDS[SPAN].index(name) + 1, fmt) for name, fmt in SPAN_HEX_IDS)


def to_list(record: Record) -> Record:
    """A record as a JSON-safe sequence in its tuple order (``[kind, field, …]`` in JSON):
    special floats as strings, span ids as hex. Cheaper than :func:`to_dict` on both ends."""
    kind = record[0]
    positions = SPECIAL_POSITIONS.get(kind)
    if positions is not None:
        for i in positions:
            value = record[i]
            if type(value) is float and not math.isfinite(value):
                record = (*record[:i], encode_float(value), *record[i + 1 :])
    elif kind == SPAN:
        for i, fmt in _HEX_POSITIONS:
            if type(record[i]) is int:
                record = (*record[:i], format(record[i], fmt), *record[i + 1 :])
    return record


def hex_ids(column: Sequence[Any], fmt: str) -> list[Any]:
    """``[format(v, fmt) if type(v) is int else v for v in column]`` for span id columns
    (``fmt`` from :data:`SPAN_HEX_IDS`): hex strings and None are kept as they are."""
    if _speedups is not None:
        return _speedups.hex_ids(column, fmt)  # type: ignore[no-any-return]
    distinct = dict.fromkeys(column)
    if len(distinct) * 2 > len(column):  # mostly distinct (span ids): format every one
        try:
            return list(map(f"%{fmt}".__mod__, column))
        except TypeError:  # None, or strings already
            return [format(v, fmt) if type(v) is int else v for v in column]
    # A trace's spans share its id, siblings their parent's: format each distinct id once.
    formatted = {v: format(v, fmt) if type(v) is int else v for v in distinct}
    return list(map(formatted.__getitem__, column))


def to_lists(records: Sequence[Record]) -> list[Record]:
    """:func:`to_list` of every record, in order; spans cost a column at a time."""
    kinds = list(map(_KIND, records))
    distinct = set(kinds)
    out = list(records)
    if SPAN in distinct:
        spans = (
            range(len(out))
            if len(distinct) == 1
            else [i for i, kind in enumerate(kinds) if kind == SPAN]
        )
        group = out if len(distinct) == 1 else [out[i] for i in spans]
        # Only the id columns are taken out and formatted; each record is then its new ids
        # plus the slice of fields after them (no transposing of the other ten fields).
        ids = [hex_ids(list(map(operator.itemgetter(i), group)), fmt) for i, fmt in _HEX_POSITIONS]
        heads = zip(itertools.repeat(SPAN, len(group)), *ids, strict=True)
        converted = list(map(operator.add, heads, map(_AFTER_IDS, group)))
        if len(distinct) == 1:
            return converted
        for i, record in zip(spans, converted, strict=True):
            out[i] = record
    if not distinct.isdisjoint(SPECIAL_POSITIONS):
        for i, kind in enumerate(kinds):
            if kind in SPECIAL_POSITIONS:
                out[i] = to_list(out[i])
    return out


_KIND = operator.itemgetter(0)
# The span ids are the fields right after the kind (a record's slice after them is kept).
assert [i for i, _ in _HEX_POSITIONS] == list(range(1, len(_HEX_POSITIONS) + 1))
_AFTER_IDS = operator.itemgetter(slice(len(_HEX_POSITIONS) + 1, None))


def from_list(data: object) -> Record:
    """Decode a sequence made by :func:`to_list`; raises :class:`RecordError`."""
    if not isinstance(data, list | tuple) or not data:
        raise RecordError(f"a record must be a non-empty array, got {type(data).__name__}")
    kind = data[0]
    if not isinstance(kind, str) or kind not in FIELDS:
        raise RecordError(
            f"unknown record kind {_shown(kind)}; expected one of {', '.join(FIELDS)}"
        )
    fields = FIELDS[kind]
    missing = len(fields) + 1 - len(data)
    if 0 < missing <= _OPTIONAL_TAIL.get(kind, 0):
        data = [*data, *(None,) * missing]  # a client from before these fields existed
    if len(data) != len(fields) + 1:
        raise RecordError(
            f"a {kind} record has {len(fields)} fields ({', '.join(fields)}), got {len(data) - 1}"
        )
    values = list(data)
    for i in SPECIAL_POSITIONS.get(kind, ()):
        if values[i] is not None:
            values[i] = decode_float(values[i])
    return tuple(values)
