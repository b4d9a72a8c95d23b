"""Service names on spans, and trace search: the Store API, the CLI and the README."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import jobtrace
from jobtrace import _config, model
from jobtrace.errors import ConfigurationError, QueryError
from jobtrace.sinks.memory import MemorySink
from jobtrace.store import Store, TraceSearch, schema
from jobtrace.store.trace_search import parse_duration, parse_time
from jobtrace.tracing import spans as span_module
from tests.cli_helpers import cli_env, jobtrace_cli

MS = 1_000_000
NOW_NS = time.time_ns()


def recorded(sink: MemorySink) -> list[dict[str, Any]]:
    jobtrace.flush()
    return [model.to_dict(r) for r in sink.of_kind(model.SPAN)]


# -- the service name --------------------------------------------------------------------


def test_configure_names_the_service_of_every_span(memory_sink: MemorySink) -> None:
    _config.configure(url=f"memory://{memory_sink.name}", service="checkout")
    with jobtrace.Trace("a"), jobtrace.Trace("b"):
        pass
    assert {s["service"] for s in recorded(memory_sink)} == {"checkout"}


def test_the_environment_names_the_service(
    memory_sink: MemorySink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_config.ENV_SERVICE, "  billing ")
    _config.configure(url=f"memory://{memory_sink.name}")
    with jobtrace.Trace("a"):
        pass
    assert [s["service"] for s in recorded(memory_sink)] == ["billing"]


def test_a_bad_service_is_refused_at_configure() -> None:
    with pytest.raises(ConfigurationError, match="at most 256"):
        _config.resolve(service="x" * 257)
    with pytest.raises(ConfigurationError, match="must be a string"):
        _config.resolve(service=3)  # type: ignore[arg-type]


def test_a_job_names_the_service_unless_one_is_configured(memory_sink: MemorySink) -> None:
    with jobtrace.job("nightly-etl", report=False, profile=False):
        with jobtrace.Trace("in-job"):
            pass
        with jobtrace.job("inner", report=False, profile=False), jobtrace.Trace("nested"):
            pass
    with jobtrace.Trace("after"):
        pass
    by_name = {s["name"]: s["service"] for s in recorded(memory_sink)}
    # The process's first job names it; once no job runs, the script's name is back.
    assert by_name == {
        "in-job": "nightly-etl",
        "nested": "nightly-etl",
        "after": span_module.script_name(),
    }
    _config.configure(url=f"memory://{memory_sink.name}", service="fixed")
    with jobtrace.job("other", report=False, profile=False), jobtrace.Trace("fixed"):
        pass
    assert recorded(memory_sink)[-1]["service"] == "fixed"


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("/srv/app/train.py", "train"),
        ("-c", "python"),
        ("", "python"),
        ("/p/etl/__main__.py", "etl"),
    ],
)
def test_the_script_name_is_the_default_service(
    monkeypatch: pytest.MonkeyPatch, argv0: str, expected: str
) -> None:
    monkeypatch.setattr(sys, "argv", [argv0])
    assert span_module.script_name() == expected


def test_a_script_run_by_python_names_its_spans_after_itself(tmp_path: Path) -> None:
    script = tmp_path / "ingest_feed.py"
    script.write_text("import jobtrace\nwith jobtrace.Trace('x'):\n    pass\n")
    done = subprocess.run(
        [sys.executable, str(script)],
        env=cli_env(tmp_path / ".jobtrace"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    store = Store(f"sqlite:///{tmp_path / '.jobtrace' / 'jobtrace.db'}")
    try:
        assert [t["service"] for t in store.list_traces()] == ["ingest_feed"]
    finally:
        store.close()


def test_osprofiler_project_and_service_name_the_service(memory_sink: MemorySink) -> None:
    from jobtrace.compat.osprofiler import notifier, profiler

    try:
        notifier.create(f"memory://{memory_sink.name}", "shop", "api", "host-1")
        profiler.init("key")
        with profiler.Trace("point"):
            pass
        notifier.create(f"memory://{memory_sink.name}", project="shop", service="db")
        with jobtrace.Trace("plain"):
            pass
    finally:
        profiler.clean()
        notifier.clear_notifier_cache()
        span_module.set_default_service(None)
    assert [s["service"] for s in recorded(memory_sink)] == ["shop-api", "shop-db"]


def test_spans_from_clients_before_services_existed_are_accepted() -> None:
    """A 13-field span (an older client's wire array, or its spool) gets a NULL service."""
    old = ["span", "a" * 32, "b" * 16, None, "n", 1, 2, None, None, None, "j", "h", 1, "t"]
    assert model.from_list(old)[-1] is None
    assert model.complete([tuple(old)])[0] == (*old, None)
    whole = (*old, "svc")
    records = [whole]
    assert model.complete(records) is records


# -- searching -----------------------------------------------------------------------------


def span(
    trace: int,
    n: int,
    name: str,
    *,
    service: str | None,
    start_ms: float = 0,
    duration_ms: float = 1,
    parent: int | None = None,
    error: bool = False,
    job: str | None = "job-1",
) -> model.Record:
    return (
        model.SPAN,
        f"{trace:032x}",
        f"{n:016x}",
        None if parent is None else f"{parent:016x}",
        name,
        NOW_NS + round(start_ms * MS),
        round(duration_ms * MS),
        None,
        "TimeoutError" if error else None,
        "slow" if error else None,
        job,
        "host",
        1,
        "MainThread",
        service,
    )


# Trace ids in order of age: 1 oldest. A trace's root is span 1.
TRACES = [
    # 1: an api request whose db call failed after 300 ms, an hour ago
    span(1, 1, "GET /cart", service="api", start_ms=-3_600_000, duration_ms=400),
    span(1, 2, "db.query", service="db", start_ms=-3_599_990, duration_ms=300, parent=1,
         error=True),
    # 2: a fast api request, ten minutes ago
    span(2, 1, "GET /cart", service="api", start_ms=-600_000, duration_ms=20),
    span(2, 2, "db.query", service="db", start_ms=-599_990, duration_ms=5, parent=1),
    # 3: a batch of another job, now; its long span is not a db one
    span(3, 1, "nightly", service="etl", duration_ms=2_000, job="job-2"),
    span(3, 2, "db.query", service="db", start_ms=10, duration_ms=2, parent=1, job="job-2"),
    # 4: spans from before services existed
    span(4, 1, "legacy", service=None, duration_ms=1),
]  # fmt: skip


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [int(r["trace_id"], 16) for r in rows]


@pytest.fixture
def store(store_url: str) -> Any:
    s = Store(store_url)
    s.write(TRACES)
    yield s
    s.close()


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({}, [4, 3, 2, 1]),
        ({"service": "api"}, [2, 1]),
        ({"service": "db"}, [3, 2, 1]),
        ({"service": "nosuch"}, []),
        ({"name": "db.*"}, [3, 2, 1]),
        ({"name": "GET /c?rt"}, [2, 1]),
        ({"name": "get*"}, []),  # case-sensitive, as span names are
        ({"name": "db.query", "service": "api"}, []),  # one span must meet both
        ({"min_duration": "250ms"}, [3, 1]),
        ({"min_duration": "250ms", "name": "db.*"}, [1]),  # the db span of 3 is short
        ({"min_duration": "250ms", "service": "api"}, [1]),
        ({"max_duration": "2ms"}, [4, 3]),
        ({"error": True}, [1]),
        ({"error": True, "service": "api"}, []),  # the api span did not fail
        ({"since": "30m"}, [4, 3, 2]),
        ({"until": "30m"}, [1]),
        ({"since": "2h", "until": "5m", "service": "db"}, [2, 1]),
        ({"job_id": "job-2"}, [3]),
        ({"job_id": "job-2", "service": "api"}, []),
    ],
)
def test_a_trace_matches_when_one_span_meets_every_condition(
    store: Store, conditions: dict[str, Any], expected: list[int]
) -> None:
    # Times ago count from when the spans were made, however long the suite has run.
    search = TraceSearch.parse(**conditions, now=NOW_NS / 1e9)
    assert ids(store.list_traces(search=search)) == expected
    page = store.find_traces(search=search, limit=1)
    assert page.total == len(expected)
    assert ids(page.data) == expected[:1]


