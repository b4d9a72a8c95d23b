"""Build hooks only; everything else about the package is in pyproject.toml.

The C extensions there are optional: where they cannot be compiled (no compiler, no Python
headers) the install still succeeds and the pure-Python hot paths run, 2-4x slower. pip
hides a build's output unless it fails, so the warning setuptools prints is seen only with
``pip install -v``. This ``build_ext`` says it in words a person can act on — on the
build's stderr (``pip install -v``, ``python -m build``) and, when the install runs in a
terminal, on that terminal — and leaves a note in the package that ``jobtrace doctor``
reads back to say why the speedups are not in use.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: The note's name inside the package; jobtrace._config.BUILD_PROBLEMS_FILE reads it (a
#: test keeps the two equal: this file cannot import jobtrace while it is being built).
BUILD_PROBLEMS_FILE = "_build_problems.json"

_BANNER = "*" * 78
#: What a user loses without each extension.
_WITHOUT = {
    "jobtrace._speedups": "its pure-Python hot paths run instead (spans and records 2-4x slower)",
    "jobtrace._memtrack": "a job's peak memory is measured, but not attributed to code",
    "": "a pure-Python fallback runs instead",
}


class OptionalBuildExt(build_ext):
    """``build_ext`` that reports an optional extension it could not build, loudly."""

    def build_extension(self, ext: Any) -> None:
        note = Path(self.get_ext_fullpath(ext.name)).parent / BUILD_PROBLEMS_FILE
        try:
            super().build_extension(ext)
        except Exception as exc:  # CompileError, LinkError, a missing compiler, ...
            if not getattr(ext, "optional", False):
                raise
            reason = " ".join(str(exc).split()) or type(exc).__name__
            _remember(note, ext.name, reason)
            _warn(ext.name, reason)
            raise  # setuptools skips an optional extension that failed, and goes on
        _remember(note, ext.name, None)


def _remember(note: Path, name: str, reason: str | None) -> None:
    """Record (or, built now, forget) why extension ``name`` is missing."""
    try:
        problems = json.loads(note.read_text("utf-8")) if note.exists() else {}
    except (OSError, ValueError):
        problems = {}
    if reason is None:
        if problems.pop(name, None) is None:
            return
    else:
        problems[name] = reason
    note.parent.mkdir(parents=True, exist_ok=True)
    if problems:
        note.write_text(json.dumps(problems, indent=1, sort_keys=True) + "\n", "utf-8")
    elif note.exists():
        note.unlink()


def _warn(name: str, reason: str) -> None:
    message = "\n".join(
        [
            "",
            _BANNER,
            f"jobtrace: the optional C extension {name} could not be compiled:",
            f"    {reason}",
            f"jobtrace is installed and works without it: {_WITHOUT.get(name, _WITHOUT[''])}.",
            "To build it, install a C compiler and the Python headers",
            "(e.g. apt-get install gcc python3-dev) and reinstall jobtrace;",
            "`jobtrace doctor` shows what is in use.",
            _BANNER,
            "",
        ]
    )
    print(message, file=sys.stderr, flush=True)
    # pip shows a successful build's output only with -v: say it on the terminal too.
    if sys.stderr.isatty():
        return
    try:
        fd = os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY)
    except OSError:  # no terminal (CI, a container): the build log has it
        return
    with os.fdopen(fd, "w") as tty:
        tty.write(message + "\n")


if __name__ == "__main__":  # as setuptools' build backend runs it
    setup(cmdclass={"build_ext": OptionalBuildExt})
