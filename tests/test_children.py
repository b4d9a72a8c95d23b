"""Children belong to the job: a Python process a job starts — through ``subprocess``, a
shell, or a ``multiprocessing`` spawn — logs its metrics and spans into the job and its
trace, with its metric names prefixed so they never replace the parent's points."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import jobtrace
from jobtrace import _config
from jobtrace.model import METRIC
from jobtrace.sinks.memory import MemorySink
from jobtrace.store import Store
from tests.cli_helpers import cli_env, jobtrace_cli

STEP = """\
import jobtrace
jobtrace.log_metric("rows", 42)
with jobtrace.Trace("child-work"):
    pass
"""


def run_parent(tmp_path: Path, code: str, **extra: str) -> str:
    """Run ``code`` (a parent program) in a fresh interpreter; return its stdout."""
    (tmp_path / "step.py").write_text(STEP)
    (tmp_path / "parent.py").write_text(textwrap.dedent(code))
    done = subprocess.run(
        [sys.executable, "parent.py"],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace", **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "outside a job" not in done.stderr
    return done.stdout


def store_of(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / '.jobtrace' / 'jobtrace.db'}")


def metrics_of(store: Store, job_id: str) -> dict[str, float]:
    return {p.name: p.value for p in store.latest_metrics(job_id)}


def spans_of(store: Store, job_id: str) -> list[dict[str, Any]]:
    return [span for t in store.job_trace_ids(job_id) for span in store.get_trace(t) or []]


def test_a_python_subprocess_joins_the_job_and_the_span_that_started_it(tmp_path: Path) -> None:
    out = run_parent(
        tmp_path,
        """
        import subprocess, sys, jobtrace
        with jobtrace.job("pipeline") as job:
            jobtrace.log_metric("rows", 1)
            with jobtrace.Trace("run-step"):
                subprocess.run([sys.executable, "step.py"], check=True)
        print(job.id)
        """,
    )
    job_id = out.strip()
    with store_of(tmp_path) as store:
        # Same name, same step, two processes: both points kept, the child's prefixed.
        assert metrics_of(store, job_id) == {"rows": 1.0, "step/rows": 42.0}
        spans = {s["name"]: s for s in spans_of(store, job_id)}
    assert set(spans) == {"run-step", "child-work"}
    parent, child = spans["run-step"], spans["child-work"]
    assert child["trace_id"] == parent["trace_id"]
    assert child["parent_id"] == parent["span_id"]
    assert child["job_id"] == parent["job_id"] == job_id
    assert child["pid"] != parent["pid"]


def test_subprocess_imported_after_the_job_started_still_places_the_child(
    tmp_path: Path,
) -> None:
    out = run_parent(
        tmp_path,
        """
        import sys, jobtrace
        with jobtrace.job("late") as job:
            assert "subprocess" not in sys.modules  # jobtrace does not import it
            import subprocess
            with jobtrace.Trace("run-step"):
                subprocess.run([sys.executable, "step.py"], check=True)
        print(job.id)
        """,
    )
    with store_of(tmp_path) as store:
        spans = {s["name"]: s for s in spans_of(store, out.strip())}
    assert spans["child-work"]["parent_id"] == spans["run-step"]["span_id"]


def test_a_shell_script_that_runs_python_joins_the_job(tmp_path: Path) -> None:
    (tmp_path / "step.sh").write_text(f'#!/bin/sh\nset -e\n"{sys.executable}" step.py\n')
    out = run_parent(
        tmp_path,
        """
        import subprocess, jobtrace
        with jobtrace.job("pipeline") as job:
            subprocess.run(["sh", "step.sh"], check=True)
            subprocess.run("sh -c 'exec \\"$PYTHON\\" step.py'", shell=True, check=True,
                           env={**__import__("os").environ, "JOBTRACE_METRIC_PREFIX": "again/"})
        print(job.id)
        """,
        PYTHON=sys.executable,
    )
    job_id = out.strip()
    with store_of(tmp_path) as store:
        assert metrics_of(store, job_id) == {"step/rows": 42.0, "again/rows": 42.0}
        assert [s["job_id"] for s in spans_of(store, job_id)] == [job_id, job_id]


def test_a_multiprocessing_spawn_child_joins_the_job(tmp_path: Path) -> None:
    (tmp_path / "work.py").write_text(
        "import jobtrace\n\ndef work(n):\n    jobtrace.log_metric('n', n)\n"
    )
    out = run_parent(
        tmp_path,
        """
        import multiprocessing, jobtrace, work
        if __name__ == "__main__":
            with jobtrace.job("spawner") as job:
                ctx = multiprocessing.get_context("spawn")
                p = ctx.Process(target=work.work, args=(7,), name="loader")
                p.start()
                p.join()
                assert p.exitcode == 0
            print(job.id)
        """,
    )
    job_id = out.strip()
    with store_of(tmp_path) as store:
        assert metrics_of(store, job_id) == {"loader/n": 7.0}


def test_jobtrace_run_children_join_the_job_with_their_own_names(tmp_path: Path) -> None:
    (tmp_path / "step.py").write_text(STEP)
    (tmp_path / "parent.py").write_text(
        "import subprocess, sys, jobtrace\n"
        "jobtrace.log_metric('rows', 1)\n"
        # Written before the children's points: "the last point written wins" then means
        # the child's, whichever process's writer happens to run first otherwise.
        "jobtrace.flush()\n"
        "subprocess.run([sys.executable, 'step.py'], check=True)\n"
        "subprocess.run([sys.executable, 'step.py'], check=True,\n"
        "               env={**__import__('os').environ, 'JOBTRACE_METRIC_PREFIX': ''})\n"
    )
    done = jobtrace_cli("run", "-q", "parent.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with store_of(tmp_path) as store:
        (job,) = store.list_jobs()
        # The empty prefix opts out: the child's point replaced the parent's, as documented.
        assert metrics_of(store, job["id"]) == {"rows": 42.0, "step/rows": 42.0}


def test_log_metric_without_a_job_logs_into_the_parent_job_under_its_prefix(
    memory_sink: MemorySink, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobtrace import metrics
    from jobtrace.tracing import spans

    monkeypatch.setattr(spans._settings, "parent_job", "parent-1")
    monkeypatch.setenv(_config.ENV_METRIC_PREFIX, "kid/")
    metrics._forget_parent()
    jobtrace.log_metric("loss", 0.5, step=3, timestamp=1.0)
    jobtrace.log_metric("", 0.5)  # a mistake is still one: dropped, not prefixed into a name
    jobtrace.flush()
    assert memory_sink.of_kind(METRIC) == [(METRIC, "parent-1", "kid/loss", 3, 0.5, 1.0)]
    monkeypatch.setattr(spans._settings, "parent_job", None)
    jobtrace.log_metric("loss", 0.25)
    assert metrics.rejected_metrics().get("no_job", 0) >= 1


def test_the_environment_carries_the_running_job_and_is_restored_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_config.ENV_PARENT_JOB, "grandparent")
    before = {name: os.environ.get(name) for name in ("JOBTRACE_URL", "JOBTRACE_DIR")}
    with jobtrace.job("outer") as outer:
        assert os.environ[_config.ENV_PARENT_JOB] == outer.id
        with jobtrace.Trace("inner-span") as span, jobtrace.job("inner") as inner:
            assert os.environ[_config.ENV_PARENT_JOB] == inner.id
            assert os.environ[_config.ENV_TRACEPARENT] == span.traceparent()
        assert os.environ[_config.ENV_PARENT_JOB] == outer.id
        assert _config.ENV_TRACEPARENT not in os.environ
    assert os.environ[_config.ENV_PARENT_JOB] == "grandparent"
    assert {name: os.environ.get(name) for name in before} == before


def test_a_store_configured_during_a_job_stays_exported_after_it(tmp_path: Path) -> None:
    with jobtrace.job("reconfigured"):
        _config.configure(url="memory://later", install_signal_handlers=False)
    assert os.environ[_config.ENV_URL] == "memory://later"
    assert _config.ENV_PARENT_JOB not in os.environ


def test_a_child_given_its_own_env_is_left_alone(tmp_path: Path) -> None:
    out = run_parent(
        tmp_path,
        """
        import os, subprocess, sys, jobtrace
        clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRACE_")}
        with jobtrace.job("pipeline") as job:
            with jobtrace.Trace("run-step"):
                show = "import os; print(sorted(k for k in os.environ if 'JOBTRACE_' in k))"
                done = subprocess.run([sys.executable, "-c", show], env=clean, check=True,
                                      capture_output=True, text=True)
        print(done.stdout.strip())
        """,
    )
    assert out.strip() == "[]"


# -- the README's example ------------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def section() -> str:
    text = README.read_text()
    return text.split("### Failed jobs and child processes", 1)[1].split("\n### ", 1)[0]


def test_the_readme_children_example_runs_verbatim(tmp_path: Path) -> None:
    blocks = re.findall(r"```(python|bash)\n(.*?)```", section(), flags=re.DOTALL)
    files = {code.split("\n", 1)[0].lstrip("# "): code for kind, code in blocks if kind == "python"}
    assert set(files) == {"pipeline.py", "step.py"}
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    (commands,) = [code for kind, code in blocks if kind == "bash"]
    env = cli_env(tmp_path / ".jobtrace")
    # `python` in the shell script is this interpreter, as in the reader's environment.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "exit status 1" in done.stdout
    assert "outside a job" not in done.stderr
    rows = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^(\S*rows)\s+(\S+)\s+0 ", done.stdout, flags=re.MULTILINE)
    }
    assert rows == {"rows": 1000.0, "step/rows": 950.0, "again/rows": 950.0}
    shown = done.stdout.split("\ntraceback\n", 1)[1]
    assert shown.startswith("Traceback (most recent call last):\n")
    assert "subprocess.CalledProcessError: Command '[" in shown and "'--fail']'" in shown

    with Store(f"sqlite:///{tmp_path / '.jobtrace' / 'jobtrace.db'}") as store:
        job = store.get_job("nightly-1")
        spans = [s for t in store.job_trace_ids("nightly-1") for s in store.get_trace(t) or []]
    assert job is not None and job["status"] == "failed"
    assert job["traceback"] == shown.rstrip("\n") + "\n"
    prepare = next(s for s in spans if s["name"] == "prepare")
    cleans = [s for s in spans if s["name"] == "clean"]
    assert len(cleans) == 3 and all(s["job_id"] == "nightly-1" for s in cleans)
    under_prepare = [s for s in cleans if s["parent_id"] == prepare["span_id"]]
    assert len(under_prepare) == 1 and under_prepare[0]["trace_id"] == prepare["trace_id"]
    failed = [s for s in cleans if s["error_type"]]
    assert len(failed) == 1 and failed[0]["error_type"] == "SystemExit"