def test_search_results_are_summaries_of_whole_traces(store: Store) -> None:
    [row] = store.list_traces(search=TraceSearch.parse(error=True))
    # The whole trace is summarised, not the matching span alone.
    assert (row["name"], row["service"], row["spans"], row["errors"]) == ("GET /cart", "api", 2, 1)
    assert row["duration_ns"] == 400 * MS


def test_search_pages_never_overlap(store: Store) -> None:
    search = TraceSearch.parse(service="db")
    pages = [store.find_traces(search=search, index=i, limit=1) for i in range(4)]
    assert [ids(p.data) for p in pages] == [[3], [2], [1], []]


def test_a_search_pattern_is_a_value_never_sql(store: Store) -> None:
    for name in ("%", "_", "db.query' OR '1'='1", "[d]b.*"):
        assert store.list_traces(search=TraceSearch.parse(name=name)) == []


def test_a_service_search_uses_the_service_index(store: Store, store_url: str) -> None:
    from jobtrace.store.trace_search import span_conditions

    query = (
        sa.select(schema.spans.c.trace_id)
        .where(*span_conditions(TraceSearch.parse(service="api"), store.engine.dialect.name))
        .distinct()
        .order_by(schema.spans.c.trace_id.desc())
        .limit(20)
    )
    with store.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")  # a 7-row table: force the choice
            sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(r[0]) for r in conn.exec_driver_sql(f"EXPLAIN {sql}"))
    assert "ix_spans_service_trace_id" in plan


