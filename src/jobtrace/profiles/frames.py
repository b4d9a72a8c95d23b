"""Frame names for profiles, and which frames are the launcher's rather than the job's.

A frame is named ``"function (file:first_line)"`` (:func:`jobtrace.profiles.folded.format_frame`)
with ``function`` the code's qualified name and ``file`` a short but unambiguous path: the
path relative to the ``sys.path`` entry it was imported from (``numpy/core/numeric.py``,
``train.py`` for the script itself), else its last two parts. The first line of the function,
not the line being run, keeps one node per function in a flamegraph and keeps stacks few.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import CodeType
from typing import Final

from jobtrace.profiles.folded import format_frame

__all__ = ["FrameNamer", "is_launcher_file", "short_filename"]

#: Past this many cached names the caches start over: code made by ``exec`` in a loop (a
#: template engine, say) would otherwise grow them without bound.
_CACHE_LIMIT: Final = 50_000


def short_filename(filename: str, path: list[str] | None = None) -> str:
    """``filename`` relative to the longest ``sys.path`` entry holding it, else its last
    two path parts; pseudo-files such as ``<frozen runpy>`` are kept as they are."""
    if not filename or filename.startswith("<"):
        return filename
    best = ""
    for entry in sys.path if path is None else path:
        root = os.path.abspath(entry) if entry else os.getcwd()  # noqa: PTH100, PTH109
        if (
            len(root) > len(best)
            and filename.startswith(root)
            and filename[len(root) : len(root) + 1] == os.sep
        ):
            best = root
    if best:
        return filename[len(best) + 1 :]
    parts = Path(filename).parts
    return "/".join(parts[-2:])


def _launcher_prefixes() -> tuple[str, ...]:
    """Files of the code that starts a job (``jobtrace run``, click, runpy): not the job's."""
    import jobtrace

    prefixes = [str(Path(jobtrace.__file__).parent / "cli") + os.sep]
    prefixes.append(str(Path(jobtrace.__file__).parent / "__main__.py"))
    click = sys.modules.get("click")
    if click is not None and getattr(click, "__file__", None):
        prefixes.append(str(Path(click.__file__).parent) + os.sep)  # type: ignore[arg-type]
    runpy = sys.modules.get("runpy")
    if runpy is not None and getattr(runpy, "__file__", None):
        prefixes.append(str(runpy.__file__))
    prefixes.append("<frozen runpy>")
    return tuple(prefixes)


_launcher: tuple[str, ...] | None = None


def is_launcher_file(filename: str) -> bool:
    """True for a file of the code that starts a job (``jobtrace run``, click, runpy)."""
    global _launcher
    if _launcher is None:
        _launcher = _launcher_prefixes()
    return filename.startswith(_launcher)


class FrameNamer:
    """Names code objects once each, and tells the launcher's frames from the job's."""

    __slots__ = ("_files", "_launcher", "_names", "_prefixes")

    def __init__(self) -> None:
        self._names: dict[CodeType, str] = {}
        self._files: dict[str, str] = {}
        self._launcher: dict[CodeType, bool] = {}
        self._prefixes = _launcher_prefixes()

    def name(self, code: CodeType) -> str:
        name = self._names.get(code)
        if name is None:
            if len(self._names) > _CACHE_LIMIT:
                self._names.clear()
                self._files.clear()
            filename = code.co_filename
            short = self._files.get(filename)
            if short is None:
                short = self._files[filename] = short_filename(filename)
            name = self._names[code] = format_frame(code.co_qualname, short, code.co_firstlineno)
        return name

    def is_launcher(self, code: CodeType) -> bool:
        """True for frames of ``jobtrace run`` / ``python -m`` machinery, which only ever
        sit at the root of the main thread's stack and are trimmed from it."""
        known = self._launcher.get(code)
        if known is None:
            if len(self._launcher) > _CACHE_LIMIT:
                self._launcher.clear()
            known = self._launcher[code] = code.co_filename.startswith(self._prefixes)
        return known
