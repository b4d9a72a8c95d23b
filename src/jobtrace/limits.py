"""Every bound on what jobtrace stores, in one place, and the functions that apply them.

The same limits hold on every path a record takes — the library into a SQLite or
PostgreSQL store, the library through a server, and the REST routes — because they are
applied where every path meets: the store writer's row building
(:func:`screen` and :func:`doc_dumper`, called by :mod:`jobtrace.store.writer` on its own
thread, never on the caller's), with the server's ingest checks derived from the same
tables (:func:`text_limit`). The rules:

==========================  =================================================================
what                        rule
==========================  =================================================================
**keys** (job, item and     longer than the limit → the record is **refused**: a 422 naming
profile ids, metric names,  the field from the server, dropped and counted (one log line)
experiment names, series    in the library. Cutting a key would silently merge two
source/name/labels)         different things.
**other text** (span, job   longer than the limit → **truncated** to the limit, ending in
and item names, hosts,      :data:`TRUNCATED`.
error types and messages)
**tracebacks** (a failed    longer than :data:`MAX_TRACEBACK` → the **start** is cut (at a
job's ``traceback``)        line) behind a marker line: the innermost frames and the error
                            itself are at the end, and that is what a reader needs.
**NUL characters**          **replaced** by :data:`NUL_REPLACEMENT` (U+FFFD) in every string
                            (names, text, document keys and values): PostgreSQL cannot store
                            NUL, and dropping it (as before) made ``"a\\0b"`` and ``"ab"`` the
                            same name.
**documents** (info,        nesting deeper than :data:`MAX_DEPTH` → the deeper part becomes
tags, params, argv,         :data:`TRUNCATED`; more than :data:`MAX_KEYS` keys or elements
series data)                in one object or array → the rest become one ``TRUNCATED`` entry;
                            strings over :data:`MAX_DOC_STRING` truncated; integers outside
                            64 bits become strings; a document still over
                            :data:`MAX_DOC_CHARS` of JSON becomes ``{TRUNCATED: preview}``.
**times**                   epoch seconds in :data:`MIN_EPOCH` … :data:`MAX_EPOCH` (years 1
                            to 9999, what ISO-8601 in UTC can say): outside → refused (422
                            naming the field; ``log_metric`` drops and counts the point).
**steps, counts**           integers 0 … :data:`MAX_INT` (a signed 64-bit column); anything
                            larger → refused (422 naming the field).
**non-finite numbers**      only metric and series values may be NaN/±Inf, and only as the
                            strings ``"nan"``, ``"inf"``, ``"-inf"``; a JSON number that
                            overflows a double (``1e400``) is refused, not read as ``inf``.
**instrument series**       at most :data:`MAX_SERIES_PER_NAME` label sets per metric name
                            and :data:`MAX_SERIES_PER_SOURCE` per source, in a process and in
                            a server's ``/metrics``; the rest are counted, not kept.
==========================  =================================================================

The text limits are the store's column widths; a test keeps :data:`TEXT_LIMITS` equal to
:mod:`jobtrace.store.schema` (imported here it would load SQLAlchemy into every job).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any, Final

__all__ = [
    "DOC_FIELDS",
    "MAX_DEPTH",
    "MAX_DOC_CHARS",
    "MAX_DOC_STRING",
    "MAX_EPOCH",
    "MAX_INT",
    "MAX_KEYS",
    "MAX_LABELS",
    "MAX_SERIES_PER_NAME",
    "MAX_SERIES_PER_SOURCE",
    "MAX_TEXT",
    "MAX_TRACEBACK",
    "MIN_EPOCH",
    "NUL_REPLACEMENT",
    "SHORT_DOC",
    "TEXT_LIMITS",
    "TRUNCATED",
    "Refusal",
    "any_may_break_bounds",
    "cap_doc",
    "cap_record",
    "cap_text",
    "cap_text_tail",
    "doc_dumper",
    "epoch_problem",
    "may_break_bounds",
    "screen",
    "text_limit",
]

#: Ends a truncated string; stands for a cut part of a document.
TRUNCATED: Final = "…"
#: What a NUL character becomes, everywhere.
NUL_REPLACEMENT: Final = "\ufffd"

#: Free text without a column width (error messages, descriptions, item names).
MAX_TEXT: Final = 65_536
#: Longest traceback kept (its end: see :func:`cap_text_tail`).
MAX_TRACEBACK: Final = 65_536
#: Deepest nesting kept in a JSON document (info, tags, params, series data).
MAX_DEPTH: Final = 32
#: Most keys of one object (or elements of one array) kept in a document.
MAX_KEYS: Final = 1_000
#: Longest string kept inside a document.
MAX_DOC_STRING: Final = 65_536
#: Longest JSON text of a whole document.
MAX_DOC_CHARS: Final = 1_048_576
#: Characters of the JSON kept as a preview when a whole document is over the limit.
_PREVIEW: Final = 1_024

#: Largest integer a step, count or size may be (the store's signed 64-bit columns).
MAX_INT: Final = 2**63 - 1
#: Epoch seconds of 0001-01-02 and 9999-12-30 UTC: any time between has an ISO form in UTC.
MIN_EPOCH: Final = -62135510400.0
MAX_EPOCH: Final = 253402128000.0

#: Longest label set of one instrument series, as its JSON text.
MAX_LABELS: Final = 4_096
#: Instrument series (label sets) kept per metric name, and per source (process).
MAX_SERIES_PER_NAME: Final = 1_000
MAX_SERIES_PER_SOURCE: Final = 10_000

_ID, _NAME, _LONG_NAME, _SHORT = 128, 256, 512, 16
#: Text fields of each record kind: field → (limit, is_key). Keys are refused when too
#: long, other text is truncated (see the module docstring).
TEXT_LIMITS: Final[dict[str, dict[str, tuple[int, bool]]]] = {
    "experiment": {"name": (_NAME, True), "description": (MAX_TEXT, False)},
    "job": {
        "id": (_ID, True),
        "name": (_LONG_NAME, False),
        # A reference to an experiment, whose name is a key: refused, not cut.
        "experiment": (_NAME, True),
        "error_type": (_NAME, False),
        "error_message": (MAX_TEXT, False),
        "host": (_NAME, False),
        "report_dir": (MAX_TEXT, False),
        "traceback": (MAX_TRACEBACK, False),
    },
    "metric": {"job_id": (_ID, True), "name": (_NAME, True)},
    "span": {
        "name": (_LONG_NAME, False),
        "error_type": (_NAME, False),
        "error_message": (MAX_TEXT, False),
        "job_id": (_ID, False),
        "host": (_NAME, False),
        "thread": (_NAME, False),
        "service": (_NAME, False),
    },
    "item": {
        "id": (_ID, True),
        "job_id": (_ID, True),
        "name": (MAX_TEXT, False),
        "error_type": (_NAME, False),
        "error_message": (MAX_TEXT, False),
    },
    "series": {
        "source": (_NAME, True),
        "job_id": (_ID, False),
        "name": (_NAME, True),
        # The label set as JSON: a key, and what every scrape carries.
        "labels": (MAX_LABELS, True),
        "type": (_SHORT, True),
        "mode": (_SHORT, False),
    },
    "profile": {
        "id": (_ID, True),
        "job_id": (_ID, True),
        "type": (32, True),
        "format": (32, True),
    },
}
#: JSON document fields of each record kind (a test keeps them equal to the writer's).
DOC_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "experiment": ("tags",),
    "job": ("argv", "tags", "params", "records_dropped"),
    "span": ("info",),
    "item": ("info",),
    "series": ("data",),
}


def text_limit(kind: str, field: str) -> tuple[int, bool] | None:
    """(limit, is_key) of a text field of a record kind, or None for other fields."""
    return TEXT_LIMITS.get(kind, {}).get(field)


def cap_text(text: str, limit: int | None = None) -> str:
    """Text every store and encoder accepts: lone surrogates (from undecodable bytes in file
    names or argv) become backslash escapes, NUL becomes :data:`NUL_REPLACEMENT`, and text
    over ``limit`` characters is cut to ``limit``, ending in :data:`TRUNCATED`."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\x00" in text:
        text = text.replace("\x00", NUL_REPLACEMENT)
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


