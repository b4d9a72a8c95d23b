"""Reading from wherever jobs write: every read command and the Store read API give the
same answers from a SQLite store, from a jobtrace server on it (tokens required), and
from the JSON-lines file the records were first written to."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from jobtrace.batch.summary import BatchSummary
from jobtrace.cli import cli
from jobtrace.errors import (
    ExperimentNotFoundError,
    JobNotFoundError,
    QueryError,
    SearchError,
    StoreError,
)
from jobtrace.profiles.folded import JobProfile
from jobtrace.report.profile_data import profile_to_json
from jobtrace.spool import read_lines
from jobtrace.store import Store, tokens
from jobtrace.store.experiments import Experiment
from jobtrace.store.jsonl import JSONLStore
from jobtrace.store.metrics import JobMetrics, MetricPoint, MetricSummary
from jobtrace.store.paging import Page
from jobtrace.store.reader import Reader, open_reader
from jobtrace.store.remote import RemoteStore
from jobtrace.wire import experiment_out, job_metrics_out, job_out, metric_summary_out, point_out
from tests.cli_helpers import cli_env, jobtrace_cli
from tests.server_helpers import assert_error, free_port, thread_server

#: More metric points and batch items than one API page holds (1000): reads must page.
STEPS = 2500
ITEMS = 2300

TRAIN = f"""
import math
import jobtrace
from jobtrace import BatchMetrics

for step in range({STEPS}):
    jobtrace.log_metric("loss", 1.0 / (step + 1), step=step)
jobtrace.log_metric("acc", 0.5, step=3)
jobtrace.log_metric("odd/name", math.nan, step=1)
jobtrace.log_metric("odd/name", -math.inf, step=2)
with jobtrace.Trace("train.epoch", info={{"epoch": 1}}):
    with jobtrace.Trace("train.step"):
        sum(range(100000))
    with jobtrace.Trace("train.eval"):
        pass
batch = BatchMetrics()
batch.start()
for i in range({ITEMS}):
    if i % 7 == 3:
        batch.record_error(f"f{{i}}.csv", "ValueError", "bad row", duration=0.002)
    elif i % 11 == 5:
        batch.record_skip(f"f{{i}}.csv", "empty")
    else:
        batch.record_file(f"f{{i}}.csv", duration=0.001 * (i % 50 + 1), samples=10 * i)
