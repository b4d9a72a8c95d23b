"""`jobtrace jobs list --columns/--csv/--json` and `jobtrace jobs compare`, run as users run
them (the real command in a subprocess) against a store filled through the Store API."""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from jobtrace import model
from jobtrace.store import Store
from tests.cli_helpers import cli_env, jobtrace_cli

IDS = ("01runalpha", "01runbravo", "01runcharlie")


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """Three finished jobs with params, tags and loss/accuracy histories; returns the cwd."""
    with Store(f"sqlite:///{tmp_path / '.jobtrace' / 'jobtrace.db'}") as store:
        for i, (job_id, lr, opt) in enumerate(
            zip(IDS, (0.1, 0.01, 0.05), ("adam", "adam", "sgd"), strict=True)
        ):
            store.create_job(
                job_id=job_id,
                name="train",
                experiment="mnist",
                status="succeeded",
                start_time=1000.0 + i,
                end_time=1010.0 + i,
                params={"lr": lr, "optimizer": opt, "batch": 64},
                tags={"team": "ds"},
            )
            losses = [math.exp(-lr * 10 * s) + (0.05 if s == 7 else 0) for s in range(10)]
            store.write(
                [(model.METRIC, job_id, "loss", s, v, 2000.0 + s) for s, v in enumerate(losses)]
                + [
                    (model.METRIC, job_id, "accuracy", s, 1 - v, 2000.0 + s)
                    for s, v in enumerate(losses)
                ]
            )
        store.write([(model.METRIC, IDS[2], "loss", 10, math.nan, 3000.0)])
    return tmp_path


def test_list_shows_chosen_columns_sorted_by_a_param(runs: Path) -> None:
    out = jobtrace_cli(
        "jobs", "list", "--columns", "param.lr,metric.loss,tag.team", "--sort", "param.lr",
        cwd=runs, check=True,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[0].split()[-3:] == ["param.lr", "metric.loss", "tag.team"]
    assert [line.split()[0] for line in lines[1:]] == [IDS[1], IDS[2], IDS[0]]
    assert lines[1].split()[-3:] == ["0.01", "0.40657", "ds"]
    assert lines[2].split()[-3:-1] == ["0.05", "nan"]


def test_list_sorts_by_a_latest_metric_descending_with_nan_last(runs: Path) -> None:
    out = jobtrace_cli(
        "jobs", "list", "-c", "metric.loss", "--sort", "metric.loss", "--desc",
        cwd=runs, check=True,
    ).stdout  # fmt: skip
    assert [line.split()[0] for line in out.splitlines()[1:]] == [IDS[1], IDS[0], IDS[2]]


def test_csv_export_has_every_job_field_and_the_chosen_columns(runs: Path) -> None:
    out = jobtrace_cli(
        "jobs", "list", "-c", "param.optimizer,metric.loss", "--sort", "start_time", "--csv",
        cwd=runs, check=True,
    ).stdout  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["id"] for r in rows] == list(IDS)
    assert {"status", "duration", "params", "tags", "param.optimizer", "metric.loss"} <= set(
        rows[0]
    )
    assert [r["param.optimizer"] for r in rows] == ["adam", "adam", "sgd"]
    assert rows[2]["metric.loss"] == "nan" and float(rows[1]["metric.loss"]) > 0.4
    assert orjson.loads(rows[0]["params"]) == {"lr": 0.1, "optimizer": "adam", "batch": 64}
    assert rows[0]["duration"] == "10.0"


def test_json_export_to_a_file_named_by_its_suffix(runs: Path) -> None:
    result = jobtrace_cli(
        "jobs", "list", "-c", "metric.accuracy,tag.team", "--out", "runs.json", "-n", "2",
        cwd=runs, check=True,
    )  # fmt: skip
    assert result.stdout == ""
    assert "wrote 2 jobs to runs.json" in result.stderr and "1 more" in result.stderr
    rows = orjson.loads((runs / "runs.json").read_text())
    assert [r["id"] for r in rows] == [IDS[2], IDS[1]]
    assert rows[0]["tag.team"] == "ds" and rows[0]["status"] == "succeeded"
    assert rows[0]["start_time"].endswith("+00:00")


