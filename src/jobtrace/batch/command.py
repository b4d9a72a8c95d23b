"""Running a command once per file as a batch item: what ``jobtrace batch run`` does.

Each file runs ``COMMAND`` in a child process, with ``{}`` in the command's arguments
replaced by the file (or the file appended when no argument holds ``{}``). The item's
memory peak is the child's, read from ``wait4`` rather than this process's (Linux carries
the launching process's size over ``exec``, so it is never below that); its bytes are the
file's size; a non-zero exit status fails the item with the last line the command
wrote to stderr. Standard output is discarded: with many commands at once it would only
interleave.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from jobtrace.batch.runner import report

__all__ = ["CommandError", "command_args", "run_command"]

_KIB = 1 if sys.platform.startswith("linux") else 1024  # ru_maxrss unit divisor to KiB
#: How much of a failed command's stderr is kept for its error message.
_STDERR_TAIL = 4096


class CommandError(Exception):
    """A command run for a batch item exited with a non-zero status or by a signal."""


def command_args(template: Sequence[str], path: str) -> list[str]:
    """The argument vector for one file: ``{}`` replaced by it, or it appended."""
    if any("{}" in arg for arg in template):
        return [arg.replace("{}", path) for arg in template]
    return [*template, path]


def _last_line(data: bytes) -> str:
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def run_command(template: Sequence[str], path: str) -> int:
    """Run the command for ``path``; return 0 or raise :class:`CommandError`."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            command_args(template, path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        # wait4, not Popen.wait: it also returns the child's own resource usage, so the
        # item's memory peak is the command's, not this process's.
        _, status, usage = os.wait4(proc.pid, 0)
        code = proc.returncode = os.waitstatus_to_exitcode(status)
        try:
            size = Path(path).stat().st_size
        except OSError:
            size = 0
        report(nbytes=size, memory_peak=int(usage.ru_maxrss // _KIB) * 1024)
        if code == 0:
            return 0
        stderr.seek(max(0, stderr.seek(0, os.SEEK_END) - _STDERR_TAIL))
        tail = _last_line(stderr.read())
    raise CommandError(f"{_reason(code)}: {tail}" if tail else _reason(code))


def _reason(code: int) -> str:
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"
