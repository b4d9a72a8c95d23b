"""A store seeded with what every dashboard page shows: an experiment of three runs with
params and metric curves (one with a one-step spike), a job whose name, params and metric
name are markup, a failed job, a batch with failing items, a nested trace with an error,
a profile, and instrument series for the Services page."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobtrace import model
from jobtrace.store import Store
from tests.cli_helpers import cli_env
from tests.profile_helpers import profile_records
from tests.server_helpers import READY_TIMEOUT, wait_ready

T0 = 1_800_000_000.0
HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_PARAM = "<script>alert(2)</script>"
HOSTILE_METRIC = "<b>bold</b>"
#: Steps of each run's "loss" curve, and where run "resnet-b" has its one-step spike.
STEPS = 3000
SPIKE_STEP = 1371
SPIKE_VALUE = 50.0
TRACE_ID = "0190f3a1b2c3d4e5f60718293a4b5c6d"
ROOT_SPAN = "a000000000000001"
ERROR_SPAN = "a000000000000004"


@dataclass(frozen=True)
class Seeded:
    runs: list[str]  # resnet-a, resnet-b, resnet-c
    hostile: str
    failed: str
    batch: str


def job(job_id: str, name: str, **fields: Any) -> Any:
    """A finished job's snapshot record; ``fields`` override the defaults."""
    values: dict[str, Any] = {
        "id": job_id,
        "seq": 1,
        "name": name,
        "experiment": None,
        "status": "succeeded",
        "start_time": T0,
        "end_time": T0 + 60.0,
        "duration": 60.0,
        "peak_memory_kb": 512 * 1024,
        "cpu_user": 40.0,
        "cpu_sys": 2.0,
        "exit_code": 0,
        "error_type": None,
        "error_message": None,
        "host": "worker-1",
        "pid": 4242,
        "argv": ["train.py"],
        "tags": {},
        "params": {},
        "last_heartbeat": T0 + 60.0,
        "heartbeat_interval": 10.0,
        "report_dir": None,
        "records_dropped": None,
        **fields,
    }
    return (model.JOB, *(values.get(f) for f in model.FIELDS[model.JOB]))


def loss(step: int, scale: float) -> float:
    return scale * math.exp(-step / 800) + 0.05 * math.sin(step / 7)


def seed(store_url: str) -> Seeded:
    """Write the records (one batch) and return the ids the tests look for."""
    runs = ["run-a-0001", "run-b-0002", "run-c-0003"]
    records: list[Any] = [(model.EXPERIMENT, "vision", "image models", {"team": "cv"}, T0)]
    for k, (run, lr) in enumerate(zip(runs, (0.1, 0.01, 0.01), strict=True)):
        params = {"lr": lr, "batch": 64, "optimizer": "adam" if k else "sgd"}
        records.append(
            job(
                run,
                f"resnet-{'abc'[k]}",
                experiment="vision",
                start_time=T0 + k * 100,
                end_time=T0 + k * 100 + 60,
                tags={"team": "cv"},
                params=params,
            )
        )
        for step in range(STEPS):
            value = loss(step, 2.0 + k)
            if k == 1 and step == SPIKE_STEP:
                value = SPIKE_VALUE
            records.append((model.METRIC, run, "loss", step, value, T0 + k * 100 + step * 0.02))
        for step in range(0, STEPS, 100):
            acc = 0.5 + 0.4 * (1 - math.exp(-step / 1000)) + 0.02 * k
            records.append((model.METRIC, run, "accuracy", step, acc, T0 + k * 100 + step * 0.02))
    hostile = "job-hostile-01"
    records.append(
        job(
            hostile,
            HOSTILE,
            start_time=T0 + 400,
            end_time=T0 + 401,
            params={"note": HOSTILE_PARAM},
            tags={HOSTILE: HOSTILE},
        )
    )
    records.append((model.METRIC, hostile, HOSTILE_METRIC, 0, 1.0, T0 + 400))
    failed = "job-failed-01"
    records.append(
        job(
            failed,
            "nightly-etl",
            status="failed",
            exit_code=1,
            error_type="ValueError",
            error_message="bad row 17",
            start_time=T0 + 500,
            end_time=T0 + 505,
            duration=5.0,
        )
    )
    batch = "job-batch-01"
    records.append(job(batch, "ingest-files", start_time=T0 + 600, end_time=T0 + 650))
    for i in range(40):
        bad = i % 10 == 3
        records.append(
            (
                model.ITEM,
                f"item-{i:03d}",
                batch,
                f"file-{i:03d}.csv",
                T0 + 600 + i,
                0.5 + (i % 7) * 0.1,
                100,
                3,
                1000,
                "error" if bad else "success",
                "ParseError" if bad else None,
                f"line {i}" if bad else None,
                1024.0,
                None,
            )
        )
    # A trace of run-a: request > (load, score > (predict, postprocess: an error)).
    start = int((T0 + 10) * 1e9)
    spans = [
        (ROOT_SPAN, None, "handle request", 0, 90_000_000, None),
        ("a000000000000002", ROOT_SPAN, "load batch", 1_000_000, 30_000_000, None),
        ("a000000000000003", ROOT_SPAN, "score", 32_000_000, 55_000_000, None),
        ("a000000000000005", "a000000000000003", "predict", 33_000_000, 40_000_000, None),
        (ERROR_SPAN, "a000000000000003", "postprocess", 74_000_000, 10_000_000, "KeyError"),
    ]
    for span_id, parent, name, offset, duration, error in spans:
        records.append(
            (
                model.SPAN,
                TRACE_ID,
                span_id,
                parent,
                name,
                start + offset,
                duration,
                {"rows": 128} if name == "load batch" else None,
                error,
                "missing 'label'" if error else None,
                runs[0],
                "worker-1",
                4242,
                "MainThread",
                "trainer",
            )
        )
    records += profile_records(runs[0])
    at = T0 + 700
    records += [
        (model.SERIES, "web:1:1", None, "time_profiler", "histogram", None,
         '{"context":"Shop:checkout.price"}', 12.5,
         {"le": [0.01, 0.1, 1.0, "inf"], "cum": [10, 80, 99, 100]}, at),
        (model.SERIES, "web:1:1", None, "requests", "counter", None, '{"route":"/buy"}',
         100.0, {"created": T0}, at),
    ]  # fmt: skip
    with Store(store_url) as store:
        store.write(records)
    return Seeded(runs, hostile, failed, batch)


_LISTENING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@contextmanager
def serve(store_url: str, directory: Path, *args: str) -> Iterator[str]:
    """``jobtrace serve`` in a subprocess on 127.0.0.1 with port 0; yields its URL."""
    command = [
        *(sys.executable, "-m", "jobtrace", "serve", "--store", store_url),
        *("--host", "127.0.0.1", "--port", "0", "--log-level", "info", *args),
    ]
    with listening(command, directory) as url:
        yield url


@contextmanager
def listening(command: list[str], directory: Path) -> Iterator[str]:
    """Run ``command`` (a server on port 0) in ``directory`` in a session of its own; yield
    the URL uvicorn prints once it listens; end the whole session afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=cli_env(directory / ".jobtrace"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        found = None
        while found is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{log_path.read_text()}")
            found = _LISTENING.search(log_path.read_bytes())
            if found is None:
                time.sleep(0.05)  # polling a log file for the line, bounded by the deadline
        url = f"http://127.0.0.1:{int(found.group(1))}"
        wait_ready(url, process)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
