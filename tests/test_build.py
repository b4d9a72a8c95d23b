"""A build that cannot compile the optional C extensions says so, and the install still
succeeds: ``setup.py``'s ``build_ext`` prints an actionable message and leaves a note in
the package that ``jobtrace doctor`` reads back."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest

import jobtrace
from jobtrace import _config
from tests.cli_helpers import cli_env

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(jobtrace.__file__).parent


def build_ext_class() -> Any:
    return runpy.run_path(str(ROOT / "setup.py"), run_name="jobtrace_setup")["OptionalBuildExt"]


def test_the_build_and_doctor_agree_on_the_notes_name() -> None:
    setup = runpy.run_path(str(ROOT / "setup.py"), run_name="jobtrace_setup")
    assert setup["BUILD_PROBLEMS_FILE"] == _config.BUILD_PROBLEMS_FILE


def test_an_extension_that_cannot_compile_is_reported_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from setuptools import Distribution, Extension

    monkeypatch.setenv("CC", "false")  # a compiler that always fails
    monkeypatch.chdir(ROOT)
    dist = Distribution(
        {
            "name": "jobtrace",
            "ext_modules": [
                Extension("jobtrace._speedups", ["src/jobtrace/_speedups.c"], optional=True)
            ],
            "cmdclass": {"build_ext": build_ext_class()},
        }
    )
    command = dist.get_command_obj("build_ext")
    command.build_lib = str(tmp_path / "lib")
    command.build_temp = str(tmp_path / "temp")
    command.ensure_finalized()
    command.run()  # does not raise: the extension is optional
    err = capfd.readouterr().err
    assert "jobtrace: the optional C extension jobtrace._speedups could not be compiled" in err
    assert "apt-get install gcc python3-dev" in err
    note = orjson.loads((tmp_path / "lib" / "jobtrace" / _config.BUILD_PROBLEMS_FILE).read_text())
    assert list(note) == ["jobtrace._speedups"] and "false" in note["jobtrace._speedups"]
    assert not list((tmp_path / "lib").rglob("*.so"))


def package_copy(tmp_path: Path, note: dict[str, str] | None = None) -> Path:
    """This jobtrace's sources without compiled modules (as a build without a compiler)."""
    target = tmp_path / "site" / "jobtrace"
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    if note is not None:
        (target / _config.BUILD_PROBLEMS_FILE).write_bytes(orjson.dumps(note))
    return target.parent


def doctor_speedups(tmp_path: Path, site: Path) -> dict[str, Any]:
    env = cli_env(tmp_path / ".jobtrace")
    env["PYTHONPATH"] = str(site)
    done = subprocess.run(
        [sys.executable, "-m", "jobtrace", "doctor", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = orjson.loads(done.stdout)
    assert report["executable"] == sys.executable
    speedups: dict[str, Any] = report["speedups"]
    return speedups


def test_doctor_says_the_speedups_were_never_built(tmp_path: Path) -> None:
    speedups = doctor_speedups(tmp_path, package_copy(tmp_path))
    assert speedups["in_use"] is False
    assert speedups["detail"].startswith("never built (this install has no compiled")
    assert "install a C compiler" in speedups["detail"]


def test_doctor_says_compiling_failed_at_install_and_why(tmp_path: Path) -> None:
    site = package_copy(tmp_path, {"jobtrace._speedups": "error: command 'gcc' failed"})
    speedups = doctor_speedups(tmp_path, site)
    assert speedups["detail"].startswith(
        "not built: compiling it failed when jobtrace was installed "
        "(error: command 'gcc' failed); install a C compiler"
    )


@pytest.mark.install
@pytest.mark.timeout(300)
def test_pip_builds_without_a_compiler_and_says_so(tmp_path: Path) -> None:
    source = tmp_path / "src-tree"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", "*.so", "__pycache__", ".jobtrace", "build"),
    )
    env = {**os.environ, "CC": "false", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), "."],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr
    for name in ("jobtrace._speedups", "jobtrace._memtrack"):
        assert f"jobtrace: the optional C extension {name} could not be compiled" in output
    (wheel,) = tmp_path.glob("jobtrace-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith(".so")]
    note = orjson.loads(zipfile.ZipFile(wheel).read(f"jobtrace/{_config.BUILD_PROBLEMS_FILE}"))
    assert set(note) == {"jobtrace._speedups", "jobtrace._memtrack"}
