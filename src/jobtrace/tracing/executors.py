"""``concurrent.futures`` executors that carry the trace context to the work submitted.

Kept apart from :mod:`jobtrace.tracing.propagation` because importing
``concurrent.futures.process`` loads ``multiprocessing`` (~15 ms).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from jobtrace.tracing.propagation import _InProcess, carrier
from jobtrace.tracing.threads import pool_submit, submit_in_context

T = TypeVar("T")


class ThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs each submitted callable under the span current at ``submit`` time (what every
    ``concurrent.futures.ThreadPoolExecutor`` does after
    :func:`~jobtrace.tracing.propagate_threads`, through the same function)."""

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        # The base class's own submit: under propagate_threads, not wrapped a second time.
        future: concurrent.futures.Future[T] = submit_in_context(
            pool_submit(), self, fn, *args, **kwargs
        )
        return future


class ProcessPoolExecutor(concurrent.futures.ProcessPoolExecutor):
    """Runs each submitted callable, in its worker process, under the submitting span."""

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        return super().submit(_InProcess(fn, carrier()), *args, **kwargs)
