"""Profile records with known content, made with the contract functions of
:mod:`jobtrace.profiles.folded`, for the store, renderer, CLI and report tests."""

from __future__ import annotations

from typing import Any

from jobtrace import model
from jobtrace.profiles.folded import memory_record, stacks_record, timeline_record

PROCESS = "process 4242 (main)"
T0 = 1_800_000_000.0
MAIN = "<module> (etl.py:1)"
LOAD = "load_rows (etl.py:10)"
PARSE = "parse_csv (etl.py:20)"
READ = "read (io.py:5)"
TRANSFORM = "transform (etl.py:40)"
SCORE = "score <b>&</b> (etl.py:55)"  # markup in a frame name must stay text

#: (stack id, folded text, wall µs, cpu µs): load waits on I/O, transform computes.
STACKS = [
    (1, f"{MAIN};{LOAD};{READ}", 1_500_000, 100_000),
    (2, f"{MAIN};{LOAD};{PARSE}", 1_000_000, 950_000),
    (3, f"{MAIN};{TRANSFORM}", 2_000_000, 2_000_000),
    (4, f"{MAIN};{TRANSFORM};{SCORE}", 3_000_000, 2_900_000),
]
#: Bytes live at the peak, by allocating stack.
MEMORY = {f"{MAIN};{LOAD};{PARSE}": 300 * 1024 * 1024, f"{MAIN};{TRANSFORM}": 20 * 1024 * 1024}


def job_record(job_id: str, *, name: str = "nightly-etl", status: str = "succeeded") -> Any:
    """A finished job's snapshot record, seven and a half seconds long."""
    fields = {
        "id": job_id,
        "seq": 1,
        "name": name,
        "experiment": "etl",
        "status": status,
        "start_time": T0,
        "end_time": T0 + 7.5,
        "duration": 7.5,
        "peak_memory_kb": 330 * 1024,
        "cpu_user": 5.5,
        "cpu_sys": 0.45,
        "exit_code": 0 if status == "succeeded" else 1,
        "error_type": None,
        "error_message": None,
        "host": "worker-7",
        "pid": 4242,
        "argv": ["etl.py"],
        "tags": {},
        "params": {},
        "last_heartbeat": T0 + 7.5,
        "heartbeat_interval": 10.0,
        "report_dir": None,
        "records_dropped": None,
        "traceback": None,
    }
    return (model.JOB, *(fields[f] for f in model.FIELDS[model.JOB]))


def profile_records(job_id: str) -> list[Any]:
    """Two stacks records (stack text sent once), a timeline and a peak-memory record."""
    first, second = STACKS[:2], STACKS[2:]
    points = [(T0 + i * 0.5, 50_000 + i * 20_000, 40.0 if i < 6 else 98.0) for i in range(16)]
    return [
        stacks_record(
            job_id,
            PROCESS,
            {sid: text for sid, text, _, _ in first},
            [(sid, wall, cpu) for sid, _, wall, cpu in first],
            T0,
            T0 + 2.5,
        ),
        stacks_record(
            job_id,
            PROCESS,
            {sid: text for sid, text, _, _ in second},
            # stack 1 again, by id only: its text came with the first record
            [(sid, wall, cpu) for sid, _, wall, cpu in second] + [(1, 0, 0)],
            T0 + 2.5,
            T0 + 7.5,
        ),
        timeline_record(job_id, PROCESS, points, T0 + 7.5),
        memory_record(job_id, PROCESS, "approximate", 330 * 1024, MEMORY, T0 + 3.0),
    ]
