"""`jobtrace trace list|show`, run in a subprocess against a real SQLite store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest

from jobtrace.report.html import render_trace_html
from jobtrace.report.traces import trace_json
from jobtrace.store import Store
from tests.cli_helpers import jobtrace_cli
from tests.test_trace_readers import MID, NEW, OLD, record, sid, span, three_traces

MARKUP = "[bold red]not markup[/bold red] :smile:"


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """A working directory whose default store (./.jobtrace/jobtrace.db) holds three traces."""
    spans = three_traces()
    spans.append(span(OLD, sid(9), sid(2), MARKUP, 2.5, 0.25, job_id="job-a"))
    store = Store(f"sqlite:///{tmp_path / '.jobtrace' / 'jobtrace.db'}")
    try:
        store.write([record(s) for s in spans])
    finally:
        store.close()
    return tmp_path


def run_ok(cwd: Path, *args: str) -> str:
    return jobtrace_cli(*args, cwd=cwd, check=True).stdout


def test_trace_list_json_summarises_traces_newest_first(cwd: Path) -> None:
    rows = orjson.loads(run_ok(cwd, "trace", "list", "--json"))
    assert [r["trace_id"] for r in rows] == [NEW, MID, OLD]
    assert rows[2] == {
        "trace_id": OLD,
        "name": "handle",
        "service": "web",
        "job_id": "job-a",
        "start": "2024-07-03T09:46:40.000000+00:00",
        "start_ns": 1_720_000_000_000_000_000,
        "duration_ms": 15.0,
        "spans": 4,
        "errors": 1,
        "dropped_spans": 7,
    }


def test_trace_list_filters_by_job_and_limits(cwd: Path) -> None:
    rows = orjson.loads(run_ok(cwd, "trace", "list", "--job", "job-a", "--json"))
    assert [r["trace_id"] for r in rows] == [NEW, OLD]
    rows = orjson.loads(run_ok(cwd, "trace", "list", "-n", "1", "--json"))
    assert [r["trace_id"] for r in rows] == [NEW]


def test_trace_list_prints_a_table(cwd: Path) -> None:
    out = run_ok(cwd, "trace", "list")
    lines = out.splitlines()
    assert lines[0].split() == [
        "TRACE",
        "ID",
        "STARTED",
        "DURATION",
        "SPANS",
        "ERRORS",
        "SERVICE",
        "ROOT",
        "JOB",
    ]
    old_row = next(line.rstrip() for line in lines if line.startswith(OLD))
    assert re.search(r"15\.0 ms\s+4 \(\+7\)\s+1\s+web\s+handle\s+job-a$", old_row), old_row
    mid_row = next(line.rstrip() for line in lines if line.startswith(MID))
    assert re.search(r"6\.00 ms\s+2\s+0\s+web\s+worker\.step\s+job-b$", mid_row), mid_row
    assert "spans dropped by the per-trace cap" in out


def test_trace_list_under_a_job_leaves_out_the_job_column(cwd: Path) -> None:
    out = run_ok(cwd, "trace", "list", "--job", "job-b")
    assert "JOB" not in out.splitlines()[0]
    assert MID in out and OLD not in out


def test_trace_list_says_when_nothing_matches(cwd: Path) -> None:
    assert run_ok(cwd, "trace", "list", "--job", "nobody").strip() == "No matching traces."


def test_trace_show_prints_the_call_tree_with_times(cwd: Path) -> None:
    out = run_ok(cwd, "trace", "show", OLD[:14])
    lines = out.splitlines()
    assert lines[0] == f"handle  trace {OLD}"
    assert "duration 15.0 ms · 4 spans" in lines[1] and "job job-a" in lines[1]
    assert "1 span failed" in out and "7 spans dropped by the per-trace cap" in out
    tree = [line for line in lines if "(self " in line or "(+" in line]
    assert tree == [
        "[web] handle  10.0 ms  (self 3.00 ms, +0)",
        "├── db.query  3.00 ms  (self 2.75 ms, +2.00 ms)",
        f"│   └── {MARKUP}  250 µs  (+2.50 ms)",
        "└── db.query  9.00 ms  (+6.00 ms)  TimeoutError: took too long",
    ]
    stats = next(line for line in lines if line.startswith("db.query "))
    assert stats.split() == ["db.query", "2", "1", "12.0", "ms", "11.8", "ms", "3.00", "ms",
                             "6.00", "ms", "8.70", "ms", "9.00", "ms"]  # fmt: skip


def test_trace_show_json_is_the_report(cwd: Path) -> None:
    report = orjson.loads(run_ok(cwd, "trace", "show", OLD, "--json"))
    assert (report["trace_id"], report["span_count"], report["error_count"]) == (OLD, 4, 1)
    assert [(s["depth"], s["name"]) for s in report["spans"]] == [
        (0, "handle"),
        (1, "db.query"),
        (2, MARKUP),
        (1, "db.query"),
    ]
    assert report["stats"][0] == {
        "name": "db.query",
        "count": 2,
        "errors": 1,
        "total_ms": 12.0,
        "self_ms": 11.75,
        "min_ms": 3.0,
        "max_ms": 9.0,
        "p50_ms": 6.0,
        "p95_ms": pytest.approx(8.7),
    }


def test_trace_show_osprofiler_prints_start_and_stop_messages(cwd: Path) -> None:
    messages = orjson.loads(run_ok(cwd, "trace", "show", MID, "--osprofiler"))
    assert [(m["name"], m["trace_id"], m["parent_id"]) for m in messages] == [
        # The child started 1 ms before its parent (clocks of two hosts): time order wins.
        ("worker.step-start", sid(5), sid(4)),
        ("remote.call-start", sid(4), "feedfacefeedface"),
        ("worker.step-stop", sid(5), sid(4)),
        ("remote.call-stop", sid(4), "feedfacefeedface"),
    ]
    assert {m["base_id"] for m in messages} == {MID}
    assert messages[1]["timestamp"] == "2024-07-03T09:46:40.100000"
    assert messages[1]["info"] == {"host": "web-1"}


def test_trace_show_html_is_the_rendered_page(cwd: Path) -> None:
    page = run_ok(cwd, "trace", "show", OLD, "--html")
    store = Store(f"sqlite:///{cwd / '.jobtrace' / 'jobtrace.db'}", create=False)
    try:
        spans = store.get_trace(OLD)
    finally:
        store.close()
    assert spans is not None
    assert page == render_trace_html(trace_json(spans))


def test_trace_show_dot_is_a_graph(cwd: Path) -> None:
    dot = run_ok(cwd, "trace", "show", OLD, "--dot")
    assert dot.startswith("digraph trace {")
    assert '[label="handle\\n10.0 ms"];' in dot
    assert "TimeoutError" in dot and dot.count(" -> ") == 3


@pytest.mark.parametrize(
    ("flags", "suffix"),
    [((), "txt"), (("--json",), "json"), (("--html",), "html"), (("--dot",), "dot"),
     (("--osprofiler",), "json")],
)  # fmt: skip
def test_trace_show_out_writes_the_same_output_to_a_file(
    cwd: Path, flags: tuple[str, ...], suffix: str
) -> None:
    target = cwd / f"trace.{suffix}"
    out = run_ok(cwd, "trace", "show", OLD, *flags, "--out", str(target))
    assert out.startswith("Wrote the ") and out.rstrip().endswith(f" to {target}")
    written = target.read_text(encoding="utf-8")
    if flags:
        assert written == run_ok(cwd, "trace", "show", OLD, *flags)
    else:
        assert written.startswith(f"handle  trace {OLD}\n")
        assert "\x1b[" not in written  # plain text, no terminal colours
    if suffix == "json":
        json.loads(written)


def test_trace_show_out_into_a_missing_directory_fails_in_one_line(cwd: Path) -> None:
    result = jobtrace_cli("trace", "show", OLD, "--out", str(cwd / "no" / "t.txt"), cwd=cwd)
    assert result.returncode == 1
    assert result.stderr.startswith("jobtrace: error: cannot write ")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("trace_id", ["0123456789abcdef", "01907a"])
def test_trace_show_of_an_unknown_or_ambiguous_id_fails_in_one_line(
    cwd: Path, trace_id: str
) -> None:
    result = jobtrace_cli("trace", "show", trace_id, cwd=cwd)
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("jobtrace: error: ")
    assert ("ambiguous" if trace_id == "01907a" else "no trace '0123456789abcdef'") in line


def test_trace_show_takes_one_format(cwd: Path) -> None:
    result = jobtrace_cli("trace", "show", OLD, "--json", "--dot", cwd=cwd)
    assert result.returncode == 2
    assert "choose one output format, not --json and --dot" in result.stderr
    result = jobtrace_cli("trace", "show", OLD, "--html", "--osprofiler", cwd=cwd)
    assert result.returncode == 2


def test_every_trace_command_has_help(cwd: Path) -> None:
    for args in (("trace",), ("trace", "list"), ("trace", "show")):
        out = run_ok(cwd, *args, "--help")
        assert out.startswith(f"Usage: jobtrace {' '.join(args)} ")
    assert "--osprofiler" in run_ok(cwd, "trace", "show", "--help")
    assert "trace" in run_ok(cwd, "--help")
