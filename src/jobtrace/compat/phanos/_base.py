"""Names every part of the Phanos layer uses: constants, the record type, the logger mixin."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, Final, TypedDict, TypeVar

_log = logging.getLogger("jobtrace.compat.phanos")

TIME_PROFILER: Final = "time_profiler"
RESPONSE_SIZE: Final = "response_size"
EXTERNAL_PREFIX: Final = "ext://"
#: Buckets of the time histograms exported to /metrics, in milliseconds.
MS_BUCKETS: Final = (5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1e3, 2.5e3, 5e3,
                     7.5e3, 1e4, math.inf)  # fmt: skip

LoggerLike = logging.Logger | logging.LoggerAdapter  # type: ignore[type-arg]
F = TypeVar("F", bound=Callable[..., Any])


class Record(TypedDict):
    """One measurement as handlers receive it (Phanos's record)."""

    item: str
    metric: str
    units: str
    value: tuple[str, Any]
    job: str
    method: str
    labels: dict[str, Any] | None


class InvalidValueError(Exception):
    """A metric operation was given a value of the wrong kind (logged, never raised out)."""


class InstanceLoggerMixin:
    """Phanos's logging helpers: ``self.debug(...)`` and friends, prefixed with a name."""

    def __init__(
        self,
        *args: Any,
        logged_name: str | None = None,
        logger: LoggerLike | None = None,
        logger_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.logged_name = logged_name or type(self).__qualname__
        self.logger: LoggerLike = logger or logging.getLogger(logger_name or self.logged_name)
        super().__init__(*args, **kwargs)

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.logger.log(level, f"%s - {msg}", self.logged_name, *args, **kwargs)

    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)

    exception = error

    def critical(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.CRITICAL, msg, *args, **kwargs)

    fatal = critical
