"""The store on SQLite and on the real PostgreSQL server: schema, migrations, upserts."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from jobtrace import model
from jobtrace.errors import QueryError, StoreError
from jobtrace.store import Store, schema
from jobtrace.store.migrate import MIGRATIONS_DIR
from jobtrace.store.versions import HEAD, VERSION_TABLE


def job_record(
    job_id: str = "j1", seq: int = 1, status: str = "running", **over: Any
) -> model.Record:
    fields = dict.fromkeys(model.FIELDS[model.JOB])
    fields.update(
        id=job_id,
        seq=seq,
        name="train",
        experiment="exp",
        status=status,
        start_time=1000.0,
        host="h",
        pid=1,
        argv=["a.py"],
        tags={"team": "ml"},
        params={"lr": 0.1},
        last_heartbeat=1000.0,
        heartbeat_interval=2.0,
    )
    fields.update(over)
    return (model.JOB, *fields.values())


@pytest.fixture
def store(store_url: str) -> Any:
    s = Store(store_url)
    yield s
    s.close()


def rows(store: Store, table: sa.Table) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table))]


def test_a_new_store_is_migrated_to_head(store: Store) -> None:
    assert store.revision() == HEAD


def test_head_is_the_newest_migration() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD


def test_migrations_build_exactly_the_schema_module(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, schema.metadata) == []


def test_upgrade_twice_is_a_no_op(store: Store) -> None:
    assert store.upgrade() == HEAD
    assert store.upgrade() == HEAD


def test_job_snapshots_keep_the_newest_whatever_the_order(store: Store) -> None:
    final = job_record(seq=5, status="succeeded", end_time=1010.0, duration=10.0, exit_code=0)
    store.write([final])
    store.write([job_record(seq=3)])  # a late heartbeat from a replayed spool
    job = store.get_job("j1", now=1001.0)
    assert job is not None
    assert (job["status"], job["exit_code"], job["duration"]) == ("succeeded", 0, 10.0)
    assert job["tags"] == {"team": "ml"} and job["argv"] == ["a.py"]


def test_several_snapshots_of_one_job_in_one_batch(store: Store) -> None:
    store.write([job_record(seq=1), job_record(seq=3, status="failed"), job_record(seq=2)])
    job = store.get_job("j1", now=1001.0)
    assert job is not None and job["status"] == "failed"


def test_a_job_creates_its_experiment(store: Store) -> None:
    store.write([job_record()])
    assert [r["name"] for r in rows(store, schema.experiments)] == ["exp"]


def test_metric_values_including_specials_are_stored_exactly(store: Store) -> None:
    values = [0.1, math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]
    store.write([(model.METRIC, "j1", "v", step, v, 100.0 + step) for step, v in enumerate(values)])
    found = sorted(rows(store, schema.metrics), key=lambda r: r["step"])
    decoded = [
        r["value"] if r["special"] is None else model.decode_float(r["special"]) for r in found
    ]
    for got, want in zip(decoded, values, strict=True):
        assert (math.isnan(got) and math.isnan(want)) or got == want


def test_a_second_write_to_a_metric_key_replaces_the_first(store: Store) -> None:
    store.write([(model.METRIC, "j1", "loss", 1, 0.9, 1.0)])
    store.write(
        [(model.METRIC, "j1", "loss", 1, 0.7, 2.0), (model.METRIC, "j1", "loss", 1, 0.5, 3.0)]
    )
    assert [(r["value"], r["timestamp"]) for r in rows(store, schema.metrics)] == [(0.5, 3.0)]


def test_latest_metric_is_the_highest_step_even_out_of_order(store: Store) -> None:
    store.write([(model.METRIC, "j1", "loss", s, float(s), 1.0) for s in (3, 9, 4)])
    store.write(
        [
            (model.METRIC, "j1", "loss", 2, math.nan, 1.0),
            (model.METRIC, "j1", "acc", 0, math.inf, 1.0),
        ]
    )
    latest = {r["name"]: r for r in rows(store, schema.metric_latest)}
    assert (latest["loss"]["step"], latest["loss"]["value"]) == (9, 9.0)
    assert (latest["acc"]["value"], latest["acc"]["special"]) == (None, "inf")


def test_every_record_kind_is_stored_and_rewrites_are_idempotent(store: Store) -> None:
    batch = [
        (
            model.SPAN,
            "a" * 32,
            "b" * 16,
            None,
            "root",
            1,
            2,
            {"k": "<v>"},
            None,
            None,
            "j1",
            "h",
            1,
            "main",
            "svc",
        ),
        (
            model.ITEM,
            "i1",
            "j1",
            "f.csv",
            1.0,
            0.5,
            10,
            3,
            1024,
            "error",
            "ValueError",
            "bad",
            2048.0,
            {"x": 1},
        ),
        (
            model.SERIES,
            "host:1",
            None,
            "requests",
            "counter",
            "sum",
            '{"path":"/"}',
            3.0,
            None,
            5.0,
        ),
        (model.PROFILE, "p1", "j1", "cpu", "collapsed", "main;work 10", 5.0),
        (model.EXPERIMENT, "exp2", "described", {"a": 1}, 5.0),
    ]
    store.write(batch)
    store.write(batch)
    assert rows(store, schema.spans)[0]["info"] == {"k": "<v>"}
    assert rows(store, schema.items)[0]["error_message"] == "bad"
    assert rows(store, schema.series)[0]["value"] == 3.0
    assert rows(store, schema.profiles)[0]["data"] == "main;work 10"
    assert rows(store, schema.experiments)[0]["description"] == "described"
    for table in (schema.spans, schema.items, schema.series, schema.profiles):
        assert len(rows(store, table)) == 1


def test_a_batch_id_is_stored_once(store: Store) -> None:
    assert store.write([(model.METRIC, "j1", "x", 1, 1.0, 1.0)], batch_id="b-1") is True
    assert store.write([(model.METRIC, "j1", "x", 2, 1.0, 1.0)], batch_id="b-1") is False
    assert [r["step"] for r in rows(store, schema.metrics)] == [1]


def test_list_jobs_newest_first_with_filters(store: Store) -> None:
    store.write(
        [
            job_record("old", start_time=1.0, status="succeeded"),
            job_record("new", start_time=3.0, status="failed", experiment="other"),
            job_record("mid", start_time=2.0, status="succeeded"),
        ]
    )
    assert [j["id"] for j in store.list_jobs(now=10.0)] == ["new", "mid", "old"]
    assert [j["id"] for j in store.list_jobs(experiment="exp", now=10.0)] == ["mid", "old"]
    assert [j["id"] for j in store.list_jobs(status="failed", now=10.0)] == ["new"]
    assert [j["id"] for j in store.list_jobs(limit=1, now=10.0)] == ["new"]


def test_a_running_job_with_a_stale_heartbeat_reads_lost(store: Store) -> None:
    store.write(
        [job_record("alive", last_heartbeat=1000.0), job_record("dead", last_heartbeat=900.0)]
    )
    now = 1000.0 + 5 * 2.0 + 10.0 - 1  # just inside the window for "alive"
    assert store.get_job("alive", now=now)["status"] == "running"  # type: ignore[index]
    assert store.get_job("dead", now=now)["status"] == "lost"  # type: ignore[index]
    assert [j["id"] for j in store.list_jobs(status="lost", now=now)] == ["dead"]
    assert [j["id"] for j in store.list_jobs(status="running", now=now)] == ["alive"]


def test_get_job_accepts_a_unique_prefix(store: Store) -> None:
    store.write([job_record("01abc"), job_record("01abd"), job_record("02x")])
    assert store.get_job("02", now=time.time())["id"] == "02x"  # type: ignore[index]
    assert store.get_job("zzz") is None
    with pytest.raises(QueryError, match="ambiguous"):
        store.get_job("01ab")


def test_unknown_status_filter_is_a_clear_error(store: Store) -> None:
    with pytest.raises(StoreError, match="unknown status"):
        store.list_jobs(status="exploded")


def test_a_corrupt_sqlite_file_is_a_one_line_store_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as info:
        Store(f"sqlite:///{path}")
    assert "not a database" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_reader_does_not_create_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no jobtrace store"):
        Store(f"sqlite:///{tmp_path}/missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_writer_plans_match_the_schema() -> None:
    """The SQL-free write plans name exactly the schema's columns, keys and JSON columns."""
    from jobtrace.store.writer import JOB_EXPERIMENT, PLANS, TablePlan

    for spec in (*PLANS, JOB_EXPERIMENT):
        table = schema.metadata.tables[spec.table]
        plan = TablePlan(spec, "sqlite")
        assert sorted(plan.columns) == sorted(c.name for c in table.columns), spec.table
        assert list(spec.keys) == [c.name for c in table.primary_key.columns], spec.table
        json_columns = {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
        assert set(spec.json) == json_columns, spec.table


def test_the_sqlite_sink_does_not_import_sqlalchemy_for_a_current_store(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/s.db"
    Store(url).close()  # created and migrated beforehand
    code = (
        "import sys; from jobtrace.sinks import open_sink\n"
        f"sink = open_sink({url!r})\n"
        "sink.write([('metric', 'j', 'x', 1, 1.0, 1.0)])\n"
        "print('sqlalchemy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert [r["step"] for r in rows(Store(url), schema.metrics)] == [1]


def test_large_mixed_batches_store_every_value_exactly(store: Store) -> None:
    """Rows are built a column at a time: ids shared between spans, hex strings beside
    ints, every kind of JSON value, NaN/±Inf beside None must each land as written alone."""
    trace = 2**127 + 5  # one int object shared by a trace's spans, as the hot path shares it
    infos: list[Any] = [None, {}, {"k": [1, "é"]}, "text", [1, 2], {"bad": "\ud800"}, {1: "x"}]
    spans = [
        (
            model.SPAN,
            trace,
            100 + i,
            None if i == 0 else 100,
            f"s{i}",
            i,
            1,
            infos[i % 7],
            None,
            None,
            "j1",
            "h",
            1,
            "t",
            None if i % 2 else f"svc{i % 3}",
        )
        for i in range(60)
    ]
    spans.append(
        (model.SPAN, "e" * 32, "f" * 16, "0" * 16, "wire", 1, 1, None, None, None,
         "j1", "h", 1, "t", "wire-svc")
    )  # fmt: skip
    values = [None, math.nan, math.inf, -math.inf, 1.5, 2]
    series = [
        (model.SERIES, "src", None, f"s{i}", "gauge", None, "{}", values[i % 6], None, 1.0)
        for i in range(30)
    ]
    jobs = [job_record("j9", seq=s, status=f"s{s}"[:16]) for s in (3, 1, 2)]
    jobs += [job_record(f"k{i}", seq=1, tags=None) for i in range(5)]
    metrics = [(model.METRIC, "j1", "m", step, float(step), 1.0) for step in (5, 9, 7)]
    store.write([*spans, *series, *jobs, *metrics])

    stored = {(r["trace_id"], r["span_id"]): r for r in rows(store, schema.spans)}
    assert len(stored) == 61
    for record in spans[:60]:
        row = stored[(f"{trace:032x}", f"{record[2]:016x}")]
        parent = record[3]
        assert row["parent_id"] == (None if parent is None else f"{parent:016x}")
        info = record[7]
        expected = {"bad": "\\ud800"} if info == {"bad": "\ud800"} else info
        assert row["info"] == ({"1": "x"} if info == {1: "x"} else expected)
    assert stored[("e" * 32, "f" * 16)]["parent_id"] == "0" * 16
    by_name = {r["name"]: r for r in rows(store, schema.series)}
    for record in series:
        row, value = by_name[record[3]], record[7]
        if value is None or math.isfinite(value):
            assert (row["value"], row["special"]) == (value, None)
        else:
            assert (row["value"], row["special"]) == model.split_float(value)
    snapshots = {r["id"]: r for r in rows(store, schema.jobs)}
    assert snapshots["j9"]["seq"] == 3 and snapshots["j9"]["status"] == "s3"
    assert snapshots["k0"]["tags"] is None and snapshots["k0"]["argv"] == ["a.py"]
    assert [(r["step"], r["value"]) for r in rows(store, schema.metric_latest)] == [(9, 9.0)]


def test_text_that_copy_and_sql_treat_specially_round_trips(store: Store) -> None:
    """PostgreSQL rows travel in COPY's text format, built here: tabs, newlines, carriage
    returns, backslashes, a literal ``\\N`` and ``\\.`` must each come back as written,
    in plain columns and inside JSON documents, as must the extremes of floats."""
    awkward = ["a\tb", "line\nnext", "cr\rhere", "back\\slash", "\\N", "\\.", "é ☃ \"q\" 'q'"]
    spans = [
        (model.SPAN, f"{i:032x}", f"{i:016x}", None, text, i, 1, {"v": text, text: [text]},
         "E" if i % 2 else None, text if i % 2 else None, "j1", text, i, text, text)
        for i, text in enumerate(awkward)
    ]  # fmt: skip
    floats = [1e300, 5e-324, -0.0, 1.0, 2, 3]  # ints and floats in one column
    metrics = [(model.METRIC, "j1", "m", step, v, 1.5) for step, v in enumerate(floats)]
    store.write([*spans, *metrics])
    by_name = {r["name"]: r for r in rows(store, schema.spans)}
    for record in spans:
        row = by_name[record[4]]
        assert row["info"] == record[7]
        assert (row["host"], row["thread"], row["error_message"], row["service"]) == (
            record[11],
            record[13],
            record[9],
            record[14],
        )
    stored = {r["step"]: r["value"] for r in rows(store, schema.metrics)}
    assert [stored[i] for i in range(len(floats))] == floats


@pytest.mark.postgresql
def test_postgres_connections_notice_a_vanished_peer(postgres_url: str) -> None:
    """Keepalives and a TCP user timeout are set on the live connection, so a network cut
    fails a write within about half a minute instead of hanging the writer for hours."""
    store = Store(postgres_url)
    try:
        with store.engine.connect() as conn:
            dsn = conn.connection.dbapi_connection.info.dsn  # type: ignore[union-attr]
    finally:
        store.close()
    assert "tcp_user_timeout=30000" in dsn and "keepalives_idle=10" in dsn
