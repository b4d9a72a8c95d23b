"""Running the real `jobtrace` command in a subprocess, as users do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

import jobtrace

#: Where the jobtrace under test lives. A subprocess started in another directory would not
#: find it through a relative ``PYTHONPATH=src`` and would import an installed copy instead.
JOBTRACE_SOURCE = str(Path(jobtrace.__file__).resolve().parents[1])


def cli_env(directory: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRACE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [JOBTRACE_SOURCE, env.get("PYTHONPATH")]))
    env["JOBTRACE_DIR"] = str(directory)
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def jobtrace_cli(
    *args: str, cwd: Path, directory: Path | None = None, check: bool = False, **extra: str
) -> subprocess.CompletedProcess[str]:
    directory = directory or cwd / ".jobtrace"
    result = subprocess.run(
        [sys.executable, "-m", "jobtrace", *args],
        cwd=cwd,
        env=cli_env(directory, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def jobs_json(cwd: Path, *args: str, **extra: str) -> Any:
    out = jobtrace_cli("jobs", "list", "--json", *args, cwd=cwd, check=True, **extra)
    return orjson.loads(out.stdout)
