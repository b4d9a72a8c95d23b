"""The search language of the readers (CLI, REST ``search=``), in Dioptra's style.

>>> from jobtrace.store.search import parse
>>> parse('name:resnet*, status:failed, metric.accuracy>=0.9, "lr 0.1"')   # doctest: +SKIP

- Terms are separated by commas, and all must hold (comma means AND).
- ``field:value`` matches one field; a bare ``value`` (free text) matches anywhere in the
  searched thing's text fields.
- ``*`` stands for any run of characters, ``?`` for exactly one. A ``field:value`` without
  wildcards is a whole-value match, free text a substring match. Matching is
  case-insensitive on every store.
- Quotes (``"…"`` or ``'…'``) keep what they hold literally, wildcards, commas and outer
  spaces included; a backslash makes the next character literal, inside quotes or out.
- ``field<op>number`` compares numbers, with ``op`` one of ``>``, ``>=``, ``<``, ``<=``,
  ``=``, ``!=``; ``metric.NAME<op>number`` compares the latest value of metric ``NAME``
  (quote a name holding other characters than letters, digits, ``_``, ``-``, ``/`` and ``.``).
  The number may be ``nan``, ``inf`` or ``-inf``.
- ``param.NAME`` and ``tag.NAME`` (also ``params.``/``tags.``) name one param or tag:
  ``param.optimizer:adam`` matches its value as text, ``param.lr>0.05`` compares it as a
  number (a param that is not a number never compares true). Numbers compare as numbers:
  ``param.batch=64`` finds ``64`` and ``64.0`` alike.
- A dotted field with any other prefix (``foo.bar>1``) is an error naming its position,
  never a search that silently finds nothing.
- MLflow's filter strings work as they read: ``field = 'text'`` (quoted, ``=`` or ``==``)
  is ``field:"text"``, and ``AND`` (any case) may join terms where a comma would, after a
  comparison or a quoted value: ``metrics.loss < 0.5 AND params.lr = '0.1'``.

A search is parsed into an AST (:func:`parse`, turned back into text by :func:`unparse`),
then compiled by :func:`compile_search` into a SQLAlchemy expression whose user values are
all bound parameters, so nothing typed into a search box reaches SQL text. Anything wrong
raises :class:`~jobtrace.errors.SearchError` with the reason and the position.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from jobtrace.errors import SearchError

__all__ = [
    "ANY",
    "FIELD_PREFIXES",
    "ONE",
    "CompareTerm",
    "DocumentValue",
    "FieldTerm",
    "Pattern",
    "Query",
    "SearchFields",
    "Term",
    "TextTerm",
    "compile_search",
    "field_key",
    "like_pattern",
    "literal",
    "match_pattern",
    "parse",
    "special_compare",
    "unparse",
]

#: Longest search accepted; past it a search is an error rather than work for the database.
MAX_LENGTH: Final = 4096


class Wildcard(enum.Enum):
    """A wildcard in a pattern."""

    ANY = "*"
    ONE = "?"


ANY: Final = Wildcard.ANY
ONE: Final = Wildcard.ONE

#: A value to match: literal text runs and wildcards, adjacent text runs merged.
Pattern = tuple[str | Wildcard, ...]

OPERATORS: Final = (">=", "<=", "!=", "==", ">", "<", "=")


@dataclass(frozen=True, slots=True)
class TextTerm:
    """Free text: the pattern occurs in one of the searched text fields."""

    pattern: Pattern
    position: int = dataclass_field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class FieldTerm:
    """``field:value``: the field matches the pattern as a whole."""

    field: str
    pattern: Pattern
    position: int = dataclass_field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class CompareTerm:
    """``field<op>number``; ``field`` is ``metric.NAME`` for a latest metric value."""

    field: str
    op: str
    value: float
    position: int = dataclass_field(default=0, compare=False)

    def __eq__(self, other: object) -> bool:
        # NaN must equal NaN here, or a parsed `metric.x=nan` would never equal itself.
        if not isinstance(other, CompareTerm):
            return NotImplemented
        same = self.value == other.value or (math.isnan(self.value) and math.isnan(other.value))
        return (self.field, self.op) == (other.field, other.op) and same

    def __hash__(self) -> int:
        return hash((self.field, self.op, "nan" if math.isnan(self.value) else self.value))


Term = TextTerm | FieldTerm | CompareTerm


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed search: every term must hold."""

    terms: tuple[Term, ...]
    source: str = dataclass_field(default="", compare=False)