# Room for cap_text_tail's marker line.
_TAIL_MARKER_ROOM: Final = 80
#: Text fields whose end matters more than their start: over the limit, the start is cut.
_TAIL_KEPT: Final = frozenset({("job", "traceback")})


def cap_text_tail(text: str, limit: int = MAX_TRACEBACK) -> str:
    """:func:`cap_text` for text whose end matters most (a traceback: the innermost frames
    and the error come last): over ``limit`` characters, the start is cut at a line break
    and replaced by one marker line saying how much went."""
    text = cap_text(text)
    if len(text) <= limit:
        return text
    kept = text[len(text) - limit + _TAIL_MARKER_ROOM :]
    # Cut at the next line break unless that loses more than a long line's worth.
    newline = kept.find("\n", 0, 2_000)
    if newline >= 0:
        kept = kept[newline + 1 :]
    marker = f"{TRUNCATED} {len(text) - len(kept)} characters cut; the end follows {TRUNCATED}\n"
    return marker + kept


def _needs_cap(text: str, limit: int) -> bool:
    if len(text) > limit or "\x00" in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def epoch_problem(value: float) -> str | None:
    """Why ``value`` is not a storable time in epoch seconds, or None (NaN fails too)."""
    if MIN_EPOCH <= value <= MAX_EPOCH:
        return None
    return "is out of range for a time (epoch seconds between years 1 and 9999)"


