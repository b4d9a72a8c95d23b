"""``jobtrace profile`` and ``jobtrace report rebuild``, run as users run them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from jobtrace.store import Store
from tests.cli_helpers import cli_env, jobtrace_cli
from tests.profile_helpers import LOAD, MAIN, PROCESS, READ, SCORE, job_record, profile_records
from tests.server_helpers import thread_server


@pytest.fixture
def profiled(tmp_path: Path) -> str:
    """A SQLite store holding a profiled job ``job-cli-1`` and an unprofiled ``other-2``."""
    url = f"sqlite:///{tmp_path / 'jt.db'}"
    with Store(url) as store:
        store.write([job_record("job-cli-1"), *profile_records("job-cli-1")])
        store.write([job_record("other-2", name="bare")])
    return url


def test_the_table_lists_top_functions_with_self_and_total(profiled: str, tmp_path: Path) -> None:
    done = jobtrace_cli("profile", "job-cli", "--store", profiled, cwd=tmp_path, check=True)
    lines = done.stdout.splitlines()
    assert "Top functions by self wall time (total 7.50 s)" in lines[0]
    assert re.search(r"SELF\s+SELF %\s+TOTAL\s+TOTAL %\s+FUNCTION", lines[1])
    first = lines[2]
    assert SCORE in first and "3.00 s" in first and "40.0%" in first
    assert any(MAIN in line and "100.0%" in line for line in lines)


def test_the_memory_table_shows_bytes(profiled: str, tmp_path: Path) -> None:
    done = jobtrace_cli(
        "profile", "job-cli-1", "-k", "memory", "--store", profiled, cwd=tmp_path, check=True
    )
    assert "300.0 MiB" in done.stdout and "memory at the peak" in done.stdout


def test_folded_prints_one_stack_a_line_with_integer_weights(profiled: str, tmp_path: Path) -> None:
    done = jobtrace_cli(
        "profile", "job-cli-1", "-f", "folded", "-k", "cpu", "--store", profiled, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"{PROCESS};{MAIN};{LOAD};{READ} 100000" in lines
    assert all(re.fullmatch(r"[^;]+(;[^;]+)* \d+", line) for line in lines)


def test_speedscope_and_html_are_written_to_files(profiled: str, tmp_path: Path) -> None:
    jobtrace_cli(
        "profile", "job-cli-1", "-f", "speedscope", "--store", profiled, cwd=tmp_path, check=True
    )
    doc = orjson.loads((tmp_path / "job-cli-1.wall.speedscope.json").read_bytes())
    assert doc["profiles"][0]["unit"] == "microseconds"
    out = tmp_path / "page.html"
    done = jobtrace_cli(
        "profile", "job-cli-1", "-f", "html", "-o", str(out), "--store", profiled, cwd=tmp_path
    )
    assert done.returncode == 0 and f"wrote {out}" in done.stderr
    assert "Content-Security-Policy" in out.read_text()


def test_unknown_jobs_and_missing_profiles_are_one_line_errors(
    profiled: str, tmp_path: Path
) -> None:
    unknown = jobtrace_cli("profile", "zzz", "--store", profiled, cwd=tmp_path)
    bare = jobtrace_cli("profile", "other-2", "--store", profiled, cwd=tmp_path)
    for done in (unknown, bare):
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("jobtrace: error: ")
    assert "no job 'zzz'" in unknown.stderr
    assert "job other-2 has no wall profile" in bare.stderr


def test_the_profile_is_read_from_a_server_too(profiled: str, tmp_path: Path) -> None:
    with thread_server(profiled) as url:
        done = jobtrace_cli("profile", "job-cli-1", "-f", "folded", "--store", url, cwd=tmp_path)
        missing = jobtrace_cli("profile", "nope", "--store", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{PROCESS};{MAIN};{LOAD};{READ} 1500000" in done.stdout.splitlines()
    assert missing.returncode == 1 and "no job 'nope'" in missing.stderr


def test_report_rebuild_writes_the_whole_report_directory(profiled: str, tmp_path: Path) -> None:
    done = jobtrace_cli(
        "report", "rebuild", "job-cli", "--out", "again", "--store", profiled, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "again"
    assert sorted(p.name for p in out.iterdir()) == ["profile.json", "report.html", "report.json"]
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["id"] == "job-cli-1" and report["duration_ms"] == 7500.0
    assert LOAD in (out / "report.html").read_text()
    # Without --out: the job's own report directory under JOBTRACE_DIR.
    jobtrace_cli("report", "rebuild", "job-cli-1", "--store", profiled, cwd=tmp_path, check=True)
    assert (tmp_path / ".jobtrace" / "reports" / "job-cli-1" / "report.html").exists()


@pytest.mark.parametrize(
    "args",
    [("profile",), ("report",), ("report", "rebuild"), ("report", "download")],
)
def test_every_new_command_has_help(args: tuple[str, ...], tmp_path: Path) -> None:
    done = jobtrace_cli(*args, "--help", cwd=tmp_path, check=True)
    assert "Usage: " in done.stdout and len(done.stdout.splitlines()) > 5


def test_the_readme_profile_commands_run_verbatim(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Profiles and reports", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    run_line, rest = block.split("\n", 1)
    shutil.copytree(Path(__file__).parents[1] / "examples", tmp_path / "examples")
    env = cli_env(tmp_path / ".jobtrace")

    def bash(script: str) -> None:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr

    bash(run_line)
    # The job's samples, as the sampler records them (its records join any it made).
    with Store(f"sqlite:///{tmp_path / '.jobtrace' / 'jobtrace.db'}") as store:
        store.write(profile_records("wordfreq-1"))
    bash(rest)
    assert f"{PROCESS};{MAIN};{LOAD};{READ} 100000" in (
        (tmp_path / "wordfreq-1.folded").read_text().splitlines()
    )
    assert (tmp_path / "wordfreq-1.wall.speedscope.json").exists()
    assert (tmp_path / "wordfreq-1-report" / "report.html").exists()
