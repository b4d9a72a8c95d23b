"""Trace renderers: the self-contained HTML page and the Graphviz DOT graph."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobtrace.report.dot import dot_string, render_trace_dot
from jobtrace.report.html import json_for_script, render_trace_html
from jobtrace.report.traces import trace_json
from tests.test_trace_readers import OLD, sid, span

EVIL_NAME = "</script><script>alert(1)</script>"
EVIL_INFO = {"note": "<img src=x onerror=alert(2)>", "amp": "a & b", "sep": "x\u2028y\u2029z"}
DATA_SCRIPT = re.compile(
    r'<script type="application/json" id="jobtrace-data">(.*?)</script>', re.DOTALL
)


def report() -> dict[str, Any]:
    return trace_json(
        [
            span(OLD, sid(1), None, "handle <request>", 0, 10, info={"path": "/a?b=1&c=2"}),
            span(OLD, sid(2), sid(1), EVIL_NAME, 1, 4, info=EVIL_INFO),
            span(
                OLD,
                sid(3),
                sid(2),
                'db "query"',
                2,
                1,
                error_type="ValueError",
                error_message="bad <b>value</b>\nsecond line",
            ),
            span(OLD, sid(4), "0123456789abcdef", "remote\\child", 12, 2),
        ]
    )


def embedded(page: str) -> Any:
    [blob] = DATA_SCRIPT.findall(page)
    return json.loads(blob)


# -- HTML -------------------------------------------------------------------------------


def test_the_page_fetches_nothing() -> None:
    page = render_trace_html(report())
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//""", page, re.I)
    assert not re.search(r"<link\b|@import|url\(", page, re.I)
    # One inline style and script, allowed by hash; nothing else may load or run.
    [csp] = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert "default-src 'none'" in csp


def test_the_content_security_policy_admits_the_pages_own_script_and_style() -> None:
    page = render_trace_html(report())
    [csp] = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    [script] = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    [style] = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    for kind, text in (("script-src", script), ("style-src", style)):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"{kind} 'sha256-{digest}'" in csp


def test_the_embedded_data_round_trips() -> None:
    data = report()
    assert embedded(render_trace_html(data)) == json.loads(json.dumps(data))


def test_user_strings_appear_only_escaped() -> None:
    page = render_trace_html(report())
    assert page.lower().count("<script") == 2 and page.lower().count("</script") == 2
    assert "<img" not in page and "<b>" not in page
    assert "alert(1)" in page  # present, but only as inert escaped JSON text:
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)" in page
    assert "\u2028" not in page and "\u2029" not in page
    assert "a \\u0026 b" in page
    # The title is the one place markup carries a user string, HTML-escaped.
    assert "<title>jobtrace · handle &lt;request&gt;</title>" in page
    data = embedded(page)
    assert data["spans"][1]["name"] == EVIL_NAME
    assert data["spans"][1]["info"] == EVIL_INFO


def test_the_script_sets_user_strings_as_text_only() -> None:
    page = render_trace_html(report())
    [script] = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_pages_script_is_valid_javascript(tmp_path: Path) -> None:
    [script] = re.findall(r"<script>(.*?)</script>", render_trace_html(report()), re.DOTALL)
    path = tmp_path / "page.js"
    path.write_text(script)
    result = subprocess.run(
        ["node", "--check", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@given(st.recursive(st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))
def test_json_for_script_is_inert_and_lossless(value: Any) -> None:
    text = json_for_script(value)
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    assert json.loads(text) == value


# -- DOT --------------------------------------------------------------------------------

QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def unquote(dot: str) -> str:
    """Undo dot_string's escapes (Graphviz reads ``\\n`` in a label as a line break)."""
    assert dot.startswith('"') and dot.endswith('"')
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), dot[1:-1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash\\", '"back\\\\slash\\\\"'),
        ("not an escape: \\l \\N", '"not an escape: \\\\l \\\\N"'),
        ("two\nlines\r\nand\rthree", '"two\\nlines\\nand\\nthree"'),
        ("bell\x07 tab\tnul\x00", '"bell tab nul"'),
        ("<b>html-like</b> {x; y}", '"<b>html-like</b> {x; y}"'),
    ],
)
def test_dot_strings_escape_quotes_backslashes_and_newlines(text: str, expected: str) -> None:
    assert dot_string(text) == expected


@given(st.text())
def test_a_dot_string_is_one_token_that_reads_back(text: str) -> None:
    quoted = dot_string(text)
    assert QUOTED.fullmatch(quoted)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    assert unquote(quoted) == re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", lines)


def test_the_dot_graph_has_one_labelled_box_per_span_and_the_call_edges() -> None:
    dot = render_trace_dot(report())
    assert dot.startswith("digraph trace {") and dot.rstrip().endswith("}")
    nodes = dict(re.findall(r"^  (s\d+) \[label=(\"(?:[^\"\\]|\\.)*\")", dot, re.MULTILINE))
    assert {k: unquote(v) for k, v in nodes.items()} == {
        "s0": "handle <request>\n10.0 ms",
        "s1": f"{EVIL_NAME}\n4.00 ms",
        "s2": 'db "query"\n1.00 ms\nValueError',
        "s3": "remote\\child\n2.00 ms",
    }
    assert re.findall(r"^  (\w+) -> (\w+)", dot, re.MULTILINE) == [
        ("s0", "s1"),
        ("s1", "s2"),
        ("m0", "s3"),
    ]
    # Outside quoted strings only generated ids and attributes remain.
    bare = QUOTED.sub('""', dot)
    assert '"' not in bare.replace('""', "")
    assert "request" not in bare and "alert" not in bare


def test_error_spans_are_red_and_missing_parents_dashed() -> None:
    dot = render_trace_dot(report())
    error_line = next(line for line in dot.splitlines() if line.startswith("  s2 "))
    assert 'color="#cf222e"' in error_line
    assert 'color="#cf222e"' not in next(ln for ln in dot.splitlines() if ln.startswith("  s0 "))
    placeholder = next(line for line in dot.splitlines() if line.startswith("  m0 "))
    assert "0123456789abcdef\\n(not in this trace)" in placeholder and "dashed" in placeholder


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_reads_the_graph(tmp_path: Path) -> None:
    result = subprocess.run(
        ["dot", "-Tplain"],
        input=render_trace_dot(report()),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    labels = re.findall(r"^node s\d+ \S+ \S+ \S+ \S+ (\"(?:[^\"\\]|\\.)*\")", result.stdout, re.M)
    assert '"db \\"query\\"\\n1.00 ms\\nValueError"' in labels
