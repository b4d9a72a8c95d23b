"""OSProfiler's ``osprofiler.opts``: the ``[profiler]`` options for ``oslo.config``.

Needs ``oslo.config`` (``pip install 'jobtrace[oslo]'``); nothing else in the layer does.

>>> from oslo_config import cfg
>>> from jobtrace.compat.osprofiler import opts
>>> conf = cfg.ConfigOpts()
>>> opts.set_defaults(conf, enabled=True, hmac_keys="secret")
>>> conf([])
>>> opts.is_trace_enabled(conf), conf.profiler.hmac_keys, conf.profiler.mixed_fleet
(True, 'secret', False)

The options are OSProfiler's that jobtrace uses: ``enabled``, ``trace_sqlalchemy``,
``trace_requests``, ``hmac_keys``, ``connection_string``, plus jobtrace's ``mixed_fleet``.
OSProfiler's backend-specific ones (Elasticsearch, Redis sentinel, Jaeger, OTLP) are not
registered: jobtrace stores points itself.

Differs on purpose: ``hmac_keys`` has no default (OSProfiler's is ``SECRET_KEY``, a key
everyone knows); with none set, no trace header is trusted. ``connection_string`` defaults
to none, meaning jobtrace's configured store (``JOBTRACE_URL``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "disable_web_trace",
    "enable_web_trace",
    "is_db_trace_enabled",
    "is_trace_enabled",
    "list_opts",
    "set_defaults",
]

GROUP = "profiler"


def _cfg() -> Any:
    try:
        from oslo_config import cfg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "jobtrace.compat.osprofiler.opts needs oslo.config: pip install 'jobtrace[oslo]'"
        ) from exc
    return cfg


def _options() -> list[Any]:
    cfg = _cfg()
    return [
        cfg.BoolOpt(
            "enabled",
            default=False,
            deprecated_name="profiler_enabled",
            help="Trace requests that carry a trace header signed with one of hmac_keys.",
        ),
        cfg.BoolOpt("trace_sqlalchemy", default=False, help="Trace every SQL statement."),
        cfg.BoolOpt("trace_requests", default=False, help="Trace outgoing requests calls."),
        cfg.StrOpt(
            "hmac_keys",
            default=None,
            secret=True,
            help="Comma-separated secret keys that sign trace headers (no default).",
        ),
        cfg.StrOpt(
            "connection_string",
            default=None,
            help="jobtrace store URL for the points (default: jobtrace's JOBTRACE_URL).",
        ),
        cfg.BoolOpt(
            "mixed_fleet",
            default=False,
            help="Also accept and emit OSProfiler's own headers (HMAC-SHA1, no expiry) while "
            "services migrate; weaker, turn off afterwards.",
        ),
    ]


def set_defaults(
    conf: Any,
    enabled: bool | None = None,
    trace_sqlalchemy: bool | None = None,
    hmac_keys: str | None = None,
    connection_string: str | None = None,
    trace_requests: bool | None = None,
    mixed_fleet: bool | None = None,
    **unused: Any,
) -> None:
    """Register the ``[profiler]`` options on ``conf`` and set the defaults given.
    OSProfiler's backend-specific arguments are accepted and ignored."""
    cfg = _cfg()
    conf.register_opts(_options(), group=cfg.OptGroup(GROUP, title="OSProfiler options"))
    given = {
        "enabled": enabled,
        "trace_sqlalchemy": trace_sqlalchemy,
        "hmac_keys": hmac_keys,
        "connection_string": connection_string,
        "trace_requests": trace_requests,
        "mixed_fleet": mixed_fleet,
    }
    for name, value in given.items():
        if value is not None:
            conf.set_default(name, value, group=GROUP)


def is_trace_enabled(conf: Any = None) -> bool:
    """``[profiler] enabled`` of ``conf`` (default: oslo.config's global ``CONF``)."""
    conf = _cfg().CONF if conf is None else conf
    return bool(conf.profiler.enabled)


def is_db_trace_enabled(conf: Any = None) -> bool:
    """Whether SQL statements are traced: ``enabled`` and ``trace_sqlalchemy``."""
    conf = _cfg().CONF if conf is None else conf
    return bool(conf.profiler.enabled and conf.profiler.trace_sqlalchemy)


def enable_web_trace(conf: Any = None) -> None:
    """Turn the WSGI middleware on with ``hmac_keys``, if ``enabled``."""
    from jobtrace.compat.osprofiler import web

    conf = _cfg().CONF if conf is None else conf
    if conf.profiler.enabled:
        web.enable(conf.profiler.hmac_keys)


def disable_web_trace(conf: Any = None) -> None:
    """Turn the WSGI middleware off, if ``enabled``."""
    from jobtrace.compat.osprofiler import web

    conf = _cfg().CONF if conf is None else conf
    if conf.profiler.enabled:
        web.disable()


def list_opts() -> list[tuple[str, list[Any]]]:
    """The options, for ``oslo-config-generator``."""
    return [(GROUP, _options())]