def test_csv_to_a_file_matches_csv_to_stdout(runs: Path) -> None:
    args = ("jobs", "list", "-c", "param.lr,metric.loss")
    stdout = jobtrace_cli(*args, "--csv", cwd=runs, check=True).stdout
    jobtrace_cli(*args, "--out", "runs.csv", cwd=runs, check=True)
    assert (runs / "runs.csv").read_text() == stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-c", "lr"), "unknown column 'lr'"),
        (("-c", "param.lr,"), "empty column"),
        (("--out", "runs.txt"), "add --csv or --json"),
        (("--csv", "--json"), "one of --json and --csv"),
        (("--sort", "lr"), "cannot sort jobs by 'lr'"),
        (("--csv", "--out", "missing/dir/runs.csv"), "cannot write missing/dir/runs.csv"),
    ],
)
def test_list_mistakes_are_one_line_errors(runs: Path, args: tuple[str, ...], message: str) -> None:
    result = jobtrace_cli("jobs", "list", *args, cwd=runs)
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def test_compare_marks_differing_params_and_hides_same_ones_on_request(runs: Path) -> None:
    out = jobtrace_cli("jobs", "compare", *IDS, cwd=runs, check=True).stdout
    assert "Params (2 of 3 differ)" in out
    lines = {line.split()[0] if line.split()[0] != "*" else line.split()[1]: line for line in
             out.splitlines() if line.strip()}  # fmt: skip
    assert lines["lr"].split()[-3:] == ["0.1", "0.01", "0.05"] and lines["lr"].startswith("*")
    assert lines["batch"].split()[-3:] == ["64", "64", "64"]
    only = jobtrace_cli("jobs", "compare", *IDS, "--only-diff", cwd=runs, check=True).stdout
    assert "* lr" in only and "* optimizer" in only and "batch" not in only


def test_compare_json_gives_latest_min_max_and_the_step_of_the_best(runs: Path) -> None:
    # Unique prefixes work as ids.
    out = jobtrace_cli("jobs", "compare", "01runa", "01runb", "--json", cwd=runs, check=True)
    data = orjson.loads(out.stdout)
    assert [j["id"] for j in data["jobs"]] == [IDS[0], IDS[1]]
    loss = next(m for m in data["metrics"] if m["name"] == "loss")
    alpha = loss["jobs"][0]
    assert (alpha["min"], alpha["max"], alpha["maxStep"]) == (pytest.approx(math.exp(-9)), 1, 0)
    assert alpha["minStep"] == alpha["bestStep"] == 9 and alpha["latestStep"] == 9
    accuracy = next(m for m in data["metrics"] if m["name"] == "accuracy")
    assert accuracy["best"] == "min" and accuracy["jobs"][0]["bestStep"] == 0
    maximized = orjson.loads(
        jobtrace_cli(
            "jobs", "compare", *IDS[:2], "--json", "--maximize", "accuracy", cwd=runs, check=True
        ).stdout
    )  # fmt: skip
    accuracy = next(m for m in maximized["metrics"] if m["name"] == "accuracy")
    assert accuracy["best"] == "max" and accuracy["jobs"][0]["bestStep"] == 9
    assert [p["name"] for p in data["params"]] == ["batch", "lr", "optimizer"]


