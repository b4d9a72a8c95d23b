"""OSProfiler's ``osprofiler.initializer``: set the layer up from a service's configuration.

>>> from types import SimpleNamespace
>>> from jobtrace.compat.osprofiler import initializer, web
>>> conf = SimpleNamespace(profiler=SimpleNamespace(
...     enabled=True, hmac_keys="k1,k2", connection_string="memory://svc",
...     trace_sqlalchemy=True, trace_requests=False))
>>> initializer.init_from_conf(conf, context=None, project="shop", service="api", host="h1")
>>> web._HMAC_KEYS
['k1', 'k2']
>>> web._ENABLED = web._HMAC_KEYS = None

``init_from_conf(conf, context, project, service, host, **kwargs)`` reads the ``[profiler]``
options (``conf.profiler.*``; an ``oslo.config`` ``ConfigOpts`` with
:mod:`~jobtrace.compat.osprofiler.opts` registered, or any object with those attributes):

- ``connection_string``: where points go, through
  :func:`~jobtrace.compat.osprofiler.notifier.create` (a jobtrace store URL becomes the
  store jobtrace records into; OSProfiler's own backends keep jobtrace's configured store);
- ``hmac_keys``: the keys every :class:`~jobtrace.compat.osprofiler.web.WsgiMiddleware`
  verifies with (and the middleware is enabled, as in OSProfiler);
- ``trace_requests``: trace outgoing ``requests`` calls;
- ``trace_sqlalchemy``: whether :func:`~jobtrace.compat.osprofiler.sqlalchemy.add_tracing`
  adds anything;
- ``enabled``: when it is ``False``, the middleware is turned off instead;
- ``mixed_fleet`` (jobtrace's own, default off): accept and emit OSProfiler's SHA-1 headers
  (see :func:`~jobtrace.compat.osprofiler.web.set_mixed_fleet`).
"""

from __future__ import annotations

from typing import Any

from jobtrace.compat.osprofiler import notifier, requests, sqlalchemy, web

__all__ = ["init_from_conf"]


def init_from_conf(
    conf: Any, context: Any, project: str, service: str, host: str, **kwargs: Any
) -> None:
    """Set up the notifier, the middleware and the integrations from ``conf.profiler``."""
    options = conf.profiler
    created = notifier.create(
        options.connection_string,
        context=context,
        project=project,
        service=service,
        host=host,
        conf=conf,
        **kwargs,
    )
    notifier.set(created)
    mixed = getattr(options, "mixed_fleet", None)
    if isinstance(mixed, bool):
        web.set_mixed_fleet(mixed)
    if getattr(options, "enabled", True) is False:
        web.disable()
        return
    web.enable(options.hmac_keys)
    trace_sqlalchemy = getattr(options, "trace_sqlalchemy", None)
    if trace_sqlalchemy is not None:
        (sqlalchemy.enable if trace_sqlalchemy else sqlalchemy.disable)()
    if getattr(options, "trace_requests", False):
        requests.enable()