batch.finish()
"""


@dataclass(frozen=True)
class Recorded:
    """One recording, readable three ways, and the ids in it."""

    sqlite: str
    server: str
    jsonl: str
    token: str
    job: str
    batch: str
    failed: str
    trace: str

    @property
    def job_prefix(self) -> str:
        return short(self.job, [self.batch, self.failed])

    @property
    def batch_prefix(self) -> str:
        return short(self.batch, [self.job, self.failed])

    @property
    def urls(self) -> dict[str, str]:
        return {"sqlite": self.sqlite, "http": self.server, "file": self.jsonl}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """Two jobs recorded to a JSON-lines file; the same records written to SQLite, which
    a server with a token (so reads need one) serves."""
    root = tmp_path_factory.mktemp("remote")
    (root / "train.py").write_text(textwrap.dedent(TRAIN))
    (root / "fail.py").write_text("raise SystemExit(3)\n")
    jsonl = f"file://{root / 'records.jsonl'}"
    jobtrace_cli(
        *("run", "-q", "--store", jsonl, "-e", "mnist", "--param", "lr=0.1", "train.py"),
        cwd=root,
        check=True,
    )
    assert jobtrace_cli("run", "-q", "--store", jsonl, "fail.py", cwd=root).returncode == 3
    sqlite = f"sqlite:///{root / 'copy.db'}"
    with Store(sqlite) as store:
        assert not store.write_partial(list(read_lines(root / "records.jsonl"))).refused
        token = tokens.create(store, "reader")
        jobs = {j["name"]: j["id"] for j in store.list_jobs()}
        [trace] = store.list_traces(job_id=jobs["train"])
    with thread_server(sqlite) as server:
        yield Recorded(
            sqlite=sqlite,
            server=server,
            jsonl=jsonl,
            token=token,
            job=jobs["train"],
            batch=jobs["batch"],
            failed=jobs["fail"],
            trace=trace["trace_id"],
        )


def short(full: str, others: list[str]) -> str:
    """The shortest prefix of ``full`` that no other id starts with."""
    size = next(n for n in range(1, len(full)) if not any(o.startswith(full[:n]) for o in others))
    return full[:size]


def run_cli(args: list[str], *, token: str | None = None) -> Result:
    env = {"COLUMNS": "200", "JOBTRACE_TOKEN": token or ""}
    return CliRunner(env=env).invoke(cli, args, catch_exceptions=False)


# -- every read command: one output, whatever the store -------------------------------------

READ_COMMANDS = [
    "jobs list",
    "jobs list --json",
    "jobs list --status failed",
    "jobs list --search metric.loss<0.5 --sort metric.loss --desc",
    "jobs list --search bogus.field>1",
    "jobs show {job}",
    "jobs show {job_prefix} --json",
    "jobs show {failed}",
    "jobs show nosuchjob",
    "jobs show 0",
    "experiments list",
    "experiments list --json --search name:mn*",
    "metrics show {job}",
    "metrics show {job_prefix} --json",
    "metrics show {job} loss",
    "metrics show {job} loss --json",
    "metrics show {job} odd/name --json --max-points 5",
    "metrics show {job} nosuch",
    "batch stats {batch}",
    "batch stats {batch_prefix} --json",
    "batch stats {batch} --csv",
    "batch stats nosuchbatch",
    "batch items {batch}",
    "batch items {batch} --json --limit 1500",
    "batch items {batch} --csv",
    "batch items {batch} --status error",
    "trace list",
    "trace list --json",
    "trace list --job {job}",
    "trace show {trace}",
    "trace show {trace_prefix} --json",
    "trace show {trace} --osprofiler",
    "trace show ffff",
    "trace show NOT-HEX",
    "profile {job}",
    "profile {job} --kind cpu --format folded",
    "profile nosuchjob",
]


def _args(template: str, recorded: Recorded) -> list[str]:
    ids = {
        "job": recorded.job,
        "job_prefix": recorded.job_prefix,
        "failed": recorded.failed,
        "batch": recorded.batch,
        "batch_prefix": recorded.batch_prefix,
        "trace": recorded.trace,
        "trace_prefix": recorded.trace[:6],
    }
    return template.format(**ids).split()


@pytest.mark.parametrize("command", READ_COMMANDS)
def test_a_read_command_prints_the_same_from_sqlite_a_server_and_a_jsonl_file(
    recorded: Recorded, command: str
) -> None:
    outputs = {}
    for kind, url in recorded.urls.items():
        result = run_cli([*_args(command, recorded), "--store", url], token=recorded.token)
        # Error messages name the store they read; the rest must match to the byte.
        outputs[kind] = (
            result.exit_code,
            result.stdout.replace(url, "STORE"),
            result.stderr.replace(url, "STORE"),
        )
    assert outputs["http"] == outputs["sqlite"]
    assert outputs["file"] == outputs["sqlite"]
    code, stdout, stderr = outputs["sqlite"]
    if code:  # the failing ones fail in one line
        assert code == 1 and stderr.count("\n") == 1 and stderr.startswith("jobtrace: error:")
    else:
        assert stdout.strip()


def test_report_rebuild_from_a_server_writes_the_report_the_database_gives(
    recorded: Recorded, tmp_path: Path
) -> None:
    import orjson

    reports = {}
    for kind in ("sqlite", "http"):
        out = tmp_path / kind
        args = ["report", "rebuild", recorded.job_prefix, "--out", str(out)]
        result = run_cli([*args, "--store", recorded.urls[kind]], token=recorded.token)
        assert result.exit_code == 0, result.stderr
        assert {p.name for p in out.iterdir()} >= {"report.json", "report.html", "profile.json"}
        reports[kind] = orjson.loads((out / "report.json").read_bytes())
        reports[kind].pop("report_dir")
    # Times travel as ISO-8601 to the millisecond; everything else is exact.
    for key in ("start_time", "end_time", "last_heartbeat", "start_time_secs_since_epoch"):
        assert reports["http"].pop(key) == pytest.approx(reports["sqlite"].pop(key), abs=1e-3)
    assert reports["http"] == reports["sqlite"]


# -- the Store read API over a server --------------------------------------------------------


@pytest.fixture
def readers(recorded: Recorded) -> Iterator[tuple[Reader, Reader]]:
    with (
        open_reader(recorded.sqlite) as local,
        open_reader(recorded.server, token=recorded.token) as remote,
    ):
        assert isinstance(remote, RemoteStore)
        yield local, remote


#: How the server writes each result type.
WIRE_FORMS: dict[type, Callable[[Any], Any]] = {
    MetricPoint: point_out,
    JobMetrics: job_metrics_out,
    MetricSummary: metric_summary_out,
    Experiment: experiment_out,
}


def wire(value: Any) -> Any:
    """``value`` as the server writes it (times to the millisecond, NaN as "nan"): what a
    store's answer and a remote one must agree on."""
    if isinstance(value, Page):
        return (wire(value.data), value.index, value.limit, value.total)
    if isinstance(value, list):
        return [wire(v) for v in value]
    if isinstance(value, dict) and "status" in value and "argv" in value:
        return job_out(value)
    form = WIRE_FORMS.get(type(value))
    return value if form is None else form(value)


