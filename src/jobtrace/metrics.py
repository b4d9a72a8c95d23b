"""``log_metric``: a metric point of the current job, Dioptra's way.

>>> import jobtrace
>>> with jobtrace.job("train", experiment="resnet"):          # doctest: +SKIP
...     for step in range(epochs):
...         jobtrace.log_metric("loss", loss, step=step)

(job, name, step) is a point's key: logging the same key again replaces the value, and a
job's "latest" value of a name is the one at its highest step. NaN and ±Inf are stored and
read back exactly.

The call appends one tuple to the recorder's buffer and returns; a background thread writes
it. The common case (a float, a known name, an int step, no timestamp) is a handful of type
tests; anything else goes through the slow checks. A mistake — no current job, a value
that is not a number, an empty or non-string name, a negative or non-integer step, a bad
timestamp — never raises into the caller: the point is dropped and counted, and the first
mistake of each kind is logged.
"""

from __future__ import annotations

import logging
import operator
import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from jobtrace import _config, limits, model
from jobtrace._clock import wall
from jobtrace.jobs import _current

__all__ = ["log_metric", "rejected_metrics"]

log = logging.getLogger("jobtrace.metrics")

#: Longest metric name (the store's column width; see :mod:`jobtrace.limits`).
MAX_NAME: Final = limits.TEXT_LIMITS[model.METRIC]["name"][0]
#: Largest step (the store's 64-bit column).
MAX_STEP: Final = limits.MAX_INT
# Timestamps a read can render (years 1 to 9999): a point stamped 1e300 used to be stored
# and then broke every read of its job's metrics.
_MIN_EPOCH: Final = limits.MIN_EPOCH
_MAX_EPOCH: Final = limits.MAX_EPOCH
# Names already checked, so a known name costs one set lookup. Bounded: a program that
# invents names without end only loses the shortcut, never memory.
_CHECKED_NAMES_LIMIT: Final = 100_000
_checked_names: set[str] = set()

_METRIC: Final = model.METRIC
# The context variable's own `get`, bound once: `current_job()` would add a call per point.
_current_job = _current.get
_rejected: dict[str, int] = {}
_rejected_lock = threading.Lock()


def log_metric(name: str, value: float, step: int = 0, timestamp: Any = None) -> None:
    """Record ``value`` of metric ``name`` at ``step`` for the current job.

    ``value``: a float, int, bool or numpy scalar (anything with ``__float__``), NaN and
    ±Inf included. ``step``: an integer from 0 to 2**63-1 (default 0). ``timestamp``:
    epoch seconds or an aware ``datetime`` between years 1 and 9999 (default: now). Outside
    a job, or with a bad argument, the point is dropped (logged once per kind of mistake,
    counted by :func:`rejected_metrics`)::

        jobtrace.log_metric("accuracy", 0.93, step=epoch)
    """
    job: Any = _current_job()
    if job is None:
        # A process started by a job (JOBTRACE_PARENT_JOB) logs into that job.
        job = _parent_job()
        if job is None:
            _reject("no_job", "jobtrace: log_metric(%r) outside a job; dropped", name)
            return
        if type(name) is str and name.strip():  # an empty name stays a mistake
            name = job.prefix + name
    recorder = job._recorder
    if recorder is None:  # recording is off: the job is inert, and so are its metrics
        return
    # A `try` costs nothing until something raises (Python 3.11), and the checks below
    # raise _Dropped only after logging and counting the mistake.
    try:
        if type(value) is not float:
            value = _as_float(value, name)
        if type(name) is not str or name not in _checked_names:
            name = _check_name(name)
        if type(step) is not int or step < 0 or step > MAX_STEP:
            step = _check_step(step, name)
        if timestamp is None:
            timestamp = wall()
        elif type(timestamp) is not float or not _MIN_EPOCH <= timestamp <= _MAX_EPOCH:
            timestamp = _check_timestamp(timestamp, name)  # NaN fails the test above too
    except _Dropped:
        return
    recorder.record((_METRIC, job.id, name, step, value, timestamp))


class _ParentJob:
    """The job of the process that started this one, as :func:`log_metric` needs it."""

    __slots__ = ("_recorder", "id", "prefix")

    def __init__(self, job_id: str, recorder: Any, prefix: str) -> None:
        self.id = job_id
        self._recorder = recorder
        self.prefix = prefix


# (job id, its stand-in): rebuilt when the parent job changes (a multiprocessing task run
# by jobtrace.tracing.in_process) or the settings do.
_parent: tuple[str, _ParentJob | None] | None = None


