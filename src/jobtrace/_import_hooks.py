"""Patching a module when it is imported, not before.

jobtrace adds a little to two modules of the standard library while a job runs
(``multiprocessing.spawn`` and ``subprocess``), but must not import them itself: a program
that never uses them would pay their import time. :func:`when_imported` patches a module
at once if it is loaded, or else right after its first import, through a one-name
``sys.meta_path`` finder that takes itself out once its module is loaded.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

__all__ = ["PatchingFinder", "when_imported"]

log = logging.getLogger("jobtrace")

Patch = Callable[[ModuleType], None]


def when_imported(name: str, patch: Patch) -> None:
    """Call ``patch(module)`` for module ``name`` now if it is loaded, else right after it
    is first imported. ``patch`` must be idempotent; an exception from it is logged, never
    raised into the importing code."""
    module = sys.modules.get(name)
    if module is not None:
        _apply(name, patch, module)
    else:
        sys.meta_path.insert(0, PatchingFinder(name, patch))


def _apply(name: str, patch: Patch, module: ModuleType) -> None:
    try:
        patch(module)
    except Exception:
        log.exception("jobtrace: cannot hook %s", name)


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then patches the module; everything else is the real one's."""

    def __init__(self, loader: importlib.abc.Loader, finder: PatchingFinder) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _apply(self._finder.name, self._finder.patch, module)
        # Its work is done: no other import need pass by it.
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self._finder]

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename… for tracebacks
        return getattr(self._loader, name)


class PatchingFinder(importlib.abc.MetaPathFinder):
    """Finds nothing but its one module, through the usual path finder, and wraps its
    loader so the module is patched once executed."""

    def __init__(self, name: str, patch: Patch) -> None:
        self.name = name
        self.patch = patch

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader, self)
        return spec