def test_remote_store_returns_the_store_types_and_values(
    readers: tuple[Reader, Reader], recorded: Recorded
) -> None:
    local, remote = readers
    job = recorded.job
    same = [
        (remote.get_job(recorded.job_prefix), local.get_job(job)),
        (remote.find_jobs(limit=2), local.find_jobs(limit=2)),
        (remote.list_jobs(status="failed"), local.list_jobs(status="failed")),
        (remote.latest_metrics(job), local.latest_metrics(job)),
        (remote.metric_summary(job, "odd/name"), local.metric_summary(job, "odd/name")),
        (
            remote.metric_series(job, "loss", max_points=100),
            local.metric_series(job, "loss", max_points=100),
        ),
        (remote.get_experiment("mnist"), local.get_experiment("mnist")),
        (remote.find_experiments(), local.find_experiments()),
        (
            remote.experiment_metrics("mnist", sort_by="metric.loss"),
            local.experiment_metrics("mnist", sort_by="metric.loss"),
        ),
        (remote.get_trace(recorded.trace[:6]), local.get_trace(recorded.trace)),
        (remote.list_traces(), local.list_traces()),
        (remote.job_trace_ids(job), local.job_trace_ids(job)),
        (remote.resolve_batch_id(recorded.batch_prefix), recorded.batch),
    ]
    for got, want in same:
        assert type(got) is type(want)
        assert wire(got) == wire(want)
    assert isinstance(remote.latest_metrics(job)[0], MetricPoint)
    assert remote.job_by_id(job)["params"] == {"lr": 0.1}
    summary, stored = remote.batch_summary(recorded.batch), local.batch_summary(recorded.batch)
    assert isinstance(summary, BatchSummary) and stored is not None
    assert summary.to_dict() == stored.to_dict()
    profile = remote.job_profile(job)
    assert isinstance(profile, JobProfile) and not profile.empty
    assert profile_to_json(profile) == profile_to_json(local.job_profile(job))


def test_a_server_on_either_database_answers_as_the_database(
    recorded: Recorded, store_url: str
) -> None:
    with Store(store_url) as local:
        local.write_partial(list(read_lines(Path(recorded.jsonl.removeprefix("file://")))))
        with thread_server(store_url) as url, open_reader(url) as remote:
            assert wire(remote.get_job(recorded.job_prefix)) == wire(local.get_job(recorded.job))
            summary, stored = (
                remote.batch_summary(recorded.batch),
                local.batch_summary(recorded.batch),
            )
            assert summary is not None and stored is not None
            assert summary.to_dict() == stored.to_dict()
            assert remote.list_items(recorded.batch, status="error", limit=50) == (
                local.list_items(recorded.batch, status="error", limit=50)
            )
            assert wire(remote.metric_summary(recorded.job, "loss")) == wire(
                local.metric_summary(recorded.job, "loss")
            )
            assert remote.get_trace(recorded.trace[:6]) == local.get_trace(recorded.trace)


