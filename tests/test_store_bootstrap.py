"""A new SQLite store made by the sink with sqlite3 alone gets exactly the schema the
migrations build (jobtrace.store.bootstrap)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from jobtrace.sinks import open_sink
from jobtrace.store import Store, _sqlite_ddl, bootstrap, sqlite
from jobtrace.store.versions import HEAD

REGENERATE = "python -m jobtrace.store.bootstrap > src/jobtrace/store/_sqlite_ddl.py"


def schema_of(path: Path) -> tuple[str | None, list[str]]:
    """(revision, statements that make the schema) of the SQLite file at ``path``."""
    with closing(sqlite3.connect(path)) as conn:
        return sqlite.revision(conn), bootstrap.dump_schema(conn)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str | None, list[str]]]:
    """The schema of a store made by the migrations (SQLAlchemy and Alembic)."""
    path = tmp_path_factory.mktemp("migrated") / "store.db"
    Store(f"sqlite:///{path}").close()
    yield schema_of(path)


def metric(step: int) -> tuple[str, str, str, int, float, float]:
    return ("metric", "job-1", "loss", step, 0.5, 1.0)


def steps(path: Path) -> list[int]:
    """The steps of the metric points stored at ``path``."""
    with closing(sqlite3.connect(path)) as conn:
        return sorted(step for (step,) in conn.execute("SELECT step FROM metrics"))


def test_the_snapshot_is_what_the_migrations_build(
    migrated: tuple[str | None, list[str]],
) -> None:
    assert (_sqlite_ddl.REVISION, list(_sqlite_ddl.STATEMENTS)) == migrated, (
        f"the schema snapshot is stale: regenerate it with `{REGENERATE}`"
    )


def test_the_snapshot_module_is_exactly_what_the_documented_command_writes() -> None:
    command, _, target = REGENERATE.partition(" > ")
    out = subprocess.run(
        [sys.executable, *command.split()[1:]], capture_output=True, text=True, check=True
    )
    assert target == "src/jobtrace/store/_sqlite_ddl.py"
    assert Path(_sqlite_ddl.__file__).read_text() == out.stdout, REGENERATE
    # The command as the README and the module's docstring give it.
    assert REGENERATE in (Path(__file__).parents[1] / "README.md").read_text()
    assert REGENERATE in (bootstrap.__doc__ or "")


def test_the_sink_makes_a_new_store_without_sqlalchemy(
    tmp_path: Path, migrated: tuple[str | None, list[str]]
) -> None:
    path = tmp_path / "new" / "store.db"  # its directory is made too
    code = (
        "import sys; from jobtrace.sinks import open_sink\n"
        f"sink = open_sink({f'sqlite:///{path}'!r})\n"
        f"sink.write([{metric(7)!r}])\n"
        "sink.close()\n"
        "print(sorted({'sqlalchemy', 'alembic'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert schema_of(path) == migrated == (HEAD, migrated[1])
    assert steps(path) == [7]
    with Store(f"sqlite:///{path}") as store:  # the migrations find nothing to do
        assert store.revision() == HEAD


def test_a_store_made_by_the_sink_matches_the_schema_module(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from jobtrace.store import schema
    from jobtrace.store.versions import VERSION_TABLE

    url = f"sqlite:///{tmp_path / 'store.db'}"
    open_sink(url).close()
    with Store(url) as store, store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, schema.metadata) == []


def test_a_snapshot_older_than_the_newest_migration_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated: tuple[str | None, list[str]]
) -> None:
    monkeypatch.setattr(_sqlite_ddl, "REVISION", "0001")
    path = tmp_path / "store.db"
    with closing(sqlite.connect(path)) as conn:
        assert bootstrap.create_schema(conn) is False
        assert bootstrap.dump_schema(conn) == []
    sink = open_sink(f"sqlite:///{path}")  # the migrations make it instead
    sink.write([metric(1)])
    sink.close()
    assert schema_of(path) == migrated
    assert steps(path) == [1]


def test_a_database_with_tables_but_no_revision_is_left_to_the_migrations(
    tmp_path: Path,
) -> None:
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE mine (x INTEGER)")
        conn.commit()
    with closing(sqlite.connect(path)) as conn:
        assert bootstrap.create_schema(conn) is False
        assert bootstrap.dump_schema(conn) == ["CREATE TABLE mine (x INTEGER)"]


def test_a_store_at_the_newest_revision_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    open_sink(f"sqlite:///{path}").close()
    before = schema_of(path)
    with closing(sqlite.connect(path)) as conn:
        assert bootstrap.create_schema(conn) is True
    assert schema_of(path) == before


def test_processes_starting_together_on_a_new_file_make_one_store(
    tmp_path: Path, migrated: tuple[str | None, list[str]]
) -> None:
    path = tmp_path / "store.db"
    workers = 8
    # Each worker imports everything first, says so, and opens the store when told: all
    # of them then race to create it at once.
    code = (
        "import sys; from jobtrace.sinks import open_sink\n"
        "import jobtrace.sinks.store, jobtrace.store.bootstrap, jobtrace.store.writer\n"
        "print('ready', flush=True); sys.stdin.readline()\n"
        f"sink = open_sink({f'sqlite:///{path}'!r})\n"
        "sink.write([('metric', 'job-1', 'loss', int(sys.argv[1]), 0.5, 1.0)])\n"
        "sink.close()\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(step)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for step in range(workers)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * workers, errors
    assert schema_of(path) == migrated
    assert steps(path) == list(range(workers))
