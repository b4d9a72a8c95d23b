"""``jobtrace doctor``: versions, the compiled speedups, the store in effect, the spool."""

from __future__ import annotations

from pathlib import Path

import orjson

import jobtrace
from tests.cli_helpers import jobtrace_cli


def write(path: Path, code: str) -> Path:
    path.write_text(code)
    return path


def doctor(tmp_path: Path, *args: str, **env: str) -> tuple[int, dict[str, object]]:
    result = jobtrace_cli("doctor", "--json", *args, cwd=tmp_path, **env)
    return result.returncode, orjson.loads(result.stdout)


def test_a_working_set_up_is_reported_as_such(tmp_path: Path) -> None:
    jobtrace_cli("run", str(write(tmp_path / "ok.py", "pass\n")), cwd=tmp_path, check=True)
    code, report = doctor(tmp_path)
    assert code == 0
    assert report["version"] == jobtrace.__version__
    assert report["store"] == {
        "url": f"sqlite:///{tmp_path / '.jobtrace' / 'jobtrace.db'}",
        "reachable": True,
        "detail": report["store"]["detail"],  # type: ignore[index]
    }
    assert "schema current, 1 job(s)" in report["store"]["detail"]  # type: ignore[index]
    assert report["spool"] == {"records": 0, "files": 0, "quarantined": 0, "stores": []}
    assert report["extras"]["server"] is True  # type: ignore[index]  # the test extra has it


def test_speedups_turned_off_or_missing_say_why(tmp_path: Path) -> None:
    _, report = doctor(tmp_path, JOBTRACE_NO_EXTENSIONS="1")
    off = {"in_use": False, "detail": "turned off by JOBTRACE_NO_EXTENSIONS"}
    assert report["speedups"] == report["memory_tracker"] == off


def test_an_unreachable_store_fails_with_the_reason_and_looking_changes_nothing(
    tmp_path: Path,
) -> None:
    code, report = doctor(tmp_path, "--store", "http://127.0.0.1:9")
    assert code == 1 and report["store"]["reachable"] is False  # type: ignore[index]
    assert "cannot reach http://127.0.0.1:9" in report["store"]["detail"]  # type: ignore[index]
    code, report = doctor(tmp_path)  # no store recorded yet: said, and none is created
    assert code == 1 and "no jobtrace store" in report["store"]["detail"]  # type: ignore[index]
    assert not (tmp_path / ".jobtrace" / "jobtrace.db").exists()


def test_the_table_names_each_part(tmp_path: Path) -> None:
    out = jobtrace_cli("doctor", cwd=tmp_path).stdout
    for label in ("jobtrace", "python", "speedups", "store", "spool", "extras"):
        assert any(line.startswith(label) for line in out.splitlines()), label