def test_compare_overlays_a_metric_of_every_job_in_the_terminal(runs: Path) -> None:
    out = jobtrace_cli(
        "jobs", "compare", *IDS, "--metric", "loss", "--height", "8", cwd=runs, check=True,
        COLUMNS="80",
    ).stdout  # fmt: skip
    chart = out.split("loss: ", 1)[1].splitlines()
    assert "#1 train" in chart[0] and "#3 train" in chart[0]
    plot = chart[1:9]
    assert all("┤" in line for line in plot)
    assert sum(ch not in " ⠀" for line in plot for ch in line.split("┤", 1)[1]) > 20
    assert chart[9].split() == ["step", "0", "step", "9"]  # NaN (step 10) is not drawn
    assert all(len(line) <= 80 for line in out.splitlines())


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ((IDS[0], "nope"), "no job 'nope'"),
        (("01run", IDS[0]), "ambiguous"),
        ((IDS[0], IDS[0][:7]), "two or more different jobs"),
    ],
)
def test_compare_errors_are_one_line(runs: Path, ids: tuple[str, ...], message: str) -> None:
    result = jobtrace_cli("jobs", "compare", *ids, cwd=runs)
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def test_compare_of_a_metric_no_job_logged_is_an_error(runs: Path) -> None:
    result = jobtrace_cli("jobs", "compare", *IDS[:2], "--metric", "nope", cwd=runs)
    assert result.returncode == 1 and "none of the jobs logged a metric 'nope'" in result.stderr


def _readme_block(heading: str, language: str, nth: int = 0) -> str:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    return section.split(f"```{language}\n")[nth + 1].split("```", 1)[0]


def test_the_readme_runs_side_by_side_snippets_run_verbatim(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / '.jobtrace' / 'jobtrace.db'}") as store:
        for job_id, lr, loss in (("01jd3x4kq7", 0.1, 0.25), ("01jd3x9qz2", 0.5, 0.75)):
            store.create_job(
                job_id=job_id, name="train", experiment="mnist", params={"lr": lr},
                tags={"team": "ds"}, start_time=1000.0, status="succeeded",
            )  # fmt: skip
            store.write(
                [(model.METRIC, job_id, "loss", s, loss * (3 - s), 2000.0 + s) for s in range(3)]
                + [(model.METRIC, job_id, "accuracy", 2, 1 - loss, 2002.0)]
            )
    env = cli_env(tmp_path / ".jobtrace")
    shell = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _readme_block("Runs side by side", "bash")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert shell.returncode == 0, shell.stderr
    assert "01jd3x4kq7" in shell.stdout and "* lr" in shell.stdout and "loss: " in shell.stdout
    rows = list(csv.DictReader(io.StringIO((tmp_path / "runs.csv").read_text())))
    assert [(r["id"], r["param.lr"], r["metric.loss"]) for r in rows] == [
        ("01jd3x9qz2", "0.5", "0.75"),
        ("01jd3x4kq7", "0.1", "0.25"),
    ]
    python = subprocess.run(
        [sys.executable, "-c", _readme_block("Runs side by side", "python")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert python.returncode == 0, python.stderr
    lines = python.stdout.splitlines()
    assert "01jd3x4kq7" in lines[1] and "01jd3x9qz2" not in python.stdout  # its loss is 0.75
    assert lines[-1] == "01jd3x4kq7 0.1"


def test_experiments_list_finds_experiments_by_search(runs: Path) -> None:
    with Store(f"sqlite:///{runs / '.jobtrace' / 'jobtrace.db'}") as store:
        store.create_experiment("cifar", tags={"team": "cv"})
    found = jobtrace_cli(
        "experiments", "list", "--search", "job_count>2", "--json", cwd=runs, check=True
    )
    assert [e["name"] for e in orjson.loads(found.stdout)] == ["mnist"]
    tagged = jobtrace_cli("experiments", "list", "-s", "tag.team:cv", cwd=runs, check=True)
    assert [line.split()[0] for line in tagged.stdout.splitlines()[1:]] == ["cifar"]


def test_csv_of_no_jobs_is_the_header_alone(runs: Path) -> None:
    out = jobtrace_cli(
        "jobs", "list", "-q", "name:zzz", "-c", "param.lr", "--csv", cwd=runs, check=True
    ).stdout
    (header,) = out.splitlines()
    assert header.startswith("id,name,experiment,status,") and header.endswith(",param.lr")
