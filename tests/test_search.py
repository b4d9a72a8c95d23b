"""The search language: parsing, round trips, errors, and compiling to bound parameters."""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from jobtrace.errors import SearchError
from jobtrace.store.jobs import job_search_fields
from jobtrace.store.schema import jobs
from jobtrace.store.search import (
    ANY,
    ONE,
    CompareTerm,
    FieldTerm,
    Pattern,
    Query,
    TextTerm,
    compile_search,
    like_pattern,
    parse,
    unparse,
)


def terms(text: str) -> tuple[object, ...]:
    return parse(text).terms


def test_field_terms_free_text_and_comparisons() -> None:
    assert terms('name:resnet*, status:failed, metric.accuracy>=0.9, "lr 0.1"') == (
        FieldTerm("name", ("resnet", ANY)),
        FieldTerm("status", ("failed",)),
        CompareTerm("metric.accuracy", ">=", 0.9),
        TextTerm(("lr 0.1",)),
    )


def test_spaces_around_terms_are_trimmed_and_inner_ones_kept() -> None:
    assert terms("  big  model ,\tname : x y ") == (
        TextTerm(("big  model",)),
        FieldTerm("name", ("x y",)),
    )


def test_quotes_and_backslashes_make_characters_literal() -> None:
    assert terms(r'"a*b, c", x\*y\,z, name:" padded "') == (
        TextTerm(("a*b, c",)),
        TextTerm(("x*y,z",)),
        FieldTerm("name", (" padded ",)),
    )
    assert terms("'it''s'") == (TextTerm(("its",)),)
    assert terms(r"'don\'t'") == (TextTerm(("don't",)),)


def test_wildcards() -> None:
    assert terms("a?c*") == (TextTerm(("a", ONE, "c", ANY)),)


@pytest.mark.parametrize(
    ("text", "op", "value"),
    [
        ("metric.loss<0.5", "<", 0.5),
        ("metric.loss <= -1e3", "<=", -1000.0),
        ("metric.loss==2", "=", 2.0),
        ("metric.loss != nan", "!=", math.nan),
        ("metric.loss>-inf", ">", -math.inf),
        ("duration>.5", ">", 0.5),
        ('metric."val loss">1', ">", 1.0),
        ("metric.train/loss>1", ">", 1.0),
    ],
)
def test_comparisons(text: str, op: str, value: float) -> None:
    [term] = terms(text)
    assert isinstance(term, CompareTerm)
    assert term.op == op and term == CompareTerm(term.field, op, value)


def test_an_empty_search_has_no_terms() -> None:
    assert parse("   ") == Query(())
    assert compile_search("", job_search_fields(0.0)) is None


@pytest.mark.parametrize(
    ("mlflow", "native"),
    [
        ("metrics.loss < 0.5", "metric.loss<0.5"),
        ("params.lr = '0.1'", "param.lr:0.1"),
        ('tags.team = "ds"', "tag.team:ds"),
        ("metrics.loss < 0.5 AND params.lr = '0.1'", "metric.loss<0.5, param.lr:0.1"),
        ("params.opt = 'a,b' and metrics.acc >= 0.9 And name = 'x'", 'param.opt:"a,b", '
         "metric.acc>=0.9, name:x"),
        ("params.lr == 'x*'", r"param.lr:x\*"),
    ],
)  # fmt: skip
def test_mlflow_filter_strings_mean_what_they_mean_in_mlflow(mlflow: str, native: str) -> None:
    assert parse(mlflow) == parse(native)


