"""The `jobtrace` command, run in a subprocess against a real SQLite store."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from tests.cli_helpers import jobs_json, jobtrace_cli


def write(path: Path, code: str) -> Path:
    path.write_text(textwrap.dedent(code))
    return path


def test_run_behaves_like_python_and_records_the_job(tmp_path: Path) -> None:
    (tmp_path / "helper_mod.py").write_text("VALUE = 42\n")
    script = write(
        tmp_path / "show.py",
        """
        import sys, helper_mod
        print(repr(sys.argv), __name__, helper_mod.VALUE, sys.path[0])
        """,
    )
    result = jobtrace_cli(
        "run", "--tag", "team=ml", "--param", "lr=0.1", str(script), "a", "--flag", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"[{str(script)!r}, 'a', '--flag'] __main__ 42 {tmp_path}"
    [job] = jobs_json(tmp_path)
    assert job["status"] == "succeeded" and job["exit_code"] == 0
    assert job["name"] == "show"
    assert job["tags"] == {"team": "ml"} and job["params"] == {"lr": 0.1}
    assert job["argv"] == [str(script), "a", "--flag"]
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"jobtrace: job {job['id']} (show) succeeded after ")
    assert "peak memory" in summary and job["report_dir"] in summary
    report = orjson.loads((Path(job["report_dir"]) / "report.json").read_bytes())
    assert report["id"] == job["id"] and isinstance(report["peak_memory_kb"], int)


def test_run_keeps_the_scripts_exit_status(tmp_path: Path) -> None:
    script = write(tmp_path / "exit3.py", "import sys\nsys.exit(3)\n")
    result = jobtrace_cli("run", str(script), cwd=tmp_path)
    assert result.returncode == 3
    [job] = jobs_json(tmp_path)
    assert (job["status"], job["exit_code"]) == ("failed", 3)


def test_sys_exit_with_a_message_prints_it_and_exits_1(tmp_path: Path) -> None:
    script = write(tmp_path / "msg.py", "import sys\nsys.exit('giving up')\n")
    result = jobtrace_cli("run", "-q", str(script), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "giving up"


def test_an_uncaught_exception_prints_pythons_traceback_without_jobtrace_frames(
    tmp_path: Path,
) -> None:
    script = write(
        tmp_path / "boom.py",
        """
        def inner():
            raise ValueError("bad <input>")
        inner()
        """,
    )
    result = jobtrace_cli("run", "-q", str(script), cwd=tmp_path)
    plain = __import__("subprocess").run(
        [sys.executable, str(script)], capture_output=True, text=True
    )
    assert result.returncode == plain.returncode == 1
    assert result.stderr == plain.stderr
    [job] = jobs_json(tmp_path)
    assert (job["status"], job["error_type"], job["error_message"]) == (
        "failed",
        "ValueError",
        "bad <input>",
    )


def test_run_a_module_like_python_dash_m(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write(package / "tool.py", "import sys\nprint(__name__, sys.argv[1:])\n")
    result = jobtrace_cli("run", "--experiment", "mods", "-m", "pkg.tool", "x", "-v", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "__main__ ['x', '-v']"
    [job] = jobs_json(tmp_path)
    assert (job["name"], job["experiment"]) == ("pkg.tool", "mods")


def test_job_id_from_the_option_and_from_the_environment(tmp_path: Path) -> None:
    script = write(tmp_path / "ok.py", "pass\n")
    jobtrace_cli("run", "--job-id", "my-run-1", str(script), cwd=tmp_path, check=True)
    jobtrace_cli("run", str(script), cwd=tmp_path, check=True, JOBTRACE_JOB_ID="env-run-2")
    assert {j["id"] for j in jobs_json(tmp_path)} == {"my-run-1", "env-run-2"}


def test_a_missing_script_is_a_one_line_error(tmp_path: Path) -> None:
    result = jobtrace_cli("run", "nope.py", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "can't open file" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_store_scheme_is_a_one_line_error(tmp_path: Path) -> None:
    script = write(tmp_path / "ok.py", "print('ran')\n")
    result = jobtrace_cli("run", "--store", "mongodb://x/y", str(script), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "known schemes" in result.stderr


def test_jobs_list_table_filters_and_show(tmp_path: Path) -> None:
    ok = write(tmp_path / "ok.py", "pass\n")
    bad = write(tmp_path / "bad.py", "raise SystemExit(2)\n")
    jobtrace_cli("run", "-e", "alpha", str(ok), cwd=tmp_path, check=True)
    jobtrace_cli("run", "-e", "beta", str(bad), cwd=tmp_path)
    table = jobtrace_cli("jobs", "list", cwd=tmp_path, check=True).stdout
    lines = table.strip().splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "EXPERIMENT"]
    assert "bad" in lines[1] and "failed" in lines[1]  # newest first
    assert "ok" in lines[2] and "succeeded" in lines[2]
    assert [j["name"] for j in jobs_json(tmp_path, "--experiment", "alpha")] == ["ok"]
    assert [j["name"] for j in jobs_json(tmp_path, "--status", "failed")] == ["bad"]

    job_id = jobs_json(tmp_path, "--status", "failed")[0]["id"]
    shown = orjson.loads(
        jobtrace_cli("jobs", "show", job_id[:20], "--json", cwd=tmp_path, check=True).stdout
    )
    assert shown["id"] == job_id and shown["exit_code"] == 2
    assert shown["start_time"].endswith("+00:00")
    text = jobtrace_cli("jobs", "show", job_id, cwd=tmp_path, check=True).stdout
    assert "peak memory" in text and "failed" in text


def test_jobs_list_searches_params_and_metrics_and_sorts(tmp_path: Path) -> None:
    script = write(
        tmp_path / "train.py",
        "import sys, jobtrace\njobtrace.log_metric('loss', float(sys.argv[1]) * 10, step=1)\n",
    )
    for lr, optimizer in (("0.1", "adam"), ("0.01", "sgd"), ("0.05", "adam")):
        params = ("--param", f"lr={lr}", "--param", f"optimizer={optimizer}")
        jobtrace_cli("run", *params, str(script), lr, cwd=tmp_path, check=True)

    def losses(*options: str) -> list[float]:
        found = jobs_json(tmp_path, *options)
        return [j["params"]["lr"] for j in found]

    assert losses("--search", "param.optimizer:adam", "--sort", "metric.loss") == [0.05, 0.1]
    assert losses("--search", "metric.loss<0.6", "--sort", "metric.loss", "--desc") == [0.05, 0.01]
    assert losses("--limit", "1", "--sort", "metric.loss") == [0.01]
    more = jobtrace_cli("jobs", "list", "--limit", "1", cwd=tmp_path, check=True).stdout
    assert "(2 more; raise --limit to see them)" in more
    bad = jobtrace_cli("jobs", "list", "--search", "prams.lr>1", cwd=tmp_path)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1
    assert "unknown field prefix 'prams.'" in bad.stderr


def test_show_an_unknown_job_is_a_one_line_error(tmp_path: Path) -> None:
    write(tmp_path / "ok.py", "pass\n")
    jobtrace_cli("run", str(tmp_path / "ok.py"), cwd=tmp_path, check=True)
    result = jobtrace_cli("jobs", "show", "nonexistent", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1


def test_reading_a_store_that_does_not_exist_says_so(tmp_path: Path) -> None:
    result = jobtrace_cli("jobs", "list", cwd=tmp_path)
    assert result.returncode == 1 and "no jobtrace store" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_corrupt_store_is_a_clear_error_and_does_not_break_the_script(tmp_path: Path) -> None:
    db = tmp_path / ".jobtrace" / "jobtrace.db"
    db.parent.mkdir()
    db.write_bytes(b"garbage" * 1000)
    listing = jobtrace_cli("jobs", "list", cwd=tmp_path)
    assert listing.returncode == 1 and "not a database" in listing.stderr
    assert listing.stderr.count("\n") == 1

    script = write(tmp_path / "five.py", "print('still runs')\nraise SystemExit(5)\n")
    result = jobtrace_cli("run", str(script), cwd=tmp_path)
    assert result.returncode == 5 and result.stdout.strip() == "still runs"
    assert "spooling" in result.stderr
    assert db.read_bytes() == b"garbage" * 1000  # nothing overwritten
    assert list((tmp_path / ".jobtrace" / "spool").rglob("*.spool*"))


def test_db_upgrade_creates_and_reports_the_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    first = jobtrace_cli("db", "upgrade", "--store", url, cwd=tmp_path, check=True)
    assert "upgraded schema from empty to revision" in first.stdout
    second = jobtrace_cli("db", "upgrade", "--store", url, cwd=tmp_path, check=True)
    assert "schema is current" in second.stdout


@pytest.mark.postgresql
def test_run_into_postgresql(tmp_path: Path, postgres_url: str) -> None:
    script = write(tmp_path / "ok.py", "pass\n")
    jobtrace_cli("run", "--store", postgres_url, str(script), cwd=tmp_path, check=True)
    [job] = jobs_json(tmp_path, "--store", postgres_url)
    assert job["status"] == "succeeded"


@pytest.mark.parametrize(
    "command",
    [[], ["run"], ["jobs"], ["jobs", "list"], ["jobs", "show"], ["db"], ["db", "upgrade"]],
)
def test_every_command_has_help(tmp_path: Path, command: list[str]) -> None:
    result = jobtrace_cli(*command, "--help", cwd=tmp_path, check=True)
    assert "Usage:" in result.stdout


def test_version(tmp_path: Path) -> None:
    import jobtrace

    assert jobtrace.__version__ in jobtrace_cli("--version", cwd=tmp_path, check=True).stdout


def test_everything_after_the_module_or_script_belongs_to_the_target(tmp_path: Path) -> None:
    """As with ``python -m``: options after ``-m MODULE`` or SCRIPT are the target's, even
    ones jobtrace has itself (``-q``, ``--name``, ``-h``), and the recorded argv keeps them."""
    write(tmp_path / "showargs.py", "import sys\nprint(sys.argv[1:])\n")
    ran = jobtrace_cli(
        "run", "-q", "--name", "mine", "-m", "showargs", "-q", "--name", "x", "--", "-h",
        cwd=tmp_path, check=True,
    )  # fmt: skip
    assert ran.stdout.strip() == "['-q', '--name', 'x', '--', '-h']"
    ran = jobtrace_cli("run", "-q", "showargs.py", "-q", "-m", "y", cwd=tmp_path, check=True)
    assert ran.stdout.strip() == "['-q', '-m', 'y']"
    helped = jobtrace_cli("run", "-q", "-m", "json.tool", "-h", cwd=tmp_path, check=True)
    assert "json.tool" in helped.stdout and "jobtrace" not in helped.stdout
    recorded = {j["name"]: j["argv"] for j in jobs_json(tmp_path)}
    assert recorded["mine"] == ["-m", "showargs", "-q", "--name", "x", "--", "-h"]
    assert recorded["showargs"] == ["showargs.py", "-q", "-m", "y"]


def test_a_module_that_does_not_exist_is_one_line_as_with_python_m(tmp_path: Path) -> None:
    result = jobtrace_cli("run", "-q", "-m", "nosuch.module", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "jobtrace: error: Error while finding module specification for 'nosuch.module' "
        "(ModuleNotFoundError: No module named 'nosuch')"
    ]


def test_store_errors_of_db_upgrade_and_serve_are_one_line(tmp_path: Path) -> None:
    down = jobtrace_cli("db", "upgrade", "--store", "postgresql://u@127.0.0.1:9/x", cwd=tmp_path)
    assert down.returncode == 1 and down.stderr.count("\n") == 1
    assert "cannot open postgresql://u@127.0.0.1:9/x" in down.stderr
    typo = tmp_path / "typo" / "x.db"
    served = jobtrace_cli("serve", "--store", f"sqlite:///{typo}", "--port", "9", cwd=tmp_path)
    assert served.returncode == 1 and served.stderr.count("\n") == 1
    assert "add --create to start a new store there" in served.stderr
    assert not typo.parent.exists()


def test_every_command_and_option_explains_itself() -> None:
    import click

    from jobtrace.cli import cli

    missing: list[str] = []

    def walk(command: click.Command, path: str) -> None:
        if not command.help:
            missing.append(path)
        for param in command.params:
            if isinstance(param, click.Option) and not param.help and "--help" not in param.opts:
                missing.append(f"{path} {param.opts[0]}")
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")

    walk(cli, "jobtrace")
    assert missing == []


def test_the_script_s_collector_does_not_walk_what_jobtrace_made(tmp_path: Path) -> None:
    """``jobtrace run`` freezes the objects made before the script starts (jobtrace's and
    its imports'): the collector's full passes over the script's containers then walk no
    more than under plain ``python``."""
    code = "import gc\nprint(gc.get_freeze_count(), len(gc.get_objects()))\n"
    write(tmp_path / "gcount.py", code)
    out = jobtrace_cli("run", "-q", "gcount.py", cwd=tmp_path, check=True).stdout.split()
    frozen, tracked = int(out[0]), int(out[1])
    assert frozen > 5000 and tracked < 2000
