"""``concurrent.futures`` executors that carry the trace context to the work submitted.

Kept apart from :mod:`jobtrace.tracing.propagation` because importing
``concurrent.futures.process`` loads ``multiprocessing`` (~15 ms).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
from collections.abc import Callable
from typing import Any, TypeVar

from jobtrace.tracing.propagation import _InProcess, carrier

T = TypeVar("T")


class ThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs each submitted callable under the span current at ``submit`` time."""

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


class ProcessPoolExecutor(concurrent.futures.ProcessPoolExecutor):
    """Runs each submitted callable, in its worker process, under the submitting span."""

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        return super().submit(_InProcess(fn, carrier()), *args, **kwargs)
