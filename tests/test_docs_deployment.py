"""docs/deployment-servers.md runs as printed: its ``sh`` blocks, in order, in a fresh
directory, against the real PostgreSQL server (a schema of the test's own), with the page's
own commands (``jobtrace`` on the PATH, ``curl``)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.cli_helpers import cli_env
from tests.server_helpers import free_port
from tests.test_server_fleet import rows

# Real servers, jobs and PostgreSQL on a shared 2-core machine: minutes when it is busy.
pytestmark = [pytest.mark.postgresql, pytest.mark.timeout(600)]

PAGE = Path(__file__).resolve().parent.parent / "docs" / "deployment-servers.md"
BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def test_the_deployment_page_runs_as_printed(postgres_url: str, tmp_path: Path) -> None:
    blocks = BLOCK.findall(PAGE.read_text())
    assert len(blocks) == 4
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    command = bin_dir / "jobtrace"  # the installed command, for this checkout
    command.write_text(f'#!/bin/sh\nexec {sys.executable} -m jobtrace "$@"\n')
    command.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = cli_env(
        work / ".jobtrace", STORE=postgres_url, PORT_A=str(free_port()), PORT_B=str(free_port())
    )
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    # Output to files, not pipes: the servers the page starts in the background keep
    # their copies open after the shell ends.
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout_file, err.open("w") as stderr_file:
        shell = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", "\n".join(blocks)],
            cwd=work,
            env=env,
            stdout=stdout_file,
            stderr=stderr_file,
            start_new_session=True,  # its background servers in its process group
        )
    try:
        shell.wait(timeout=400)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGTERM)
    stdout, stderr = out.read_text(), err.read_text()
    assert shell.returncode == 0, stderr
    assert "Traceback" not in stderr
    # 1: the default store; 2: four jobs in one SQLite file; 3: a job through two servers.
    with contextlib.closing(sqlite3.connect(work / "team.db")) as team:
        assert team.execute("SELECT count(*) FROM metrics").fetchone() == (400,)
        assert team.execute("SELECT DISTINCT status FROM jobs").fetchall() == [("succeeded",)]
    assert rows(postgres_url, "SELECT status FROM jobs") == [("succeeded",)]
    assert rows(postgres_url, "SELECT count(*) FROM metrics") == [(100,)]
    listed = orjson.loads(stdout.strip().splitlines()[-1])
    assert listed["data"][0]["status"] == "succeeded"