def _parent_job() -> _ParentJob | None:
    """The job this process was started by, or None (read from the tracing settings, which
    take it from ``JOBTRACE_PARENT_JOB`` once)."""
    global _parent
    from jobtrace.tracing.spans import _settings

    job_id = _settings.parent_job
    if job_id is None:
        return None
    cached = _parent
    if cached is not None and cached[0] == job_id:
        return cached[1]
    try:
        from jobtrace.recorder import get_recorder

        recorder = get_recorder() if _config.current().enabled else None
        stand_in = _ParentJob(job_id, recorder, _child_prefix())
    except Exception:  # bad settings in the environment: dropped, never raised
        log.warning("jobtrace: cannot log into the parent's job %s", job_id, exc_info=True)
        stand_in = None
    _parent = (job_id, stand_in)
    return stand_in


def _forget_parent(_settings: Any = None) -> None:
    global _parent
    _parent = None


def _child_prefix() -> str:
    """What this process puts before the names of the metrics it logs into the job of the
    process that started it, so that its points never replace the parent's at the same
    name and step: ``$JOBTRACE_METRIC_PREFIX`` when set (empty: no prefix),
    else the ``multiprocessing`` process name (``SpawnPoolWorker-2/``) in a multiprocessing
    child, else the program's name (``step/`` for ``python step.py``, also through
    ``sh -c``; the module's last part for ``python -m``)."""
    given = os.environ.get(_config.ENV_METRIC_PREFIX)
    if given is not None:
        return given
    mp = sys.modules.get("multiprocessing")
    if mp is not None and mp.parent_process() is not None:
        return f"{mp.current_process().name}/"
    program = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if program in ("", "-c", "-m"):
        return "child/"
    return f"{Path(program).stem}/"


def rejected_metrics() -> dict[str, int]:
    """How many points :func:`log_metric` dropped in this process, by kind of mistake
    (``no_job``, ``value``, ``name``, ``step``, ``timestamp``)."""
    with _rejected_lock:
        return dict(_rejected)


class _Dropped(Exception):
    """Raised by the checks below once a mistake is logged and counted."""


def _reject(kind: str, message: str, *args: Any) -> _Dropped:
    """Count and (the first time) log a mistake; returns the exception for the caller."""
    with _rejected_lock:
        count = _rejected[kind] = _rejected.get(kind, 0) + 1
    if count == 1:
        try:
            log.warning(message + " (further such mistakes are counted, not logged)", *args)
        except Exception:  # an argument whose repr fails must not reach the caller either
            log.warning("jobtrace: log_metric dropped a point (%s)", kind)
    return _Dropped(kind)


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _as_float(value: Any, name: Any) -> float:
    if isinstance(value, str | bytes | bytearray) or getattr(value, "shape", ()) != ():
        # float("1.5") would parse text, and a 1-element array converts too: neither is a
        # number the caller meant to log.
        result = None
    else:
        try:
            result = float(value)  # __float__, else __index__ (numpy scalars, Decimal, bool)
        except Exception:
            result = None
    if result is None:
        raise _reject(
            "value",
            "jobtrace: metric %s value %s is not a number (%s); dropped",
            _short(name),
            _short(value),
            type(value).__name__,
        )
    return result


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        what = "is empty" if isinstance(name, str) and not name.strip() else "is not a string"
        if isinstance(name, str) and len(name) > MAX_NAME:
            what = f"is longer than {MAX_NAME} characters"
        raise _reject("name", "jobtrace: metric name %s %s; dropped", _short(name), what)
    cleaned = model.clean_text(name)
    if cleaned == name and len(_checked_names) < _CHECKED_NAMES_LIMIT:
        _checked_names.add(name)
    return cleaned


def _check_step(step: Any, name: str) -> int:
    try:
        as_int = None if isinstance(step, bool | float) else operator.index(step)
    except TypeError:
        as_int = None
    if as_int is None or not 0 <= as_int <= MAX_STEP:
        raise _reject(
            "step",
            "jobtrace: metric %s step %s is not an integer from 0 to 2**63-1; dropped",
            _short(name),
            _short(step),
        )
    return as_int


def _check_timestamp(timestamp: Any, name: str) -> float:
    result: float | None = None
    if isinstance(timestamp, datetime):
        try:
            result = timestamp.timestamp()
        except (OverflowError, OSError, ValueError):
            result = None
    elif isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        try:
            result = float(timestamp)
        except OverflowError:
            result = None
    if result is None or limits.epoch_problem(result) is not None:
        raise _reject(
            "timestamp",
            "jobtrace: metric %s timestamp %s is not epoch seconds (or a datetime) between "
            "years 1 and 9999; dropped",
            _short(name),
            _short(timestamp),
        )
    return result


_config.on_configure(_forget_parent)
