"""Profiling ``multiprocessing`` children started with ``spawn`` (and ``forkserver``).

A forked child inherits the sampler's state and carries on from an ``os.register_at_fork``
hook (:mod:`jobtrace.profiles.sampler`). A spawned child is a fresh interpreter that may
never import jobtrace. It does read one thing from its parent before anything else: the
*preparation data* that ``multiprocessing.spawn.get_preparation_data`` builds and the child
unpickles in ``spawn._main`` (the forkserver start method uses the same path). While a job
is profiled, jobtrace adds one entry to that dict whose unpickling runs a small, guarded
bootstrap: import jobtrace (from the parent's location if need be) and start a child session
for the same job. Anything failing there is swallowed: the child runs unprofiled, never
broken. ``prepare()`` ignores keys it does not know, so the entry itself is inert.

``multiprocessing.spawn`` is patched when it is imported
(:func:`jobtrace._import_hooks.when_imported`), so ``import jobtrace`` and a job's start do
not import ``multiprocessing``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from jobtrace._import_hooks import when_imported

__all__ = ["install", "start_spawned"]

log = logging.getLogger("jobtrace.profiles")

_MODULE: Final = "multiprocessing.spawn"
_KEY: Final = "jobtrace_profile"
_MEMORY: Final = "jobtrace.profiles.memory"  # read only when a job has imported it

# Run by the child while it unpickles its preparation data (see _Bootstrap.__reduce__).
_BOOTSTRAP: Final = """
try:
    try:
        from jobtrace.profiles import children as _children
    except ImportError:
        import sys as _sys
        _sys.path.append(args[0])
        from jobtrace.profiles import children as _children
    _children.start_spawned(*args[1:])
except Exception:
    pass
"""


class _Bootstrap:
    """Pickles as a call of ``exec(_BOOTSTRAP, {"args": …})`` (its value in the child's
    dict is None): the child need not import anything of jobtrace's to unpickle it."""

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.args = args

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return exec, (_BOOTSTRAP, {"args": self.args})


def _bootstrap_entry() -> _Bootstrap | None:
    from jobtrace.profiles.sampler import current_session

    session = current_session()
    if session is None:
        return None
    from jobtrace import _config

    settings = _config.current()
    root = str(Path(__file__).resolve().parents[2])
    memory_mode = memory.current_mode() if (memory := sys.modules.get(_MEMORY)) else None
    return _Bootstrap(
        (root, session.job_id, session.hz, settings.url, str(settings.directory), memory_mode)
    )


def _patch(module: ModuleType) -> None:
    original = getattr(module, "get_preparation_data", None)
    if original is None or getattr(original, "__jobtrace_wrapped__", False):
        return

    @functools.wraps(original)
    def get_preparation_data(name: str) -> dict[str, Any]:
        data: dict[str, Any] = original(name)
        try:
            entry = _bootstrap_entry()
            if entry is not None:
                data[_KEY] = entry
        except Exception:  # the child starts anyway, unprofiled
            log.exception("jobtrace: cannot pass the profile on to a spawned child")
        return data

    get_preparation_data.__jobtrace_wrapped__ = True  # type: ignore[attr-defined]
    module.get_preparation_data = get_preparation_data  # type: ignore[attr-defined]


_installed = False


def install() -> None:
    """Patch ``multiprocessing.spawn`` now, or when it is imported."""
    global _installed
    if _installed:
        return
    _installed = True
    when_imported(_MODULE, _patch)


def start_spawned(
    job_id: str, hz: float, url: str, directory: str, memory_mode: str | None = None
) -> None:
    """In a spawned child, while it unpickles its preparation data: profile it (time, and
    memory when the parent's job tracks memory) for the parent's job, into the parent's
    store."""
    from jobtrace import _config
    from jobtrace.profiles import sampler

    # The parent may have chosen its store in code rather than the environment.
    os.environ.setdefault(_config.ENV_URL, url)
    os.environ.setdefault(_config.ENV_DIR, directory)
    # Now, on the main thread: the recorder installs its SIGTERM handler only from there.
    from jobtrace.recorder import get_recorder

    recorder = get_recorder()
    # The sink's modules too, before any thread of ours runs: the recorder's writer would
    # otherwise import them while this thread imports the program's (`__mp_main__`), and
    # two threads importing at once can deadlock on module locks.
    from jobtrace.sinks import sink_module

    importlib.import_module(sink_module(recorder.settings.url))
    if sampler.start(job_id, hz, child=True) is not None:
        import multiprocessing.util  # noqa: F401 - the exit hook registers with it

        sampler.register_child_exit()
    if memory_mode is not None:
        from jobtrace.profiles import memory

        memory.start_spawned(job_id, memory_mode)
