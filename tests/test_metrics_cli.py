"""`jobtrace metrics show` and `jobtrace experiments list`, run in a subprocess."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from jobtrace import model
from jobtrace.store import Store
from tests.cli_helpers import jobtrace_cli


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    """A store holding one job of experiment "exp" with a few metrics."""
    directory = tmp_path / ".jobtrace"
    directory.mkdir()
    with Store(f"sqlite:///{directory / 'jobtrace.db'}") as store:
        store.create_experiment("exp", description="the experiment")
        store.create_job(job_id="job-0001", name="train", experiment="exp")
        store.create_job(job_id="job-0002", name="eval", experiment="exp")
        points = [(model.METRIC, "job-0001", "loss", s, 1 / (s + 1), 100.0 + s) for s in range(500)]
        points += [
            (model.METRIC, "job-0001", "loss", 250, 9.0, 1.0),  # a spike
            (model.METRIC, "job-0001", "odd", 0, math.nan, 1.0),
            (model.METRIC, "job-0001", "odd", 1, math.inf, 1.0),
        ]
        store.write(points)
    return tmp_path


def test_show_lists_each_metrics_latest_value(recorded: Path) -> None:
    out = jobtrace_cli("metrics", "show", "job-0001", cwd=recorded, check=True).stdout
    lines = out.splitlines()
    assert "job-0001 (train)" in lines[0]
    assert lines[2].split()[:3] == ["loss", "0.002", "499"]
    assert lines[3].split()[:3] == ["odd", "inf", "1"]


def test_show_json_carries_specials_as_strings(recorded: Path) -> None:
    out = jobtrace_cli("metrics", "show", "job-0001", "--json", cwd=recorded, check=True).stdout
    data = orjson.loads(out)
    assert data["jobId"] == "job-0001"
    assert [(m["name"], m["value"], m["step"]) for m in data["metrics"]] == [
        ("loss", 0.002, 499),
        ("odd", "inf", 1),
    ]
    assert data["metrics"][0]["timestamp"].endswith("+00:00")


def test_show_name_draws_a_chart_with_a_summary(recorded: Path) -> None:
    out = jobtrace_cli("metrics", "show", "job-0001", "loss", cwd=recorded, check=True).stdout
    lines = out.splitlines()
    chart = [line for line in lines if "┤" in line]
    assert len(chart) == 12 and chart[0].split()[0] == "9"
    assert any(ch in line for line in chart for ch in "⠁⠂⠄⡀⢀⣀⠉")
    assert "step 0" in lines[-2] and "step 499" in lines[-2]
    assert lines[-1].startswith("500 points, min 0.002, max 9, latest 0.002 at step 499")


def test_show_name_json_gives_the_whole_history_or_a_downsampled_one(recorded: Path) -> None:
    full = orjson.loads(
        jobtrace_cli(
            "metrics", "show", "job-0001", "loss", "--json", cwd=recorded, check=True
        ).stdout
    )
    assert len(full["points"]) == 500 and full["summary"]["count"] == 500
    small = orjson.loads(
        jobtrace_cli(
            "metrics", "show", "job-0001", "loss", "--json", "--max-points", "10",
            cwd=recorded, check=True,
        ).stdout
    )  # fmt: skip
    steps = [p["step"] for p in small["points"]]
    assert len(steps) <= 10 and steps[0] == 0 and steps[-1] == 499 and 250 in steps


def test_show_reports_unknown_jobs_and_metrics(recorded: Path) -> None:
    missing = jobtrace_cli("metrics", "show", "nope", cwd=recorded)
    assert missing.returncode == 1 and "no job 'nope'" in missing.stderr
    ambiguous = jobtrace_cli("metrics", "show", "job", cwd=recorded)
    assert ambiguous.returncode == 1 and "ambiguous" in ambiguous.stderr
    no_metric = jobtrace_cli("metrics", "show", "job-0001", "acc", cwd=recorded)
    assert no_metric.returncode == 1 and "no metric 'acc'" in no_metric.stderr
    quiet = jobtrace_cli("metrics", "show", "job-0002", cwd=recorded, check=True)
    assert "logged no metrics" in quiet.stdout


def test_experiments_list_counts_jobs(recorded: Path) -> None:
    out = jobtrace_cli("experiments", "list", cwd=recorded, check=True).stdout
    header, row = out.splitlines()
    assert header.split()[:3] == ["EXPERIMENT", "JOBS", "CREATED"]
    assert row.split()[:2] == ["exp", "2"] and row.endswith("the experiment")
    data = orjson.loads(
        jobtrace_cli("experiments", "list", "--json", cwd=recorded, check=True).stdout
    )
    assert [(e["name"], e["jobCount"]) for e in data] == [("exp", 2)]


def test_experiments_list_search_errors_are_one_line(recorded: Path) -> None:
    result = jobtrace_cli("experiments", "list", "--search", "colour:red", cwd=recorded)
    assert result.returncode == 1
    assert result.stderr.startswith("jobtrace: error: unknown text field 'colour'")
    none = jobtrace_cli("experiments", "list", "-s", "name:zzz", cwd=recorded, check=True)
    assert none.stdout.strip() == "No matching experiments."


def test_help_describes_the_commands(recorded: Path) -> None:
    out = jobtrace_cli("metrics", "show", "--help", cwd=recorded, check=True).stdout
    assert "history of metric NAME" in out and "--max-points" in out
    top = jobtrace_cli("--help", cwd=recorded, check=True).stdout
    assert "metrics" in top and "experiments" in top