# -- parsing ---------------------------------------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_METRIC_NAME = re.compile(r"[A-Za-z0-9_\-/.]+")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?inf|nan", re.I)
_QUOTES = "\"'"
#: ``AND`` between terms, as MLflow's filters join them (what a comma does).
_AND = re.compile(r"\s+and\s+", re.I)
#: Dotted field prefixes, as typed (lower case) -> as a term holds them.
FIELD_PREFIXES: Final = {
    "metric": "metric",
    "metrics": "metric",
    "param": "param",
    "params": "param",
    "tag": "tag",
    "tags": "tag",
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, reason: str, position: int | None = None) -> SearchError:
        return SearchError(reason, self.pos if position is None else position, self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_space(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos].isspace():
            pos += 1
        self.pos = pos

    def query(self) -> Query:
        if len(self.text) > MAX_LENGTH:
            raise self.error(f"the search is longer than {MAX_LENGTH} characters", MAX_LENGTH)
        self.skip_space()
        terms: list[Term] = []
        if self.pos == len(self.text):
            return Query((), self.text)
        while True:
            terms.append(self.term())
            if self.pos == len(self.text):
                return Query(tuple(terms), self.text)
            self.separator()

    def separator(self) -> None:
        """Past a ``,`` or an ``AND`` between two terms."""
        found = _AND.match(self.text, self.pos)
        if found is not None:
            self.pos = found.end()
            return
        if self.peek() != ",":
            raise self.error("expected ',' or AND before the next term")
        self.pos += 1

    def term(self) -> Term:
        self.skip_space()
        start = self.pos
        if self.peek() in {"", ","}:
            raise self.error("expected a search term" + (" after ','" if start else ""))
        name = self.field_name()
        if name is not None:
            self.skip_space()
            op = self.operator()
            if op is not None:
                self.skip_space()
                if self.peek() and self.peek() in _QUOTES:
                    return self.quoted_equal(name, op, start)
                return CompareTerm(name, "=" if op == "==" else op, self.number(op), start)
            if self.peek() == ":" and not name.startswith("metric."):
                self.pos += 1
                value_at = self.pos
                pattern = self.pattern()
                if pattern is None:
                    raise self.error(f"expected a value after '{name}:'", value_at)
                return FieldTerm(name, pattern, start)
            if self.peek() == ":":
                raise self.error(
                    f"compare a metric with a number, e.g. {name}>0.5, not {name}:…", self.pos
                )
        self.pos = start  # not a field after all: the whole term is free text
        pattern = self.pattern()
        assert pattern is not None
        return TextTerm(pattern, start)

    def quoted_equal(self, name: str, op: str, start: int) -> FieldTerm:
        """``field = 'text'`` (MLflow's filter form): a whole-value match of the text, the
        same as ``field:"text"``."""
        if op not in {"=", "=="}:
            raise self.error(f"text compares only with '=' (or field:value), not {op!r}", start)
        if name.startswith("metric."):
            raise self.error(f"compare a metric with a number, e.g. {name}>0.5", start)
        term = FieldTerm(name, _merge([self.quoted()]), start)
        if _AND.match(self.text, self.pos):
            return term
        self.skip_space()
        if self.pos < len(self.text) and self.peek() != ",":
            raise self.error("expected ',' or AND after the quoted value")
        return term

    def field_name(self) -> str | None:
        found = _IDENT.match(self.text, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        name = found.group()
        if self.peek() != ".":
            return name
        prefix = FIELD_PREFIXES.get(name.lower())
        if prefix is None:
            raise self.error(
                f"unknown field prefix {name + '.'!r}; expected one of "
                + ", ".join(f"{p}.NAME" for p in sorted(set(FIELD_PREFIXES.values()))),
                found.start(),
            )
        self.pos += 1
        if self.peek() and self.peek() in _QUOTES:
            key = self.quoted()
        else:
            plain = _METRIC_NAME.match(self.text, self.pos)
            if plain is None:
                raise self.error(f"expected a name after '{name}.'")
            self.pos = plain.end()
            key = plain.group()
        return f"{prefix}.{key}"

    def operator(self) -> str | None:
        for op in OPERATORS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        return None

    def number(self, op: str) -> float:
        self.skip_space()
        start = self.pos
        end = self.text.find(",", start)
        end = len(self.text) if end < 0 else end
        and_at = _AND.search(self.text, start, end)
        end = end if and_at is None else and_at.start()
        token = self.text[start:end].strip()
        if not _NUMBER.fullmatch(token):
            shown = f"got {token!r}" if token else "got nothing"
            raise self.error(f"expected a number after '{op}', {shown}", start)
        self.pos = end
        return float(token)

    def quoted(self) -> str:
        quote, start = self.peek(), self.pos
        self.pos += 1
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == quote:
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                out.append(self.escaped())
                continue
            out.append(ch)
            self.pos += 1
        raise self.error(f"unterminated quote {quote}", start)

    def escaped(self) -> str:
        if self.pos + 1 >= len(self.text):
            raise self.error("a backslash at the end of the search escapes nothing")
        self.pos += 2
        return self.text[self.pos - 1]

    def pattern(self) -> Pattern | None:
        """A value up to the next top-level comma; None if there is nothing but spaces."""
        # Characters as (char or wildcard, may be trimmed): only unquoted, unescaped
        # spaces at either end are dropped.
        chars: list[tuple[str | Wildcard, bool]] = []
        text = self.text
        quoted = False
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == ",":
                break
            if ch in _QUOTES:
                quoted = True
                chars.extend((c, False) for c in self.quoted())
            elif ch == "\\":
                chars.append((self.escaped(), False))
            else:
                wild = ANY if ch == "*" else ONE if ch == "?" else None
                chars.append((wild or ch, ch.isspace()))
                self.pos += 1
        while chars and chars[-1][1]:
            chars.pop()
        while chars and chars[0][1]:
            chars.pop(0)
        if not chars and not quoted:
            return None
        return _merge(c for c, _ in chars)


def _merge(parts: Iterable[str | Wildcard]) -> Pattern:
    out: list[str | Wildcard] = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        elif part != "":
            out.append(part)
    return tuple(out)


def parse(text: str) -> Query:
    """Parse a search; raises :class:`~jobtrace.errors.SearchError` when it is malformed."""
    if not isinstance(text, str):
        raise SearchError(f"a search must be text, got {type(text).__name__}", 0, str(text))
    return _Parser(text).query()


# -- unparsing -------------------------------------------------------------------------------

_ESCAPED = set("\\,*?\"':<>=!")


def _format_pattern(pattern: Pattern) -> str:
    items: list[str | Wildcard] = []
    for part in pattern:
        items.extend([part] if isinstance(part, Wildcard) else part)
    if not items:
        return '""'  # an empty value needs quotes to exist at all
    out = []
    last = len(items) - 1
    for i, item in enumerate(items):
        if isinstance(item, Wildcard):
            out.append(item.value)
        elif item in _ESCAPED or (item.isspace() and i in {0, last}):
            out.append("\\" + item)  # outer spaces would be trimmed, so escape them too
        else:
            out.append(item)
    return "".join(out)


def _format_field(name: str) -> str:
    head, dot, metric = name.partition(".")
    if not dot or _METRIC_NAME.fullmatch(metric):
        return name
    escaped = metric.replace("\\", "\\\\").replace('"', '\\"')
    return f'{head}."{escaped}"'


def _format_number(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def unparse(query: Query) -> str:
    """Search text that :func:`parse` turns back into ``query``."""
    out = []
    for term in query.terms:
        if isinstance(term, TextTerm):
            out.append(_format_pattern(term.pattern))
        elif isinstance(term, FieldTerm):
            out.append(f"{_format_field(term.field)}:{_format_pattern(term.pattern)}")
        else:
            out.append(f"{_format_field(term.field)}{term.op}{_format_number(term.value)}")
    return ", ".join(out)


# -- compiling -------------------------------------------------------------------------------

#: Builds the condition "the latest value of metric ``name`` satisfies ``op value``".
MetricCondition = Callable[[str, str, float], sa.ColumnElement[bool]]
#: Builds the condition for a field that needs more than a pattern match (e.g. ``status``).
FieldCondition = Callable[[Pattern], sa.ColumnElement[bool] | None]


@dataclass(frozen=True)
class SearchFields:
    """What a search may name, for one kind of thing (jobs, experiments)."""

    #: Field name (snake_case) → text column matched by ``field:value``.
    text: Mapping[str, sa.ColumnElement[Any]]
    #: Columns that free text searches.
    free_text: Sequence[sa.ColumnElement[Any]]
    #: Field name → numeric column for comparisons.
    numbers: Mapping[str, sa.ColumnElement[Any]] = dataclass_field(default_factory=dict)
    #: Field name → a condition builder that replaces the plain pattern match.
    custom: Mapping[str, FieldCondition] = dataclass_field(default_factory=dict)
    #: Latest-metric comparisons, for things that have metrics.
    metric: MetricCondition | None = None
    #: Dotted prefix (``param``, ``tag``) → JSON column of name → value documents.
    documents: Mapping[str, sa.ColumnElement[Any]] = dataclass_field(default_factory=dict)


class DocumentValue(sa.ColumnElement[Any]):
    """The value under ``key`` in a JSON document column, as text or (``as_number``) as a
    double — NULL when absent, or when it is not a number and a number is wanted.

    PostgreSQL reads JSONB with ``->``/``->>``; SQLite looks the key up with
    ``json_each``, so any key works as a bound parameter (a JSON path would need quoting).
    """

    inherit_cache = False

    def __init__(self, document: sa.ColumnElement[Any], key: str, *, as_number: bool) -> None:
        self.document = document
        self.key = key
        self.as_number = as_number
        self.type = sa.Double() if as_number else sa.Text()


@compiles(DocumentValue, "postgresql")
def _document_value_postgresql(element: DocumentValue, compiler: Any, **kw: Any) -> str:
    doc = compiler.process(element.document, **kw)
    key = compiler.process(sa.literal(element.key, sa.Text()), **kw)
    if not element.as_number:
        return f"({doc} ->> {key})"
    key2 = compiler.process(sa.literal(element.key, sa.Text()), **kw)
    return (
        f"(CASE WHEN jsonb_typeof({doc} -> {key}) = 'number' "
        f"THEN CAST({doc} ->> {key2} AS DOUBLE PRECISION) END)"
    )


@compiles(DocumentValue)
def _document_value_sqlite(element: DocumentValue, compiler: Any, **kw: Any) -> str:
    doc = compiler.process(element.document, **kw)
    key = compiler.process(sa.literal(element.key, sa.Text()), **kw)
    if element.as_number:
        return (
            f"(SELECT value FROM json_each({doc}) WHERE key = {key} "
            "AND type IN ('integer', 'real'))"
        )
    # Booleans as JSON spells them (json_each gives 1/0), as PostgreSQL's ->> does.
    return (
        "(SELECT CASE type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        f"WHEN 'null' THEN NULL ELSE CAST(value AS TEXT) END FROM json_each({doc}) "
        f"WHERE key = {key})"
    )


def field_key(name: str) -> str:
    """A field name as the fields' tables hold it: ``startTime`` and ``start_time`` alike."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def like_pattern(pattern: Pattern, *, contains: bool = False) -> str:
    """A LIKE pattern (escape character ``\\``) with the user's ``%`` and ``_`` escaped."""
    out = ["%"] if contains else []
    for part in pattern:
        if part is ANY:
            out.append("%")
        elif part is ONE:
            out.append("_")
        else:
            assert isinstance(part, str)
            out.append(part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"))
    if contains:
        out.append("%")
    return "".join(out)


def literal(pattern: Pattern) -> str | None:
    """The text of a pattern without wildcards, else None."""
    if all(isinstance(p, str) for p in pattern):
        return "".join(p for p in pattern if isinstance(p, str))
    return None


def match_pattern(column: sa.ColumnElement[Any], pattern: Pattern, contains: bool) -> Any:
    """``column`` matches ``pattern`` (as a whole, or anywhere with ``contains``).

    Case-insensitive on both databases. A pattern without wildcards is still a LIKE, so
    the one rule for case applies to every match."""
    # ILIKE on PostgreSQL, lower(x) LIKE lower(y) on SQLite: the pattern is a bound parameter.
    return column.ilike(like_pattern(pattern, contains=contains), escape="\\")


def special_compare(
    value: sa.ColumnElement[Any], special: sa.ColumnElement[Any], op: str, number: float
) -> sa.ColumnElement[bool]:
    """``op number`` on a float split into a finite ``value`` and a ``special`` column.

    Ordering is -inf < finite < inf; NaN equals only ``nan`` (so ``metric.loss=nan`` finds
    diverged runs) and is neither greater nor smaller than anything, as in IEEE 754.
    """
    not_nan = sa.or_(value.is_not(None), special.in_(("inf", "-inf")))
    if math.isnan(number):
        nan = {"=": special == "nan", "!=": sa.or_(special.is_(None), special != "nan")}
        return nan.get(op, sa.false())
    if math.isinf(number):
        top, other = ("inf", "-inf") if number > 0 else ("-inf", "inf")
        # Towards the infinity named (>= inf, <= -inf) only it matches; away from it
        # (< inf, > -inf) everything but it and NaN; nothing lies beyond it.
        toward, away = (">=", "<") if number > 0 else ("<=", ">")
        infinite = {
            "=": special == top,
            toward: special == top,
            "!=": sa.or_(special.is_(None), special != top),
            away: sa.or_(value.is_not(None), special == other),
            "<=" if number > 0 else ">=": not_nan,
        }
        return infinite.get(op, sa.false())
    finite: dict[str, sa.ColumnElement[bool]] = {
        ">": sa.or_(value > number, special == "inf"),
        ">=": sa.or_(value >= number, special == "inf"),
        "<": sa.or_(value < number, special == "-inf"),
        "<=": sa.or_(value <= number, special == "-inf"),
        "=": value == number,
        "!=": sa.or_(value != number, value.is_(None)),
    }
    return finite[op]


def _number_compare(column: sa.ColumnElement[Any], op: str, number: float) -> Any:
    # Plain columns never hold NaN; binding one would differ by database (SQLite binds NULL,
    # PostgreSQL orders NaN above everything), so NaN is decided here.
    if math.isnan(number):
        return column.is_not(None) if op == "!=" else sa.false()
    ops: dict[str, Callable[[], Any]] = {
        ">": lambda: column > number,
        ">=": lambda: column >= number,
        "<": lambda: column < number,
        "<=": lambda: column <= number,
        "=": lambda: column == number,
        "!=": lambda: column != number,
    }
    return ops[op]()


def _unknown(query: Query, term: Term, fields: SearchFields, what: str) -> SearchError:
    assert not isinstance(term, TextTerm)
    known = sorted({*fields.text, *fields.custom} if what == "text" else fields.numbers)
    if what == "number" and fields.metric is not None:
        known.append("metric.NAME")
    known += [f"{prefix}.NAME" for prefix in sorted(fields.documents)]
    return SearchError(
        f"unknown {what} field {term.field!r}; expected one of {', '.join(known)}",
        term.position,
        query.source,
    )


def compile_search(
    search: str | Query | None, fields: SearchFields
) -> sa.ColumnElement[bool] | None:
    """The condition a search stands for, or None for an empty search."""
    if search is None:
        return None
    query = parse(search) if isinstance(search, str) else search
    conditions: list[Any] = []
    for term in query.terms:
        if isinstance(term, TextTerm):
            matches = [match_pattern(c, term.pattern, True) for c in fields.free_text]
            conditions.append(sa.or_(*matches))
        elif isinstance(term, FieldTerm):
            prefix, dot, name = term.field.partition(".")
            if dot:
                document = fields.documents.get(prefix)
                if document is None:
                    raise _unknown(query, term, fields, "text")
                value = DocumentValue(document, name, as_number=False)
                conditions.append(match_pattern(value, term.pattern, False))
                continue
            key = field_key(term.field)
            custom = fields.custom.get(key)
            condition = custom(term.pattern) if custom is not None else None
            if condition is None:
                column = fields.text.get(key)
                if column is None:
                    raise _unknown(query, term, fields, "text")
                condition = match_pattern(column, term.pattern, False)
            conditions.append(condition)
        else:
            head, dot, name = term.field.partition(".")
            if dot and head == "metric" and fields.metric is not None:
                conditions.append(fields.metric(name, term.op, term.value))
                continue
            if dot and head in fields.documents:
                number = DocumentValue(fields.documents[head], name, as_number=True)
                conditions.append(_number_compare(number, term.op, term.value))
                continue
            column = None if dot else fields.numbers.get(field_key(term.field))
            if column is None:
                raise _unknown(query, term, fields, "number")
            conditions.append(_number_compare(column, term.op, term.value))
    return sa.and_(*conditions) if conditions else None