def test_and_inside_free_text_and_field_values_stays_text() -> None:
    assert terms("rock and roll, name:salt and pepper") == (
        TextTerm(("rock and roll",)),
        FieldTerm("name", ("salt and pepper",)),
    )


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("params.lr != 'a'", "text compares only with '='", 0),
        ("x, params.lr > 'a'", "text compares only with '='", 3),
        ("params.lr = 'a' b", "expected ',' or AND after the quoted value", 16),
        ("metrics.loss = 'a'", "compare a metric with a number", 0),
        ("metric.x > 1 AND", "expected a number after '>', got '1 AND'", 11),
    ],
)
def test_mlflow_style_mistakes_say_why_and_where(text: str, reason: str, position: int) -> None:
    with pytest.raises(SearchError) as info:
        parse(text)
    assert reason in info.value.reason and info.value.position == position


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("a,,b", "expected a search term after ','", 2),
        (",", "expected a search term", 0),
        ("a, ", "expected a search term after ','", 3),
        ("name:", "expected a value after 'name:'", 5),
        ("name:  ,x", "expected a value after 'name:'", 5),
        ("x>abc", "expected a number after '>', got 'abc'", 2),
        ("x>", "expected a number after '>', got nothing", 2),
        ('a, "open', "unterminated quote", 3),
        ("tail\\", "a backslash at the end", 4),
        ("metric.x:1", "compare a metric with a number", 8),
        ("a, foo.bar>1", "unknown field prefix 'foo.'; expected one of metric.NAME", 3),
        ("param.", "expected a name after 'param.'", 6),
        ("x" * 5000, "longer than 4096", 4096),
    ],
)
def test_parse_errors_say_why_and_where(text: str, reason: str, position: int) -> None:
    with pytest.raises(SearchError) as info:
        parse(text)
    assert reason in info.value.reason
    assert info.value.position == position and info.value.query == text
    assert f"at character {position + 1}" in str(info.value)


def test_like_metacharacters_in_user_text_are_escaped() -> None:
    assert like_pattern(("100%_\\",)) == "100\\%\\_\\\\"
    assert like_pattern(("a", ANY, "b", ONE), contains=True) == "%a%b_%"


# -- properties ------------------------------------------------------------------------------

idents = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
literal_text = st.text(min_size=1, max_size=12)


def merged(parts: list[str | object]) -> Pattern:
    out: list[object] = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        else:
            out.append(part)
    return tuple(out)  # type: ignore[return-value]


patterns = st.lists(st.one_of(literal_text, st.sampled_from([ANY, ONE])), max_size=5).map(merged)
numbers = st.floats(allow_nan=True, allow_infinity=True)
prefixes = st.sampled_from(["metric", "param", "tag"])
compare_fields = st.one_of(
    idents, st.builds(lambda prefix, name: f"{prefix}.{name}", prefixes, literal_text)
)
document_fields = st.builds(
    lambda prefix, name: f"{prefix}.{name}", st.sampled_from(["param", "tag"]), literal_text
)
term_strategy = st.one_of(
    st.builds(TextTerm, patterns),
    st.builds(FieldTerm, st.one_of(idents, document_fields), patterns),
    st.builds(
        CompareTerm, compare_fields, st.sampled_from([">", ">=", "<", "<=", "=", "!="]), numbers
    ),
)


@given(st.lists(term_strategy, max_size=5))
def test_unparse_then_parse_gives_the_same_query(term_list: list[object]) -> None:
    query = Query(tuple(term_list))  # type: ignore[arg-type]
    assert parse(unparse(query)) == query


@given(st.text(max_size=60))
def test_parsing_any_text_returns_a_query_or_raises_search_error(text: str) -> None:
    try:
        query = parse(text)
    except SearchError as exc:
        assert 0 <= exc.position <= len(text)
        return
    assert parse(unparse(query)) == query


search_alphabet = st.sampled_from(list("namestuid:.,*?\"'\\<>=! 0123456789-eEinfa_%"))


@settings(max_examples=300)
@given(st.text(alphabet=search_alphabet, max_size=40))
def test_compiling_never_fails_but_with_search_error(text: str) -> None:
    fields = job_search_fields(1000.0)
    try:
        condition = compile_search(text, fields)
    except SearchError:
        return
    if condition is not None:
        for dialect in (sqlite.dialect(), postgresql.dialect()):
            str(sa.select(jobs.c.id).where(condition).compile(dialect=dialect))


@given(st.text(min_size=1, max_size=30))
def test_user_text_only_ever_reaches_sql_as_a_bound_parameter(text: str) -> None:
    marker = "zq" + text
    query = Query((FieldTerm("name", (marker,)), TextTerm((marker,))))
    condition = compile_search(query, job_search_fields(0.0))
    assert condition is not None
    compiled = sa.select(jobs.c.id).where(condition).compile(dialect=postgresql.dialect())
    assert marker not in str(compiled)
    assert like_pattern((marker,)) in compiled.params.values()


def test_dotted_prefixes_are_spelled_one_way_in_the_query() -> None:
    assert terms("params.lr>0.1, Tags.team:ds, METRICS.loss<1") == (
        CompareTerm("param.lr", ">", 0.1),
        FieldTerm("tag.team", ("ds",)),
        CompareTerm("metric.loss", "<", 1.0),
    )
