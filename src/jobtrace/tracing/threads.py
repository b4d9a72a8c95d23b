"""Work handed to plain threads and thread pools joins the span that handed it over.

A new thread starts with an empty context, so a span it opens is the root of a new trace:
twenty workers started inside ``with Trace("batch")`` make twenty traces. After
:func:`propagate_threads` (``jobtrace run`` calls it), they make one trace with twenty
children, as opentelemetry-instrumentation-threading does for OpenTelemetry:

- ``threading.Thread.start`` takes a copy of the starting code's context (its span and its
  job), and the new thread runs in it — ``run`` overridden by a subclass included, since
  the copy is entered around the thread's whole bootstrap, not around ``Thread.run``;
- ``concurrent.futures.ThreadPoolExecutor.submit`` runs each task in a copy of the
  submitting code's context, as :class:`jobtrace.tracing.ThreadPoolExecutor` always did
  (it goes through the same function). A pool's worker threads themselves keep an empty
  context, so its ``initializer`` belongs to no request's trace.

Threads started before the call run as they would have. :func:`stop_propagating_threads`
restores the original methods (threads started meanwhile keep their copy). The pool is
patched when ``concurrent.futures.thread`` is imported, if it is not yet: a program that
never uses a pool never pays for importing it.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TypeVar

__all__ = [
    "propagate_threads",
    "propagating",
    "run_in_own_context",
    "stop_propagating_threads",
    "submit_in_context",
]

T = TypeVar("T")

#: Where a thread keeps the context it is to run in, until it starts running.
CONTEXT_ATTR = "_jobtrace_context"
_POOL_MODULE = "concurrent.futures.thread"

_lock = threading.Lock()
_local = threading.local()  # .submitting: inside a pool's submit on this thread
_installed = False
# The functions ours replaced, kept after an uninstall: if someone patched over ours
# meanwhile, theirs still calls ours, which then passes straight through to these.
_ORIGINAL_START = threading.Thread.start
_ORIGINAL_BOOTSTRAP = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]
_saved: dict[str, Any] = {"start": _ORIGINAL_START, "bootstrap": _ORIGINAL_BOOTSTRAP}


def run_in_own_context(thread: threading.Thread, run: Callable[[], T]) -> T:
    """``run()`` in the context ``thread`` was given (once: the context is taken, so a
    nested call, or a second run, runs as it is), else as it is."""
    context = thread.__dict__.pop(CONTEXT_ATTR, None)
    if context is None:
        return run()
    result: T = context.run(run)
    return result


def submit_in_context(
    submit: Callable[..., Any], executor: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> Any:
    """``submit(executor, fn, *args, **kwargs)`` with ``fn`` run in a copy of the current
    context; threads the pool starts meanwhile are its own, and get no copy."""
    context = contextvars.copy_context()
    outer = getattr(_local, "submitting", False)
    _local.submitting = True
    try:
        return submit(executor, context.run, fn, *args, **kwargs)
    finally:
        _local.submitting = outer


def pool_submit() -> Callable[..., Any]:
    """``concurrent.futures.ThreadPoolExecutor.submit`` as it was before any patch of ours."""
    saved = _saved.get("submit")
    if saved is not None:
        return saved  # type: ignore[no-any-return]
    import concurrent.futures

    return concurrent.futures.ThreadPoolExecutor.submit


def _start(self: threading.Thread) -> None:
    if _installed and not getattr(_local, "submitting", False):
        # Never in the way: whatever goes wrong here, the thread starts as it would have.
        with contextlib.suppress(Exception):
            self.__dict__.setdefault(CONTEXT_ATTR, contextvars.copy_context())
    _saved["start"](self)


def _bootstrap_inner(self: threading.Thread) -> None:
    bootstrap = _saved["bootstrap"]
    run_in_own_context(self, lambda: bootstrap(self))


def _submit(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    if not _installed:
        return pool_submit()(self, fn, *args, **kwargs)
    return submit_in_context(pool_submit(), self, fn, *args, **kwargs)


def _pool_class(module: ModuleType) -> Any:
    return module.ThreadPoolExecutor


_patched_once: set[str] = set()


def _replace(owner: type, name: str, key: str, ours: Callable[..., Any]) -> None:
    """Put ``ours`` in place of ``owner.name``, keeping what was there in ``_saved``."""
    current = getattr(owner, name)
    if current is ours:
        return
    if key in _patched_once and current is not _saved.get(key):
        # Someone patched over ours, and we could not restore: theirs still calls ours,
        # which starts working again when installed. Saving theirs would make a loop.
        return
    _saved[key] = current
    setattr(owner, name, ours)
    _patched_once.add(key)


def _restore(owner: type, name: str, key: str, ours: Callable[..., Any]) -> None:
    if owner.__dict__.get(name) is ours and key in _saved:
        setattr(owner, name, _saved[key])


def _patch_pool(module: ModuleType) -> None:
    with _lock:
        if _installed:  # not uninstalled meanwhile
            _replace(_pool_class(module), "submit", "submit", _submit)


class _PatchPoolOnImport:
    """Patches the thread pool right after ``concurrent.futures.thread`` is first imported
    (a ``sys.meta_path`` finder; importlib.abc's base class would cost an import)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _POOL_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        loader = None if spec is None else spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return None  # frozen or unusual: the standard import goes on, unpatched
        exec_module = loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            _remove_hook()
            _patch_pool(module)

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


_hook = _PatchPoolOnImport()


def _remove_hook() -> None:
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)


def propagate_threads() -> None:
    """From now on, threads started and thread-pool tasks submitted run under the span
    (and job) current where they were started or submitted. Safe to call again::

        import jobtrace.tracing

        jobtrace.tracing.propagate_threads()
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        _replace(threading.Thread, "start", "start", _start)
        _replace(threading.Thread, "_bootstrap_inner", "bootstrap", _bootstrap_inner)
        pool_module = sys.modules.get(_POOL_MODULE)
        if pool_module is None:
            sys.meta_path.insert(0, _hook)
    if pool_module is not None:
        _patch_pool(pool_module)


def stop_propagating_threads() -> None:
    """Undo :func:`propagate_threads`: the original methods come back (where someone
    patched over ours, ours stay in their chain and pass straight through)."""
    global _installed
    with _lock:
        _installed = False
        _remove_hook()
        _restore(threading.Thread, "start", "start", _start)
        _restore(threading.Thread, "_bootstrap_inner", "bootstrap", _bootstrap_inner)
        pool_module = sys.modules.get(_POOL_MODULE)
        if pool_module is not None:
            _restore(_pool_class(pool_module), "submit", "submit", _submit)


def propagating() -> bool:
    """Whether :func:`propagate_threads` is in effect."""
    return _installed
