"""A job's report at its end: report.html and profile.json next to report.json, read back
from the store; with a server, an encrypted bundle and download instructions; and the
ReportResult reaching a handler added as the README shows."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

import jobtrace
from jobtrace import _config, recorder
from jobtrace.report.profile_data import profile_to_json
from jobtrace.report.result import ReportResult, log_result
from jobtrace.store import Store
from jobtrace.store.schema import report_bundles
from tests.cli_helpers import cli_env, jobtrace_cli
from tests.profile_helpers import LOAD, profile_records
from tests.server_helpers import thread_server

README = Path(__file__).resolve().parent.parent / "README.md"


def run_profiled_job(name: str = "etl") -> jobtrace.Job:
    """A job whose 'sampler' records the sample profile (as the real one would, through
    the recorder)."""
    with jobtrace.job(name) as job:
        for record in profile_records(job.id):
            recorder.record(record)
    return job


def test_a_job_writes_report_html_and_its_profile_next_to_report_json(store_url: str) -> None:
    url = store_url
    _config.configure(url=url, install_signal_handlers=False)
    job = run_profiled_job()
    assert job.report_dir is not None and job.result is not None
    out = Path(job.report_dir)
    assert sorted(p.name for p in out.iterdir()) == ["profile.json", "report.html", "report.json"]
    with Store(url) as store:
        stored = store.job_profile(job.id)
    assert orjson.loads((out / "profile.json").read_bytes()) == orjson.loads(
        orjson.dumps(profile_to_json(stored))
    )
    assert not stored.empty
    page = (out / "report.html").read_text()
    assert LOAD in page and job.id in page
    # A local store: no keys, and the message names the report directory.
    assert job.result.download_key is None and job.result.decryption_key is None
    assert f"the report is in {out}" in str(job.result)


def test_a_job_on_a_sink_that_cannot_be_read_back_still_gets_report_html(
    isolated_jobtrace: Path,
) -> None:
    job = run_profiled_job()  # the tests' default sink is memory://
    assert job.report_dir is not None
    assert (Path(job.report_dir) / "report.html").exists()


def test_a_job_recording_to_a_server_uploads_an_encrypted_bundle_to_download(
    tmp_path: Path,
) -> None:
    store_url = f"sqlite:///{tmp_path / 'server.db'}"
    with thread_server(store_url) as url:
        _config.configure(url=url, install_signal_handlers=False)
        job = run_profiled_job("remote-etl")
        result = job.result
        assert result is not None and result.download_key and result.decryption_key
        message = str(result)
        command = (
            f"jobtrace report download {result.download_key} {result.decryption_key} --store {url}"
        )
        assert command in message
        local = Path(str(job.report_dir))

        fetched = jobtrace_cli(
            "report",
            "download",
            result.download_key,
            result.decryption_key,
            "--out",
            "fetched",
            cwd=tmp_path,
            JOBTRACE_URL=url,
            check=True,
        )
        assert "report.html" in fetched.stdout
        for name in ("report.html", "report.json", "profile.json"):
            assert (tmp_path / "fetched" / name).read_bytes() == (local / name).read_bytes()
        assert LOAD in (tmp_path / "fetched" / "report.html").read_text()

        wrong_key = result.decryption_key[:-2] + (
            "AA" if result.decryption_key[-2:] != "AA" else "BA"
        )
        refused = jobtrace_cli(
            "report",
            "download",
            result.download_key,
            wrong_key,
            "--out",
            "wrong",
            cwd=tmp_path,
            JOBTRACE_URL=url,
        )
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1 and "wrong decryption key" in refused.stderr
        assert not (tmp_path / "wrong").exists()

        # The server holds ciphertext only; flipping one byte of it is detected.
        with Store(store_url) as store:
            data = store.get_bundle(result.download_key)["data"]
            assert b"remote-etl" not in data and LOAD.encode() not in data
            tampered = data[:-1] + bytes([data[-1] ^ 1])
            with store.engine.begin() as conn:
                conn.execute(
                    sa.update(report_bundles)
                    .where(report_bundles.c.key == result.download_key)
                    .values(data=tampered)
                )
        broken = jobtrace_cli(
            "report",
            "download",
            result.download_key,
            result.decryption_key,
            cwd=tmp_path,
            JOBTRACE_URL=url,
        )
        assert broken.returncode == 1 and "tampered" in broken.stderr
        unknown = jobtrace_cli(
            "report", "download", "x" * 24, result.decryption_key, cwd=tmp_path, JOBTRACE_URL=url
        )
        assert unknown.returncode == 1 and "no report bundle" in unknown.stderr


def readme_block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (block,) = [b for b in blocks if marker in b]
    return block


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_readme_forward_handler_receives_the_result_verbatim(tmp_path: Path) -> None:
    # A fresh interpreter: no test framework has lowered any logger's level.
    snippet = readme_block("class Forward(logging.Handler)")
    done = run_python(snippet, tmp_path)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    job_id, peak = line.split()
    assert jobtrace_cli("jobs", "show", job_id, cwd=tmp_path).returncode == 0
    assert int(peak) > 0
    assert done.stderr == ""


def test_a_program_without_a_handler_for_jobtrace_is_not_sent_the_result(tmp_path: Path) -> None:
    quiet = run_python(
        "import jobtrace\nwith jobtrace.job('quiet'):\n    pass\n",
        tmp_path,
    )
    configured = run_python(
        "import logging, jobtrace\nlogging.basicConfig(level=logging.WARNING)\n"
        "with jobtrace.job('quiet'):\n    pass\n",
        tmp_path,
    )
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert (configured.stdout, configured.stderr) == ("", "")
    # Asking for INFO is asking for it: the root handler then shows the result.
    verbose = run_python(
        "import logging, jobtrace\nlogging.basicConfig(level=logging.INFO)\n"
        "with jobtrace.job('loud'):\n    pass\n",
        tmp_path,
    )
    assert "jobtrace: job" in verbose.stderr and "loud" in verbose.stderr


class Collect(logging.Handler):
    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.results: list[object] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.results.append(record.msg)


def sample_result() -> ReportResult:
    return ReportResult(
        "j1", "2026-01-01T00:00:00+00:00", "etl", None, "succeeded", 1.0, 10, None, None, None, None
    )


def test_log_result_respects_the_handlers_level_and_the_loggers_filters() -> None:
    logger = logging.getLogger(f"jobtrace-test-{uuid.uuid4().hex}")
    everything, warnings_only = Collect(), Collect(logging.WARNING)
    logger.addHandler(everything)
    logger.addHandler(warnings_only)
    result = sample_result()
    log_result(logger, result)
    assert everything.results == [result] and warnings_only.results == []
    logger.addFilter(lambda record: False)
    log_result(logger, result)
    assert everything.results == [result]


def test_log_result_goes_the_usual_way_when_info_is_enabled() -> None:
    parent = logging.getLogger(f"jobtrace-test-{uuid.uuid4().hex}")
    child = parent.getChild("jobs")
    above = Collect()
    parent.addHandler(above)
    parent.setLevel(logging.INFO)
    log_result(child, sample_result())  # no handler of its own: propagates to the parent's
    assert len(above.results) == 1
    parent.setLevel(logging.WARNING)
    log_result(child, sample_result())  # not enabled, and the child has no handler
    assert len(above.results) == 1


def test_a_stuck_writer_delays_a_jobs_end_briefly_and_changes_nothing_it_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobtrace import jobs

    monkeypatch.setattr(jobs, "_REPORT_DELIVERY_TIMEOUT", 0.2)
    url = f"sqlite:///{tmp_path / 'jt.db'}"
    _config.configure(url=url, install_signal_handlers=False)
    rec = recorder.get_recorder()
    spilled = rec.spilled
    with rec._locked(None):  # the writer is stuck for the whole job
        job = run_profiled_job()
    assert rec.spilled == spilled  # waiting for it spilled nothing
    assert job.report_dir is not None
    page = (Path(job.report_dir) / "report.html").read_text()
    assert LOAD not in page  # written without the profile, which had not reached the store
    assert rec.flush(timeout=None)
    with Store(url) as store:
        assert not store.job_profile(job.id).empty  # `jobtrace report rebuild` would show it