# -- documents ---------------------------------------------------------------------------------


def _cap_key(key: Any) -> Any:
    if type(key) is str:
        return cap_text(key, _NAME)
    if key is None or type(key) in (int, float, bool):
        return key if type(key) is not int or -(2**63) <= key <= MAX_INT else str(key)
    return cap_text(str(key), _NAME)


def cap_doc(value: Any, depth: int = 0) -> Any:  # noqa: PLR0911 (one return per type)
    """``value`` bounded as a JSON document (see the module docstring). Idempotent, and
    recursion is bounded by :data:`MAX_DEPTH` whatever the input (cycles included)."""
    if isinstance(value, str):
        return cap_text(value, MAX_DOC_STRING)
    if type(value) is int:
        return value if -(2**63) <= value <= MAX_INT else str(value)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return TRUNCATED
        out: dict[Any, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i == MAX_KEYS - 1 and len(value) > MAX_KEYS:
                out[TRUNCATED] = f"{len(value) - i} more keys"
                break
            out[_cap_key(k)] = cap_doc(v, depth + 1)
        return out
    if isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            return TRUNCATED
        if len(value) > MAX_KEYS:
            kept = [cap_doc(v, depth + 1) for v in value[: MAX_KEYS - 1]]
            return [*kept, f"{TRUNCATED}{len(value) - MAX_KEYS + 1} more elements"]
        return [cap_doc(v, depth + 1) for v in value]
    return value


# A JSON text this short cannot break the depth or key-count bounds (each level takes two
# characters, each key four), so only NUL is looked for in it.
SHORT_DOC: Final = 2 * MAX_DEPTH


def may_break_bounds(text: str) -> bool:
    """Whether a document's JSON text may break a bound (and must be walked by
    :func:`cap_doc`). Each test over-approximates its bound (a "{" inside a string counts as
    nesting), which costs a walk, never a wrong result; a text of at most
    :data:`SHORT_DOC` characters without an escaped NUL never breaks one."""
    return "\\u0000" in text or (
        len(text) > SHORT_DOC
        and (
            len(text) > MAX_DOC_CHARS
            or text.count(":") >= MAX_KEYS
            or text.count(",") >= MAX_KEYS
            or text.count("{") + text.count("[") > MAX_DEPTH
        )
    )


def any_may_break_bounds(texts: Sequence[str]) -> bool:
    """Whether any of many documents' JSON texts may break a bound: :func:`may_break_bounds`
    for a whole column, in a few C-level passes (the writer's common case is a column of
    documents of a few hundred characters, nested a level or two, without NUL)."""
    if "\\u0000" in "".join(texts):
        return True
    longest = max(map(len, texts), default=0)
    if longest <= SHORT_DOC:
        return False
    # Past SHORT_DOC only the depth bound can break below MAX_KEYS characters (a key costs
    # at least four, an element two); longer texts are rare: each is looked at alone.
    if longest >= MAX_KEYS:
        return any(map(may_break_bounds, texts))
    braces = map(str.count, texts, repeat("{"))
    brackets = map(str.count, texts, repeat("["))
    return bool(max(map(operator.add, braces, brackets)) > MAX_DEPTH)


def doc_dumper(default: Callable[[Any], Any]) -> Callable[[Any], str]:
    """A function giving the JSON text of a value as a bounded document (``default``
    serialises what JSON cannot hold). The common case is one ``orjson.dumps`` and a string
    scan or two; only a document that may break a bound is walked by :func:`cap_doc`."""
    import orjson  # on the writer thread, keeping `import jobtrace` light

    dumps, option = orjson.dumps, orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

    def dump_doc(value: Any) -> str:
        try:
            text: str = dumps(value, default=default, option=option).decode()
        except (TypeError, ValueError):  # too deep, a cycle, a lone surrogate, a huge int
            text = ""
        if not text or may_break_bounds(text):
            text = dumps(cap_doc(value), default=default, option=option).decode()
            if len(text) > MAX_DOC_CHARS:
                text = dumps({TRUNCATED: text[:_PREVIEW]}).decode()
        return text

    return dump_doc


# -- records -----------------------------------------------------------------------------------

#: A refused record: (its position in the screened sequence, field, problem).
Refusal = tuple[int, str, str]


@functools.cache
def _positions(kind: str) -> tuple[tuple[int, str, int, bool], ...]:
    from jobtrace.model import FIELDS  # lazily: model imports this module

    fields = FIELDS[kind]
    return tuple(
        (fields.index(name) + 1, name, limit, key)
        for name, (limit, key) in TEXT_LIMITS.get(kind, {}).items()
    )


def _capper(kind: str, name: str) -> Callable[[str, int], str]:
    """How a text field over its limit is cut: its end, or its start for a traceback."""
    return cap_text_tail if (kind, name) in _TAIL_KEPT else cap_text


def screen(kind: str, records: Sequence[tuple[Any, ...]]) -> tuple[list[Any], list[Refusal]]:
    """``records`` (all of ``kind``) with their text fields bounded: over-long keys refused,
    other text cut, NUL replaced. Returns (records kept, refusals).

    Runs on the writer thread for every batch, so the common case — nothing to fix — costs
    one ``set`` per text field: each distinct value is checked once.
    """
    fixes: dict[int, dict[str, str | None]] = {}
    for position, name, limit, key in _positions(kind):
        column = list(map(operator.itemgetter(position), records))
        try:
            joined = "".join(column)  # raises at once for a column with None or non-text
        except TypeError:
            joined = None
        # The common case in a few C-level passes over the column: all text, short, ASCII
        # (so encodable) and without NUL. Anything else is looked at value by value.
        if (
            joined is not None
            and max(map(len, column), default=0) <= limit
            and joined.isascii()
            and "\x00" not in joined
        ):
            continue
        values = set(column)
        values.discard(None)
        if not values:
            continue
        cap = _capper(kind, name)
        bad = {
            v: (None if key and len(v) > limit else cap(v, limit))
            for v in values
            if type(v) is str and _needs_cap(v, limit)
        }
        if bad:
            fixes[position] = bad
    if not fixes:
        return records if isinstance(records, list) else list(records), []
    kept: list[Any] = []
    refused: list[Refusal] = []
    names = {p: n for p, n, _, _ in _positions(kind)}
    for index, record in enumerate(records):
        out = list(record)
        problem = None
        for position, bad in fixes.items():
            value = out[position]
            if type(value) is str and value in bad:
                fixed = bad[value]
                if fixed is None:
                    limit = TEXT_LIMITS[kind][names[position]][0]
                    problem = (names[position], f"must be at most {limit} characters")
                    break
                out[position] = fixed
        if problem is None:
            kept.append(tuple(out))
        else:
            refused.append((index, *problem))
    return kept, refused


@functools.cache
def _doc_positions(kind: str) -> tuple[int, ...]:
    from jobtrace.model import FIELDS

    return tuple(FIELDS[kind].index(name) + 1 for name in DOC_FIELDS.get(kind, ()))


def cap_record(record: tuple[Any, ...]) -> tuple[Any, ...]:
    """``record`` with every document bounded by :func:`cap_doc` and every string cleaned
    by :func:`cap_text` (text cut to its limit; keys only cleaned, so that a store or
    server still refuses an over-long one). For encoders whose JSON a record broke (a
    lone surrogate, a document too deep for orjson): what they send is then what the store
    writer would have made of the record."""
    kind = record[0]
    out = list(record)
    for position, name, limit, key in _positions(kind):
        if type(out[position]) is str:
            if key:
                out[position] = cap_text(out[position])
            else:
                out[position] = _capper(kind, name)(out[position], limit)
    for position in _doc_positions(kind):
        if out[position] is not None:
            out[position] = cap_doc(out[position])
    return tuple(out)