def test_remote_store_pages_past_the_servers_longest_page(
    readers: tuple[Reader, Reader], recorded: Recorded
) -> None:
    local, remote = readers
    history = remote.metric_history(recorded.job, "loss", index=700, limit=None)
    assert len(history.data) == STEPS - 700 and history.total == STEPS
    assert wire(history) == wire(local.metric_history(recorded.job, "loss", index=700, limit=None))
    items = remote.list_items(recorded.batch, offset=5, limit=1800)
    assert len(items) == 1800 and items == local.list_items(recorded.batch, offset=5, limit=1800)
    streamed = list(remote.iter_items(recorded.batch, page_size=700))
    assert len(streamed) == ITEMS and streamed == list(local.iter_items(recorded.batch))
    assert remote.count_items(recorded.batch, status="error") == local.count_items(
        recorded.batch, status="error"
    )


def test_remote_store_raises_the_stores_errors(
    readers: tuple[Reader, Reader], recorded: Recorded
) -> None:
    local, remote = readers
    assert remote.get_job("nosuch") is None and remote.get_trace("ffff") is None
    assert remote.resolve_batch_id("nosuch") is None and remote.batch_summary("x") is None
    with pytest.raises(JobNotFoundError):
        remote.job_by_id(recorded.job_prefix)  # exact ids only, as the store
    with pytest.raises(JobNotFoundError):
        remote.job_profile("nosuch")
    with pytest.raises(ExperimentNotFoundError):
        remote.get_experiment("nosuch")
    with pytest.raises(SearchError) as remote_error:
        remote.find_jobs(search="bogus.field>1")
    with pytest.raises(SearchError) as local_error:
        local.find_jobs(search="bogus.field>1")
    assert str(remote_error.value) == str(local_error.value)
    assert remote_error.value.position == local_error.value.position
    with pytest.raises(QueryError, match="sort"):
        remote.find_jobs(sort_by="nosuchfield")


def test_an_ambiguous_prefix_is_a_query_error_not_an_unavailable_store(
    recorded: Recorded,
) -> None:
    with (
        open_reader(recorded.server, token=recorded.token) as remote,
        pytest.raises(QueryError, match="ambiguous"),
    ):
        remote.get_job("0")  # both jobs' ids start with the same time digits


# -- errors a person can act on --------------------------------------------------------------


def test_reading_a_server_that_wants_a_token_without_one_fails_in_one_line(
    recorded: Recorded, tmp_path: Path
) -> None:
    for token in ("", "jt_wrong"):
        result = jobtrace_cli(
            "jobs", "list", cwd=tmp_path, JOBTRACE_URL=recorded.server, JOBTRACE_TOKEN=token
        )
        assert result.returncode == 1 and result.stdout == ""
        [line] = result.stderr.splitlines()
        assert line.startswith(f"jobtrace: error: {recorded.server} refused the request (HTTP 401)")
        assert "JOBTRACE_TOKEN" in line


def test_reading_an_unreachable_server_fails_in_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = jobtrace_cli("jobs", "show", "x", "--store", url, cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"jobtrace: error: cannot reach {url}") and "jobtrace serve" in line
    with pytest.raises(StoreError, match="cannot reach"), open_reader(url) as remote:
        remote.list_jobs()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["db", "upgrade"], "jobtrace db upgrade needs a database store"),
        (["token", "list"], "jobtrace token list needs a database store"),
    ],
)
def test_admin_commands_over_http_say_they_need_a_database_url(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = jobtrace_cli(*args, "--store", "http://127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"jobtrace: error: {message}")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///nonexistent/records.jsonl", "no JSON-lines file at /nonexistent/records.jsonl"),
        ("memory://x", "nothing is left to read"),
    ],
)
def test_a_url_with_nothing_to_read_says_so_in_one_line(url: str, message: str) -> None:
    result = run_cli(["jobs", "list", "--store", url])
    assert result.exit_code == 1 and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_jsonl_store_leaves_no_temporary_files(recorded: Recorded, tmp_path: Path) -> None:
    with open_reader(recorded.jsonl) as store:
        assert isinstance(store, JSONLStore) and store.safe_url == recorded.jsonl
        assert store.path.is_file() and store.get_job(recorded.job) is not None
    assert not store.path.parent.exists()


