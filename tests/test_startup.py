"""What a process pays to start recording: `import jobtrace` and `jobtrace run` import only
what they use (their cost is measured by bench/bench_import.py and bench_run_overhead.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from jobtrace.cli import COMMANDS, cli
from tests.cli_helpers import cli_env, jobtrace_cli

#: Packages no recording process needs: the store's reader side and migrations, tables,
#: the HTTP client and server, optional backends, process inspection.
HEAVY = (
    "alembic",
    "fastapi",
    "httpx",
    "numpy",
    "pika",
    "prometheus_client",
    "psutil",
    "psycopg",
    "requests",
    "rich",
    "sqlalchemy",
    "uvicorn",
)
#: Also left out by `import jobtrace`: the command line and the store writer's JSON codec.
NOT_ON_IMPORT = (*HEAVY, "click", "orjson")

#: A script that writes, as the process ends, the top-level packages and the jobtrace
#: modules loaded by then (after `jobtrace run` has stored the job and written its report).
REPORTING_SCRIPT = """\
import atexit, sys

def report():
    names = {name.split(".")[0] for name in sys.modules} | {
        name for name in sys.modules if name.startswith("jobtrace.")
    }
    with open(sys.argv[1], "w") as out:
        out.write("\\n".join(sorted(names)))

atexit.register(report)
"""


def loaded(path: Path) -> set[str]:
    return set(path.read_text().split())


def test_import_jobtrace_loads_no_heavy_package() -> None:
    code = "import sys, jobtrace; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(out.stdout.split()) & set(NOT_ON_IMPORT) == set()


def test_jobtrace_run_loads_neither_heavy_packages_nor_other_commands(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(REPORTING_SCRIPT)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    # The first run creates the store, the second finds it: neither needs SQLAlchemy.
    jobtrace_cli("run", "-q", "--store", url, str(script), "first.txt", cwd=tmp_path, check=True)
    jobtrace_cli("run", "-q", "--store", url, str(script), "second.txt", cwd=tmp_path, check=True)

    others = {f"jobtrace.cli.{name}" for name in COMMANDS if name != "run"}
    for run in ("first.txt", "second.txt"):
        modules = loaded(tmp_path / run)
        # Listed after the job was stored: the writer and the report were loaded by then.
        assert {"jobtrace.cli.run", "jobtrace.store.writer", "jobtrace.report.directory"} <= (
            modules
        )
        assert modules & set(HEAVY) == set(), run
        assert modules & others == set(), run
        assert "jobtrace.store.core" not in modules  # the SQLAlchemy-based reader side
    reports = list((tmp_path / ".jobtrace" / "reports").glob("*/report.json"))
    assert len(reports) == 2


def test_a_job_in_a_program_loads_no_heavy_package(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    code = REPORTING_SCRIPT + (
        "import jobtrace\nwith jobtrace.job('etl'):\n    pass\njobtrace.flush()\n"
    )
    program = tmp_path / "program.py"
    program.write_text(code)
    for out in ("first.txt", "second.txt"):
        subprocess.run(
            [sys.executable, str(program), str(tmp_path / out)],
            cwd=tmp_path,
            env=cli_env(tmp_path / ".jobtrace", JOBTRACE_URL=url),
            check=True,
            timeout=120,
        )
        modules = loaded(tmp_path / out)
        assert "jobtrace.store.writer" in modules
        assert modules & {*HEAVY, "click"} == set(), out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_lazy_subcommand_is_a_click_command_of_that_name(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert isinstance(command, click.Command)
    assert command.name == name


def test_help_lists_every_subcommand_without_running_them(tmp_path: Path) -> None:
    result = jobtrace_cli("--help", cwd=tmp_path, check=True)
    listed = result.stdout.split("Commands:", 1)[1].split()
    assert set(COMMANDS) <= set(listed)


def test_an_unknown_subcommand_is_a_usage_error(tmp_path: Path) -> None:
    result = jobtrace_cli("nosuchcommand", cwd=tmp_path)
    assert result.returncode == 2
    assert "No such command 'nosuchcommand'" in result.stderr