@pytest.mark.parametrize(
    ("text", "ns"),
    [("250ms", 250 * MS), ("1.5s", 1_500 * MS), ("2m", 120_000 * MS), ("500us", 500_000),
     ("100ns", 100), ("1h", 3_600_000 * MS), (" 3 d ", 3 * 86_400_000 * MS), (".5s", 500 * MS)],
)  # fmt: skip
def test_durations_read_as_jaeger_writes_them(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["250", "1.5 parsecs", "-1s", "", "ms", "1e3ms"])
def test_a_duration_without_a_unit_is_refused_with_the_units(text: str) -> None:
    with pytest.raises(QueryError, match=r"ns, us, ms, s, m, h, d"):
        parse_duration(text)


def test_times_are_iso_or_ago() -> None:
    now = 1_800_000_000.0
    assert parse_time("1h", now=now) == int(now * 1e9) - 3_600 * 10**9
    utc = datetime(2027, 1, 15, 8, tzinfo=UTC)
    assert parse_time("2027-01-15T08:00:00Z") == int(utc.timestamp()) * 10**9
    local = datetime(2027, 1, 15, 8).astimezone()  # no offset: local time
    assert parse_time("2027-01-15T08:00:00") == int(local.timestamp()) * 10**9
    assert parse_time("2027-01-15T09:00:00+01:00") == parse_time("2027-01-15T08:00:00Z")
    with pytest.raises(QueryError, match="ISO 8601"):
        parse_time("yesterday")


def test_contradictory_bounds_are_refused() -> None:
    with pytest.raises(QueryError, match="minimum duration is above"):
        TraceSearch.parse(min_duration="2s", max_duration="1s")
    with pytest.raises(QueryError, match="since is after until"):
        TraceSearch.parse(since="1h", until="2h")


# -- the CLI -------------------------------------------------------------------------------


def write_store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'traces.db'}"
    s = Store(url)
    s.write(TRACES)
    s.close()
    return url


def test_trace_list_searches_from_the_command_line(tmp_path: Path) -> None:
    url = write_store(tmp_path)
    found = jobtrace_cli(
        "trace", "list", "--store", url, "--service", "api", "--min-duration", "250ms",
        "--json", cwd=tmp_path, check=True,
    )  # fmt: skip
    [row] = json.loads(found.stdout)
    assert (int(row["trace_id"], 16), row["service"], row["name"]) == (1, "api", "GET /cart")
    table = jobtrace_cli(
        "trace", "list", "--store", url, "--name", "db.*", cwd=tmp_path, check=True
    ).stdout
    assert "SERVICE" in table and "etl" in table and "api" in table
    none = jobtrace_cli(
        "trace", "list", "--store", url, "--error", "--service", "etl", cwd=tmp_path
    )
    assert (none.returncode, none.stdout.strip()) == (0, "No matching traces.")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-duration", "250"], "is not a duration"),
        (["--since", "last tuesday"], "neither an ISO 8601 time"),
        (["--since", "1h", "--until", "2h"], "since is after until"),
    ],
)
def test_a_bad_search_is_one_line_and_a_failure(
    tmp_path: Path, args: list[str], message: str
) -> None:
    url = write_store(tmp_path)
    done = jobtrace_cli("trace", "list", "--store", url, *args, cwd=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_trace_show_marks_services_in_the_tree_and_the_html(tmp_path: Path) -> None:
    url = write_store(tmp_path)
    tree = jobtrace_cli("trace", "show", f"{1:032x}", "--store", url, cwd=tmp_path, check=True)
    lines = tree.stdout.splitlines()
    assert any("services api, db" in line for line in lines)
    assert any("[api] GET /cart" in line for line in lines)
    assert any("[db] db.query" in line for line in lines)
    page = tmp_path / "t.html"
    jobtrace_cli(
        "trace", "show", f"{1:032x}", "--store", url, "--html", "--out", str(page),
        cwd=tmp_path, check=True,
    )  # fmt: skip
    html = page.read_text()
    assert '"service":"api"' in html.replace(" ", "") or '"service": "api"' in html


# -- the README ------------------------------------------------------------------------------


def test_the_readme_trace_search_runs_verbatim(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    part = readme.split("**Finding traces.**", 1)[1]
    program = part.split("```python\n", 1)[1].split("```", 1)[0]
    commands = part.split("```bash\n", 1)[1].split("```", 1)[0]
    reader = part.split("```bash\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "checkout.py").write_text(program)
    (tmp_path / "reader.py").write_text(reader)
    env = cli_env(tmp_path / ".jobtrace")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "handle /checkout" in done.stdout and "No matching traces." in done.stdout
    listed = json.loads(done.stdout[done.stdout.index("[") :])
    assert [(t["service"], t["spans"], t["errors"]) for t in listed] == [("checkout", 6, 1)]
    read = subprocess.run(
        [sys.executable, "reader.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert read.returncode == 0, read.stderr
    expected = textwrap.dedent(reader).rsplit("# ", 1)[1].strip()
    assert read.stdout.strip() == expected