# -- the routes the reads added --------------------------------------------------------------


@pytest.fixture
def http(recorded: Recorded) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {recorded.token}"}
    with httpx.Client(base_url=f"{recorded.server}/api/v1", headers=headers) as client:
        yield client


def test_routes_find_jobs_and_traces_by_prefix_only_when_asked(
    http: httpx.Client, recorded: Recorded
) -> None:
    assert http.get(f"/jobs/{recorded.job_prefix}", params={"prefix": "true"}).json()["id"] == (
        recorded.job
    )
    assert_error(http.get(f"/jobs/{recorded.job_prefix}"), 404)
    assert_error(http.get("/jobs/0", params={"prefix": "true"}), 400, "invalid_query")
    found = http.get(f"/traces/{recorded.trace[:6]}", params={"prefix": "true"}).json()
    assert found["traceId"] == recorded.trace and len(found["spans"]) == 3
    assert_error(http.get(f"/traces/{recorded.trace[:6]}"), 422, "invalid_input")


def test_routes_give_a_batch_and_its_items(http: httpx.Client, recorded: Recorded) -> None:
    batch = http.get(f"/batches/{recorded.batch_prefix}").json()
    assert batch["id"] == recorded.batch and batch["summary"]["total_files"] == ITEMS
    assert batch["stats"]["total"] == ITEMS
    page = http.get(f"/batches/{recorded.batch}/items", params={"status": "error"}).json()
    errors = len([i for i in range(ITEMS) if i % 7 == 3])
    assert page["totalNumResults"] == errors and len(page["data"]) == 10
    assert {item["status"] for item in page["data"]} == {"error"}
    assert isinstance(page["data"][0]["startSeconds"], float)
    assert_error(http.get("/batches/nosuch"), 404)
    assert_error(http.get(f"/batches/{recorded.batch}/items", params={"status": "x"}), 422)


def test_route_summarises_a_metric(http: httpx.Client, recorded: Recorded) -> None:
    summary = http.get(f"/jobs/{recorded.job}/metrics/odd%2Fname/summary").json()
    assert summary["count"] == 2 and summary["nanCount"] == 1 and summary["min"] == "-inf"
    assert summary["latest"]["value"] == "-inf" and summary["latest"]["step"] == 2
    with Store(recorded.sqlite) as store:
        assert summary == metric_summary_out(store.metric_summary(recorded.job, "odd/name"))
    assert_error(http.get("/jobs/nosuch/metrics/loss/summary"), 404)


# -- the README ------------------------------------------------------------------------------


def test_the_readme_reading_snippets_run_verbatim(recorded: Recorded, tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Reading from a server or a file", 1)[1].split("\n### ", 1)[0]
    shell = section.split("```bash\n", 1)[1].split("```", 1)[0]
    python = section.split("```python\n", 1)[1].split("```", 1)[0]
    shutil.copy(recorded.jsonl.removeprefix("file://"), tmp_path / "records.jsonl")
    env = cli_env(
        tmp_path / ".jobtrace", JOBTRACE_URL=recorded.server, JOBTRACE_TOKEN=recorded.token
    )
    for command in (["bash", "-euo", "pipefail", "-c", shell], [sys.executable, "-c", python]):
        result = subprocess.run(
            command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert recorded.job in result.stdout
    assert f"{recorded.job} train {STEPS} {1 / STEPS}" in result.stdout
