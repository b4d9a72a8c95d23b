"""Report directories: per-job opt-out, none per call of a decorated function by default,
and a retention bound on the reports directory."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jobtrace
from jobtrace import _config
from jobtrace.errors import ConfigurationError
from jobtrace.report.directory import REPORT_FILE, prune_reports, write_report
from jobtrace.sinks.memory import MemorySink

README = Path(__file__).resolve().parent.parent / "README.md"


def reports(directory: Path) -> list[str]:
    folder = directory / "reports"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_with_job_writes_its_report_by_default(isolated_jobtrace: Path) -> None:
    with jobtrace.job("etl") as j:
        pass
    assert reports(isolated_jobtrace) == [j.id]
    assert j.result is not None and j.result.report_dir == j.report_dir


def test_report_false_writes_no_directory_but_records_the_job(
    isolated_jobtrace: Path, memory_sink: MemorySink
) -> None:
    with jobtrace.job("etl", report=False) as j:
        pass
    jobtrace.flush()
    assert reports(isolated_jobtrace) == []
    assert j.report_dir is None and j.result is not None and j.result.report_dir is None
    assert "no report directory was written" in str(j.result)
    assert any(r[1] == j.id and r[5] == "succeeded" for r in memory_sink.of_kind("job"))


def test_a_decorated_function_called_in_a_loop_writes_no_report_per_call(
    isolated_jobtrace: Path, memory_sink: MemorySink
) -> None:
    @jobtrace.job
    def bare(i: int) -> int:
        return i

    @jobtrace.job("named", experiment="x")
    def named(i: int) -> int:
        return i

    assert [bare(i) + named(i) for i in range(200)] == [2 * i for i in range(200)]
    jobtrace.flush()
    assert reports(isolated_jobtrace) == []
    finished = {r[1] for r in memory_sink.of_kind("job") if r[5] == "succeeded"}
    assert len(finished) == 400  # every call is still a job


def test_a_decorated_function_can_ask_for_a_report_per_call(isolated_jobtrace: Path) -> None:
    @jobtrace.job("audited", report=True)
    def audited() -> str | None:
        job = jobtrace.current_job()
        return None if job is None else job.id

    ids = sorted(str(audited()) for _ in range(3))
    assert reports(isolated_jobtrace) == ids


def test_only_the_newest_reports_are_kept(
    isolated_jobtrace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_config.ENV_REPORTS_KEEP, "3")
    _config.configure(url="memory://keep", install_signal_handlers=False)
    (isolated_jobtrace / "reports" / "notes").mkdir(parents=True)  # not a report: left alone
    ids = []
    for i in range(6):
        with jobtrace.job(f"run-{i}") as j:
            pass
        # Order by write time even on a file system with coarse timestamps.
        report = isolated_jobtrace / "reports" / j.id / REPORT_FILE
        os.utime(report, ns=(i * 10**9, i * 10**9))
        ids.append(j.id)
    assert reports(isolated_jobtrace) == sorted([*ids[-3:], "notes"])


def test_reports_keep_zero_keeps_every_report(
    isolated_jobtrace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_config.ENV_REPORTS_KEEP, "0")
    _config.configure(url="memory://keep-all", install_signal_handlers=False)
    for _ in range(5):
        with jobtrace.job("run"):
            pass
    assert len(reports(isolated_jobtrace)) == 5
    jobtrace.configure("memory://keep-2", reports_keep=2, install_signal_handlers=False)
    with jobtrace.job("run"):
        pass
    assert len(reports(isolated_jobtrace)) == 2  # the argument wins over the environment


def test_reports_keep_must_be_a_count() -> None:
    with pytest.raises(ConfigurationError, match="JOBTRACE_REPORTS_KEEP"):
        _config.resolve(env={_config.ENV_REPORTS_KEEP: "-5"})
    assert _config.resolve(env={}).reports_keep == 1000


def test_pruning_spares_the_report_just_written(tmp_path: Path) -> None:
    newest = write_report(tmp_path, {"id": "b", "start_time": 2.0, "duration": 1.0,
                                     "peak_memory_kb": 1})  # fmt: skip
    write_report(tmp_path, {"id": "a", "start_time": 1.0, "duration": 1.0, "peak_memory_kb": 1})
    os.utime(newest / REPORT_FILE, ns=(10**18, 10**18))  # "b" now reads as the newer
    assert prune_reports(tmp_path, 1, spare=tmp_path / "a") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert prune_reports(tmp_path / "missing", 1) == 0


def test_pruning_happens_past_keep_and_goes_down_to_nine_tenths(tmp_path: Path) -> None:
    def write(i: int) -> None:
        out = write_report(tmp_path, {"id": f"r{i:02d}", "start_time": float(i),
                                      "duration": 1.0, "peak_memory_kb": 1}, keep=20)  # fmt: skip
        os.utime(out / REPORT_FILE, ns=(i * 10**9, i * 10**9))  # coarse clocks: set the order

    for i in range(20):
        write(i)
    assert len(list(tmp_path.iterdir())) == 20  # at keep: nothing removed
    write(20)  # past keep: the oldest go, 18 stay
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"r{i:02d}" for i in range(3, 21)]


def test_jobtrace_run_no_report_writes_no_directory(tmp_path: Path) -> None:
    script = tmp_path / "work.py"
    script.write_text("print('done')\n")
    env = {**os.environ, "JOBTRACE_DIR": str(tmp_path / "jt")}
    env.pop("JOBTRACE_URL", None)
    for flags in (["--no-report"], []):
        out = subprocess.run(
            [sys.executable, "-m", "jobtrace", "run", *flags, str(script)],
            capture_output=True, text=True, env=env, check=True, timeout=120,
        )  # fmt: skip
        assert out.stdout == "done\n"
        written = reports(tmp_path / "jt")
        if flags:
            assert written == [] and "no report directory was written" in out.stderr
        else:
            assert len(written) == 1 and f"the report is in {tmp_path}" in out.stderr


def test_the_readme_job_example_runs_verbatim(isolated_jobtrace: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (example,) = [b for b in blocks if '@jobtrace.job("resize")' in b]
    etl_runs: list[str] = []

    def run_etl() -> None:
        job = jobtrace.current_job()
        etl_runs.append("" if job is None else str(job.name))

    namespace: dict[str, object] = {"run_etl": run_etl}
    jobtrace_log = logging.getLogger("jobtrace")
    handlers = list(jobtrace_log.handlers)
    try:
        exec(compile(example, str(README), "exec"), namespace)
        resize = namespace["resize"]
        assert callable(resize)
        for path in ("a.png", "b.png", "c.png"):
            resize(path)
    finally:
        jobtrace_log.handlers[:] = handlers  # the example adds a handler
    assert etl_runs == ["nightly-etl", "backfill"]
    # The with-job wrote its report; the backfill (report=False) and the three calls did not.
    (only,) = reports(isolated_jobtrace)
    report = (isolated_jobtrace / "reports" / only / REPORT_FILE).read_text()
    assert '"name": "nightly-etl"' in report
