"""`jobtrace batch stats` and `jobtrace batch items`, run as users run them, after the
process that recorded the batch has gone."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from tests.cli_helpers import cli_env, jobtrace_cli

RECORD = """
import json, sys, jobtrace
jobtrace.configure(sys.argv[1])
with jobtrace.BatchMetrics(sys.argv[2], name="nightly-scan") as m:
    for i in range(40):
        if i % 8 == 1:
            m.record_error(f"scan/{i}.wfm", "ValueError" if i % 16 == 1 else "OSError",
                           f"cannot parse {i}", duration=0.01)
        elif i % 13 == 2:
            m.record_skip(f"scan/{i}.wfm", "empty")
        else:
            m.record_file(f"scan/{i}.wfm", duration=0.05 + i / 1000, samples=1000 * i,
                          measurements=i, nbytes=4096, memory_peak=1 << 20)
print(json.dumps(m.summary().to_dict()))
"""


@pytest.fixture
def recorded(tmp_path: Path, store_url: str) -> tuple[str, str, dict[str, object]]:
    """A batch recorded by a process that has exited: (store URL, batch id, its summary)."""
    script = tmp_path / "record.py"
    script.write_text(textwrap.dedent(RECORD))
    batch_id = "scan-20261123-0001"
    out = subprocess.run(
        [sys.executable, str(script), store_url, batch_id],
        env=cli_env(tmp_path / "jt"),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return store_url, batch_id, orjson.loads(out.stdout)


def test_stats_json_equals_the_summary_the_recording_process_saw(
    tmp_path: Path, recorded: tuple[str, str, dict[str, object]]
) -> None:
    url, batch_id, summary = recorded
    out = jobtrace_cli("batch", "stats", batch_id, "--json", "--store", url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout) == summary
    assert summary["total_files"] == 40 and summary["error_count"] == 5


def test_stats_accepts_a_unique_prefix_and_prints_a_table(
    tmp_path: Path, recorded: tuple[str, str, dict[str, object]]
) -> None:
    url, batch_id, _ = recorded
    out = jobtrace_cli("batch", "stats", batch_id[:12], "--store", url, cwd=tmp_path, check=True)
    text = out.stdout
    assert batch_id in text and "nightly-scan" in text and "succeeded" in text
    assert "40 in all: 32 processed, 5 failed, 3 skipped" in text
    assert "ValueError" in text and "OSError" in text
    for word in ("mean", "median", "stddev", "files/s", "samples/s"):
        assert word in text


def test_stats_csv_is_one_flat_row(
    tmp_path: Path, recorded: tuple[str, str, dict[str, object]]
) -> None:
    url, batch_id, summary = recorded
    args = ("batch", "stats", batch_id, "--csv", "--store", url)
    out = jobtrace_cli(*args, cwd=tmp_path, check=True)
    (row,) = list(csv.DictReader(io.StringIO(out.stdout)))
    assert row["batch_id"] == batch_id and row["total_files"] == "40"
    assert row["errors.by_type.ValueError"] == "3" and row["errors.by_type.OSError"] == "2"
    timing = summary["timing"]
    assert isinstance(timing, dict)
    assert float(row["timing.median_per_file_seconds"]) == timing["median_per_file_seconds"]


def test_items_lists_errors_only_as_json_and_csv(
    tmp_path: Path, recorded: tuple[str, str, dict[str, object]]
) -> None:
    url, batch_id, _ = recorded
    args = ("batch", "items", batch_id, "--status", "error", "--store", url)
    rows = orjson.loads(jobtrace_cli(*args, "--json", cwd=tmp_path, check=True).stdout)
    assert [r["filename"] for r in rows] == [f"scan/{i}.wfm" for i in (1, 9, 17, 25, 33)]
    assert {r["status"] for r in rows} == {"error"}
    assert rows[0]["error_type"] == "ValueError" and rows[0]["error_message"] == "cannot parse 1"
    assert all(r["id"] for r in rows)
    out = jobtrace_cli(*args, "--csv", cwd=tmp_path, check=True).stdout
    assert len(list(csv.DictReader(io.StringIO(out)))) == 5


def test_items_table_shows_files_and_says_how_many_more(
    tmp_path: Path, recorded: tuple[str, str, dict[str, object]]
) -> None:
    url, batch_id, _ = recorded
    out = jobtrace_cli(
        "batch", "items", batch_id, "-n", "5", "--store", url, cwd=tmp_path, check=True
    )
    assert "scan/0.wfm" in out.stdout and "scan/4.wfm" in out.stdout
    assert "scan/5.wfm" not in out.stdout
    assert "and 35 more" in out.stdout
    assert "1.0 MiB" in out.stdout  # the peak memory column


def test_an_unknown_batch_is_a_one_line_error(tmp_path: Path, store_url: str) -> None:
    from jobtrace.store import Store

    Store(store_url).close()  # an existing, empty store
    for command in ("stats", "items"):
        out = jobtrace_cli("batch", command, "nope", "--store", store_url, cwd=tmp_path)
        assert out.returncode == 1
        assert out.stderr.startswith("jobtrace: error: no batch 'nope' in ")


def test_json_and_csv_together_are_a_usage_error(tmp_path: Path) -> None:
    out = jobtrace_cli("batch", "stats", "x", "--json", "--csv", cwd=tmp_path)
    assert out.returncode == 2 and "exclude each other" in out.stderr


def test_a_batch_run_by_map_in_a_script_is_readable_afterwards(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            """
            import jobtrace.batch
            def work(n):
                if n == 2:
                    raise KeyError(n)
                return n
            results = jobtrace.batch.map(work, range(5), workers=2, batch_id="mapped")
            """
        )
    )
    subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=cli_env(tmp_path / ".jobtrace"),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    out = jobtrace_cli("batch", "stats", "mapped", "--json", cwd=tmp_path, check=True)
    data = orjson.loads(out.stdout)
    assert (data["total_files"], data["errors"]["by_type"]) == (5, {"KeyError": 1})


def test_batch_run_records_one_item_per_file_with_the_commands_outcome(
    tmp_path: Path, store_url: str
) -> None:
    (tmp_path / "a.txt").write_text("alpha\n")
    (tmp_path / "b.txt").write_text("beta beta\n")
    out = jobtrace_cli(
        "batch", "run", "-w", "2", "--batch-id", "cat-run", "-c", "cat {}", "--store", store_url,
        "a.txt", "missing.txt", "b.txt", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr  # a file failed
    assert "2 of 3 files succeeded, 1 failed; jobtrace batch stats cat-run" in out.stderr
    rows = orjson.loads(
        jobtrace_cli(
            "batch", "items", "cat-run", "--json", "--store", store_url, cwd=tmp_path, check=True
        ).stdout
    )
    by_name = {r["filename"]: r for r in rows}
    assert by_name["a.txt"]["status"] == "success" and by_name["a.txt"]["bytes"] == 6
    assert by_name["b.txt"]["bytes"] == 10
    missing = by_name["missing.txt"]
    assert missing["status"] == "error" and missing["error_type"].endswith("CommandError")
    assert missing["error_message"].startswith("exit status 1: ")
    assert "missing.txt" in missing["error_message"]
    assert all(r["memory_peak_bytes"] > 0 for r in rows)
    stats = orjson.loads(
        jobtrace_cli(
            "batch", "stats", "cat-run", "--json", "--store", store_url, cwd=tmp_path, check=True
        ).stdout
    )
    assert (stats["total_files"], stats["error_count"]) == (3, 1)


def test_batch_run_reads_files_from_stdin_and_names_signals(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", "jobtrace", "batch", "run", "-q", "--batch-id", "sig",
         "-c", "sh -c 'kill -KILL $$' sh {}", "--files-from", "-"],
        input="x\n\n", cwd=tmp_path, env=cli_env(tmp_path / ".jobtrace"), capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and result.stderr == ""
    rows = orjson.loads(jobtrace_cli("batch", "items", "sig", "--json", cwd=tmp_path).stdout)
    assert [(r["filename"], r["error_message"]) for r in rows] == [("x", "killed by SIGKILL")]


def test_batch_run_refuses_a_missing_command_or_no_files(tmp_path: Path) -> None:
    out = jobtrace_cli("batch", "run", "-c", "no-such-command-xyz {}", "a", cwd=tmp_path)
    assert out.returncode == 2 and "command not found: no-such-command-xyz" in out.stderr
    out = jobtrace_cli("batch", "run", "-c", "cat {}", cwd=tmp_path)
    assert out.returncode == 2 and "no files given" in out.stderr


def test_the_batch_example_runs_and_its_batch_reads_back(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "batch_files.py"
    out = subprocess.run(
        [sys.executable, str(example), "-n", "40", "--export", str(tmp_path)],
        cwd=tmp_path, env=cli_env(tmp_path / ".jobtrace"), capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    assert "of 40 files parsed" in out.stdout
    batch_id = out.stdout.split("jobtrace batch stats ")[1].split()[0]
    exported = orjson.loads((tmp_path / f"{batch_id}.json").read_text())
    stats = jobtrace_cli("batch", "stats", batch_id, "--json", cwd=tmp_path, check=True)
    assert orjson.loads(stats.stdout) == exported["summary"]
    assert exported["summary"]["error_count"] > 0 and exported["summary"]["skip_count"] > 0
