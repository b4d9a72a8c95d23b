"""OSProfiler's ``osprofiler.notifier``: a user callable that sees every trace point.

>>> from jobtrace.compat.osprofiler import notifier, profiler   # was: from osprofiler import …
>>> seen = []
>>> notifier.set(seen.append)
>>> _ = profiler.init("key", base_id="job-1")
>>> with profiler.Trace("step"):
...     pass
>>> [message["name"] for message in seen]
['step-start', 'step-stop']
>>> profiler.clean(); notifier.set(notifier._noop_notifier)

As in OSProfiler, ``set(callable)`` makes ``callable`` receive one dict per ``-start`` and
``-stop`` message (``name``, ``base_id``, ``trace_id``, ``parent_id``, ``timestamp`` and
``info``), ``get()`` returns it and ``notify(info)`` calls it. The default does nothing.

What differs: jobtrace records every point itself, through its recorder, into the store
``JOBTRACE_URL`` names; a notifier is an extra listener, not the way points are stored.
``create(connection_string)`` therefore accepts jobtrace's store URLs (``sqlite://``,
``postgresql://``, ``http(s)://``, ``file://``, ``memory://``) and points jobtrace at that
store (``jobtrace.configure(url=…)``); OSProfiler's own backends (``messaging://``,
``redis://``, ``mongodb://``, ``elasticsearch://``, ``jaeger://``, ``otlp://``…) have no
jobtrace driver, so points stay in jobtrace's configured store and one warning says so. A
notifier that raises is logged once and never breaks the traced call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["clear_notifier_cache", "create", "get", "notify", "set"]

log = logging.getLogger("jobtrace.compat.osprofiler")

Notifier = Callable[..., None]


def _noop_notifier(info: dict[str, Any], context: Any = None) -> None:
    """The default notifier: does nothing (jobtrace's recorder stores the points)."""


_notifier: Notifier = _noop_notifier
_cache: dict[str, Notifier] = {}
_warned: list[bool] = [False]


def notify(info: dict[str, Any]) -> None:
    """Hand one message to the notifier; a failing notifier is logged once, not raised."""
    try:
        _notifier(info)
    except Exception as exc:  # instrumentation must not break the host program
        if not _warned[0]:
            _warned[0] = True
            log.warning("jobtrace: the OSProfiler notifier %r failed (%r)", _notifier, exc)


def get() -> Notifier:
    """The notifier callable in use."""
    return _notifier


def set(notifier: Notifier) -> None:
    """Make ``notifier`` (a callable taking one dict) receive every start and stop message."""
    global _notifier
    _notifier = notifier


def create(connection_string: str, *args: Any, **kwargs: Any) -> Notifier:
    """A notifier for ``connection_string`` (cached per string).

    A jobtrace store URL becomes the store jobtrace records into, and the returned notifier
    does nothing more (the points are already stored); any other scheme, or a failure, is
    logged and gives the do-nothing notifier, as OSProfiler does for a driver that fails.
    OSProfiler's ``project`` and ``service`` (positional after the string, as its drivers
    take them, or by keyword) name the process's service in the store as OSProfiler's OTLP
    driver names it, ``project-service``, unless ``jobtrace.configure(service=...)`` or
    ``JOBTRACE_SERVICE`` named it; the other ``args`` and ``kwargs`` (``host``, ``conf``…)
    are accepted and unused.
    """
    project = kwargs.get("project", args[0] if args else None)
    service = kwargs.get("service", args[1] if len(args) > 1 else None)
    named = "-".join(str(part) for part in (project, service) if part)
    if named:
        from jobtrace.tracing.spans import set_default_service

        set_default_service(named)
    if connection_string not in _cache:
        _cache[connection_string] = _create(connection_string)
    return _cache[connection_string]


def _create(connection_string: str) -> Notifier:
    from jobtrace.sinks import known_schemes

    try:
        scheme = str(connection_string).split("://", 1)[0].lower()
        if "://" not in str(connection_string) or scheme not in known_schemes():
            log.warning(
                "jobtrace: %r is an OSProfiler backend jobtrace has no driver for; trace "
                "points are recorded in jobtrace's configured store instead (JOBTRACE_URL)",
                scheme + "://",
            )
            return _noop_notifier
        import jobtrace

        jobtrace.configure(url=connection_string)
        log.info("jobtrace: OSProfiler points are recorded in %s", scheme + "://…")
    except Exception:
        log.exception(
            "jobtrace: could not use connection string %r for OSProfiler points",
            str(connection_string).split("://", 1)[0] + "://",
        )
    return _noop_notifier


def clear_notifier_cache() -> None:
    """Forget the notifiers :func:`create` made."""
    _cache.clear()
