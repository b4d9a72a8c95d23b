"""The wrappers ``@profile`` puts around functions: the per-call hot path.

A profiled call reads the profiler's state once, finds its context string (a dict lookup
keyed by the parent's context, cached per function), sets the context variable, times the
call and observes the duration into a histogram cell cached per context. Everything else —
hooks, the ``error_raised`` label, response sizes, records for handlers — is on a slow
path the common case skips with one test. The sync and async wrappers are the same code;
only the call differs.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobtrace.instruments.calls import _frame, _hook_failed, response_size
from jobtrace.model import error_type_name

if TYPE_CHECKING:
    from jobtrace.instruments.calls import Profiler, _State
    from jobtrace.instruments.handlers import RawRecord

log = logging.getLogger("jobtrace.instruments")

_perf = time.perf_counter


class _Site:
    """What one decorated function caches: contexts by parent context, and the time
    histogram's cell by context (for one state generation of the profiler)."""

    __slots__ = ("cells", "children", "func", "gen", "name", "root")

    def __init__(self, func: Callable[..., Any], owner: str, name: str) -> None:
        self.func = func
        self.name = name
        self.root = f"{owner}:{name}"
        self.children: dict[str, str] = {}
        self.cells: dict[Any, Any] = {}
        self.gen = -1

    def child_context(self, parent: str) -> str:
        context = self.children.get(parent)
        if context is None:
            context = self.children[parent] = f"{parent}.{self.name}"
        return context

    def time_cell(self, st: _State, key: Any) -> Any:
        """The time histogram's cell for ``key`` (the context, or (context, error flag)),
        or None when the time profiler is deleted."""
        if st.gen != self.gen:
            self.cells = {}
            self.gen = st.gen
        cell = self.cells.get(key)
        if cell is None:
            if st.time is None:
                return None
            cell = self.cells[key] = (
                st.time.labels(*key) if type(key) is tuple else st.time.labels(key)
            )
        return cell


def _before(
    st: _State, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], root: bool
) -> None:
    hooks: tuple[tuple[Any, str, bool], ...] = (
        (st.before_root, "before_root_func", root),
        (st.before, "before_func", True),
    )
    for hook, name, applies in hooks:
        if hook is not None and applies:
            try:
                hook(func, args, kwargs)
            except Exception:
                _hook_failed(name, hook)


def _finish(
    prof: Profiler,
    st: _State,
    site: _Site,
    context: str,
    elapsed: float,
    result: Any,
    error: BaseException | None,
    records: list[RawRecord] | None,
    root: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Everything after a call except the common case's one observation. Never raises."""
    try:
        if error is not None or st.error_label:
            key = (context, "True" if error is not None else "False") if st.error_label else context
            cell = site.time_cell(st, key)
            if cell is not None:
                cell.observe(elapsed)
        if records is not None:
            error_type = None if error is None else error_type_name(error)
            records.append(("t", context, elapsed, error_type))
        if root and error is None and st.size is not None:
            size = response_size(result)
            st.size.labels(context).observe(size)
            if records is not None:
                records.append(("s", context, size, None))
    except Exception:  # pragma: no cover - a bug here must not reach the caller
        log.exception("jobtrace: recording a profiled call failed")
    if st.hooks:
        outcome = result if error is None else error
        after: tuple[tuple[Any, str, bool], ...] = (
            (st.after, "after_func", True),
            (st.after_root, "after_root_func", root),
        )
        for hook, name, applies in after:
            if hook is not None and applies:
                try:
                    hook(outcome, args, kwargs)
                except Exception:
                    _hook_failed(name, hook)
    if root:
        if records and st.handlers:
            prof.dispatcher.submit(tuple(records))
        for metric in st.metrics:
            try:
                metric.cleanup()
            except Exception:
                _hook_failed(f"{metric.name}.cleanup", metric)


def wrap(prof: Profiler, func: Callable[..., Any], owner: str, name: str) -> Callable[..., Any]:
    import inspect

    site = _Site(func, owner, name)
    get, set_, reset = _frame.get, _frame.set, _frame.reset
    perf = _perf

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def profiled_async(*args: Any, **kwargs: Any) -> Any:
            st = prof._state
            # Inactive: not configured yet (the first call sets up the defaults) or turned off.
            if not st.active and (not st.pending or not (st := prof._first_call()).active):
                return await func(*args, **kwargs)
            parent = get()
            if parent is None:
                context = site.root
                records: list[RawRecord] | None = [] if st.handlers or st.metrics else None
            else:
                context = site.child_context(parent[0])
                records = parent[1]
            token = set_((context, records))
            try:
                if st.hooks:
                    _before(st, func, args, kwargs, parent is None)
                t0 = perf()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    _finish(prof, st, site, context, perf() - t0, None, exc, records,
                            parent is None, args, kwargs)  # fmt: skip
                    raise
                elapsed = perf() - t0
                if not st.error_label:
                    cell = site.time_cell(st, context)
                    if cell is not None:
                        cell.observe(elapsed)
                if st.hooks or records is not None or st.error_label or st.size is not None:
                    _finish(prof, st, site, context, elapsed, result, None, records,
                            parent is None, args, kwargs)  # fmt: skip
                return result
            finally:
                reset(token)

        return profiled_async

    @functools.wraps(func)
    def profiled(*args: Any, **kwargs: Any) -> Any:
        st = prof._state
        # Inactive: not configured yet (the first call sets up the defaults) or turned off.
        if not st.active and (not st.pending or not (st := prof._first_call()).active):
            return func(*args, **kwargs)
        parent = get()
        if parent is None:
            context = site.root
            records: list[RawRecord] | None = [] if st.handlers or st.metrics else None
        else:
            context = site.child_context(parent[0])
            records = parent[1]
        token = set_((context, records))
        try:
            if st.hooks:
                _before(st, func, args, kwargs, parent is None)
            t0 = perf()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                _finish(prof, st, site, context, perf() - t0, None, exc, records,
                        parent is None, args, kwargs)  # fmt: skip
                raise
            elapsed = perf() - t0
            if not st.error_label:
                # The common case: one cached cell, one lock-free observation.
                cell = site.time_cell(st, context)
                if cell is not None:
                    cell.observe(elapsed)
            if st.hooks or records is not None or st.error_label or st.size is not None:
                _finish(prof, st, site, context, elapsed, result, None, records,
                        parent is None, args, kwargs)  # fmt: skip
            return result
        finally:
            reset(token)

    return profiled
