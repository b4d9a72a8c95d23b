"""Failures keep their story: a job that fails with an exception stores its traceback
(size-capped, keeping the innermost frames), on every path a job record takes — the
library into SQLite or PostgreSQL, through a server — and every reader shows it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

import jobtrace
from jobtrace import limits, model
from jobtrace.client import Client
from jobtrace.model import FIELDS, JOB
from jobtrace.sinks.memory import MemorySink
from jobtrace.store import Store
from tests.cli_helpers import cli_env, jobtrace_cli
from tests.server_helpers import thread_server

BOOM = """\
def inner(x):
    return 1 / x


def outer():
    try:
        inner(0)
    except ZeroDivisionError as exc:
        raise ValueError("bad input") from exc


outer()
"""


def last_snapshot(sink: MemorySink, job_id: str) -> dict[str, Any]:
    records = [r for r in sink.of_kind(JOB) if r[1] == job_id]
    return dict(zip(FIELDS[JOB], records[-1][1:], strict=True))


def failing_step() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        raise RuntimeError("step failed") from exc


def test_a_failed_job_stores_its_traceback_with_causes(memory_sink: MemorySink) -> None:
    with pytest.raises(RuntimeError), jobtrace.job("bad") as job:
        failing_step()
    jobtrace.flush()
    stored = last_snapshot(memory_sink, job.id)["traceback"]
    assert stored == job.traceback
    assert stored.startswith("Traceback (most recent call last):\n")
    assert "KeyError: 'missing'" in stored
    assert "The above exception was the direct cause of the following exception:" in stored
    assert ', in failing_step\n    raise RuntimeError("step failed") from exc\n' in stored
    assert stored.endswith("RuntimeError: step failed\n")


def test_a_decorated_function_that_fails_stores_its_traceback(memory_sink: MemorySink) -> None:
    @jobtrace.job("resize")
    def resize() -> None:
        failing_step()

    with pytest.raises(RuntimeError):
        resize()
    jobtrace.flush()
    (record,) = [r for r in memory_sink.of_kind(JOB) if r[5] == "failed"]
    snapshot = dict(zip(FIELDS[JOB], record[1:], strict=True))
    assert "in resize\n" in snapshot["traceback"]


def test_jobs_that_did_not_crash_store_no_traceback(memory_sink: MemorySink) -> None:
    with jobtrace.job("fine") as fine:
        pass
    with pytest.raises(SystemExit), jobtrace.job("exits") as exits:
        sys.exit(3)  # an exit status is no crash: nothing to trace back
    jobtrace.flush()
    assert last_snapshot(memory_sink, fine.id)["traceback"] is None
    snapshot = last_snapshot(memory_sink, exits.id)
    assert (snapshot["status"], snapshot["exit_code"], snapshot["traceback"]) == ("failed", 3, None)


def test_a_huge_traceback_keeps_its_end_behind_a_marker(memory_sink: MemorySink) -> None:
    def chain(depth: int) -> None:
        # 400 chained exceptions of 300 characters each: far past the cap.
        try:
            if depth:
                chain(depth - 1)
            else:
                raise LookupError("first " + "x" * 300)
        except Exception as exc:
            raise ValueError(f"level {depth} " + "y" * 300) from exc

    with pytest.raises(ValueError), jobtrace.job("deep") as job:
        chain(400)
    stored = job.traceback
    assert stored is not None
    assert len(stored) <= limits.MAX_TRACEBACK
    first_line, rest = stored.split("\n", 1)
    assert first_line.startswith(limits.TRUNCATED) and "characters cut" in first_line
    assert rest.endswith(f"ValueError: level 400 {'y' * 300}\n")
    assert "LookupError: first" not in stored  # the outermost cause went, not the error


def test_cutting_a_traceback_keeps_whole_lines() -> None:
    text = "".join(f"line {i}\n" for i in range(100_000))
    capped = limits.cap_text_tail(text, 1_000)
    marker, kept = capped.split("\n", 1)
    assert len(capped) <= 1_000
    assert kept.startswith("line ") and text.endswith(kept)
    assert int(marker.split()[1]) == len(text) - len(kept)
    assert limits.cap_text_tail("short\n", 1_000) == "short\n"


def test_an_exception_whose_str_fails_still_ends_the_job(memory_sink: MemorySink) -> None:
    class Opaque(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no message for you")

    with pytest.raises(Opaque), jobtrace.job("opaque") as job:
        raise Opaque
    assert job.status == "failed" and job.error_type is not None
    assert job.error_message is not None and "could not be read" in job.error_message
    assert job.traceback is not None and "Opaque" in job.traceback


def test_the_writer_keeps_the_end_of_a_foreign_clients_long_traceback() -> None:
    long = "Traceback (most recent call last):\n" + "  frame\n" * 20_000 + "ValueError: x\n"
    record = (JOB, *(None,) * (len(FIELDS[JOB]) - 1), long)
    (kept,), refused = limits.screen(JOB, [record])
    assert refused == []
    assert kept[-1].endswith("  frame\nValueError: x\n")
    assert len(kept[-1]) <= limits.MAX_TRACEBACK
    assert limits.cap_record(record)[-1] == kept[-1]


# -- end to end ----------------------------------------------------------------------------


def test_a_failed_run_shows_its_traceback_in_jobs_show_and_the_report(tmp_path: Path) -> None:
    (tmp_path / "boom.py").write_text(BOOM)
    run = jobtrace_cli("run", "-q", "boom.py", cwd=tmp_path)
    assert run.returncode == 1
    shown = jobtrace_cli("jobs", "list", "--json", cwd=tmp_path, check=True)
    (listed,) = orjson.loads(shown.stdout)
    assert "traceback" not in listed  # lists stay light; `jobs show` has it
    job_id = listed["id"]

    as_json = orjson.loads(jobtrace_cli("jobs", "show", job_id, "--json", cwd=tmp_path).stdout)
    stored = as_json["traceback"]
    # The traceback Python printed, without jobtrace's or runpy's frames.
    assert stored in run.stderr
    assert stored.startswith("Traceback (most recent call last):\n")
    assert 'File "boom.py", line 12, in <module>\n    outer()\n' in stored
    assert stored.endswith("ValueError: bad input\n")
    assert "runpy" not in stored and "jobtrace" not in stored

    text = jobtrace_cli("jobs", "show", job_id, cwd=tmp_path, check=True).stdout
    assert f"\ntraceback\n{stored}" in text  # whole lines, as stored, for grep and copy

    report = Path(as_json["report_dir"])
    assert orjson.loads((report / "report.json").read_bytes())["traceback"] == stored
    page = (report / "report.html").read_text()
    data = page.split('<script type="application/json" id="jobtrace-data">', 1)[1]
    assert orjson.loads(data.split("</script>", 1)[0])["job"]["traceback"] == stored
    assert '<section id="failure" hidden>' in page  # shown by the page's script


def test_a_module_run_through_a_server_keeps_its_traceback(store_url: str, tmp_path: Path) -> None:
    (tmp_path / "failing_mod.py").write_text(BOOM)
    with thread_server(store_url) as server:
        run = jobtrace_cli(
            "run", "-q", "--job-id", "mod-job", "-m", "failing_mod", cwd=tmp_path,
            JOBTRACE_URL=server,
        )  # fmt: skip
        assert run.returncode == 1, run.stderr
        with Client(server) as client:
            remote = client.jobs.get_by_id("mod-job")
    assert remote["status"] == "failed" and remote["errorType"] == "ValueError"
    assert remote["traceback"].endswith("ValueError: bad input\n")
    assert "failing_mod.py" in remote["traceback"]
    with Store(store_url) as store:
        row = store.get_job("mod-job")
        listed = store.list_jobs()
    assert row is not None and row["traceback"] == remote["traceback"]
    assert [sorted(set(row) - set(job)) for job in listed] == [["traceback"]]


def test_a_failing_with_block_in_a_program_keeps_its_traceback(
    store_url: str, tmp_path: Path
) -> None:
    code = textwrap.dedent(
        """
        import sys, jobtrace
        jobtrace.configure(url=sys.argv[1])
        def load():
            raise OSError("disk gone")
        try:
            with jobtrace.job("etl", job_id="with-job"):
                load()
        except OSError:
            pass
        """
    )
    (tmp_path / "prog.py").write_text(code)
    done = subprocess.run(
        [sys.executable, "prog.py", store_url],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with Store(store_url) as store:
        row = store.get_job("with-job")
    assert row is not None and row["status"] == "failed"
    assert row["traceback"].endswith('raise OSError("disk gone")\nOSError: disk gone\n')


def test_model_traceback_text_is_none_for_an_exception_never_raised() -> None:
    assert model.traceback_text(ValueError("made, not raised")) is None
