"""`jobtrace spool status|replay`: what a person sees and does with a spool, in a subprocess."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from pathlib import Path

import orjson

from jobtrace.spool import Spool
from tests.cli_helpers import cli_env, jobtrace_cli


def _metrics(job_id: str, steps: range) -> list[tuple[object, ...]]:
    return [("metric", job_id, "loss", step, step / 10, 1_700_000_000.0 + step) for step in steps]


def _spool_two_batches(directory: Path, url: str) -> None:
    spool = Spool(directory / "spool", url)
    spool.write(_metrics("job-a", range(300)), "01spoolcli.0")
    spool.write(_metrics("job-a", range(300, 500)), "01spoolcli.1")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_status_says_the_spool_is_empty_when_nothing_waits(tmp_path: Path) -> None:
    result = jobtrace_cli("spool", "status", cwd=tmp_path, check=True)
    assert result.stdout.strip() == "the spool is empty"


def test_status_lists_files_records_and_the_masked_url(tmp_path: Path) -> None:
    directory = tmp_path / ".jobtrace"
    url = f"http://user:secret@127.0.0.1:{_closed_port()}"
    _spool_two_batches(directory, url)
    rows = orjson.loads(jobtrace_cli("spool", "status", "--json", cwd=tmp_path, check=True).stdout)
    assert len(rows) == 1
    row = rows[0]
    assert (row["files"], row["records"], row["quarantined"], row["owned"]) == (2, 500, 0, 0)
    assert row["url"] == url.replace("secret", "***")
    assert row["bytes"] > 0 and row["oldest_age_s"] >= 0
    table = jobtrace_cli("spool", "status", cwd=tmp_path, check=True).stdout
    assert "secret" not in table and "500" in table


def test_replay_delivers_every_spooled_record_once_and_empties_the_spool(tmp_path: Path) -> None:
    directory = tmp_path / ".jobtrace"
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _spool_two_batches(directory, url)
    result = jobtrace_cli("spool", "replay", "--store", url, cwd=tmp_path, check=True)
    assert "replayed 500 records" in result.stdout
    with sqlite3.connect(tmp_path / "store.db") as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT step) FROM metrics").fetchone()
    assert rows == (500, 500)
    again = jobtrace_cli("spool", "replay", "--store", url, cwd=tmp_path, check=True)
    assert "nothing spooled" in again.stdout
    status = jobtrace_cli("spool", "status", "--store", url, "--json", cwd=tmp_path, check=True)
    assert orjson.loads(status.stdout) == [] or orjson.loads(status.stdout)[0]["files"] == 0


def test_replay_into_an_unreachable_store_keeps_the_records_and_fails_in_one_line(
    tmp_path: Path,
) -> None:
    directory = tmp_path / ".jobtrace"
    url = f"http://127.0.0.1:{_closed_port()}"
    _spool_two_batches(directory, url)
    result = jobtrace_cli("spool", "replay", "--store", url, cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("jobtrace: error: 2 files (500 records) are still spooled")
    assert "run `jobtrace spool replay` again" in last
    rows = orjson.loads(jobtrace_cli("spool", "status", "--json", cwd=tmp_path, check=True).stdout)
    assert (rows[0]["files"], rows[0]["records"]) == (2, 500)


def test_replay_help_names_every_option(tmp_path: Path) -> None:
    result = jobtrace_cli("spool", "replay", "--help", cwd=tmp_path, check=True)
    assert "--store URL" in result.stdout and "--dir DIR" in result.stdout


def test_replay_quarantines_a_damaged_file_and_delivers_the_rest(tmp_path: Path) -> None:
    directory = tmp_path / ".jobtrace"
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _spool_two_batches(directory, url)
    damaged = Spool(directory / "spool", url).write(_metrics("job-b", range(10)), "01damaged")
    damaged.write_bytes(damaged.read_bytes()[:-7])  # a torn write
    result = jobtrace_cli("spool", "replay", "--store", url, cwd=tmp_path, check=True)
    assert "replayed 500 records" in result.stdout
    assert "quarantined 1 files" in result.stderr
    rows = orjson.loads(jobtrace_cli("spool", "status", "--json", cwd=tmp_path, check=True).stdout)
    assert (rows[0]["files"], rows[0]["quarantined"]) == (0, 1)


def test_replay_leaves_the_files_of_a_live_job_to_it(tmp_path: Path) -> None:
    directory = tmp_path / ".jobtrace"
    url = f"sqlite:///{tmp_path / 'store.db'}"
    # Owned by this (live) test process, as a running job's spill files are.
    Spool(directory / "spool", url).write(_metrics("job-c", range(50)), "01live", own=True)
    status = jobtrace_cli("spool", "status", "--json", cwd=tmp_path, check=True)
    row = orjson.loads(status.stdout)[0]
    assert (row["files"], row["owned"]) == (1, 1)
    result = jobtrace_cli("spool", "replay", "--store", url, cwd=tmp_path, check=True)
    assert "replayed 0 records" in result.stdout
    assert "left 1 files to the running jobs" in result.stdout


def test_the_readme_spool_commands_run_verbatim(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("### The spool", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    _spool_two_batches(tmp_path / ".jobtrace", f"sqlite:///{tmp_path / 'jobs.db'}")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        check=False,
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "replayed 500 records" in result.stdout
    with sqlite3.connect(tmp_path / "jobs.db") as conn:
        assert conn.execute("SELECT count(*) FROM metrics").fetchone() == (500,)
