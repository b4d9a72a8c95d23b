"""OSProfiler's ``osprofiler.web`` names, backed by jobtrace: switch by changing one import.

>>> from jobtrace import profiler, web        # was: from osprofiler import profiler, web
>>> app = web.WsgiMiddleware(app, hmac_keys="new-secret,old-secret", enabled=True)  # doctest: +SKIP
>>> profiler.init(hmac_key="new-secret")                                            # doctest: +SKIP
>>> requests.get(url, headers=web.get_trace_id_headers())                           # doctest: +SKIP

As in OSProfiler: ``hmac_keys`` is a comma-separated string (or a list) and any of the
keys verifies; a request is traced only when it carries a valid signed header, and then
``profiler.get()`` works inside the app, so its own calls carry the trace further;
``enable(hmac_keys)`` and ``disable()`` override every middleware's settings.

Unlike OSProfiler, the signature is HMAC-SHA256 and the header expires (see
:mod:`jobtrace.tracing.signing`), and a W3C ``traceparent`` travels alongside. Both ends
must therefore be jobtrace: an OSProfiler header (SHA-1, no expiry) is refused and
logged once. For ASGI, the ``requests``/``httpx`` helpers, a new trace for untrusted
requests and the other choices, use :mod:`jobtrace.tracing.web`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from jobtrace.compat.osprofiler import profiler
from jobtrace.tracing.signing import X_TRACE_HMAC, X_TRACE_INFO, TraceSigner
from jobtrace.tracing.spans import RemoteParent
from jobtrace.tracing.web import WSGIApp, WSGIMiddleware, headers

__all__ = [
    "X_TRACE_HMAC",
    "X_TRACE_INFO",
    "WsgiMiddleware",
    "disable",
    "enable",
    "get_trace_id_headers",
]


@functools.lru_cache(maxsize=8)
def _signer(key: str | bytes) -> TraceSigner:
    return TraceSigner(key)


def get_trace_id_headers() -> dict[str, str]:
    """The current span's signed headers, with the key given to ``profiler.init``; empty
    when there is no profiler or no key (nothing is sent unsigned here)."""
    current = profiler.get()
    if current is None or not current.hmac_key:
        return {}
    return headers(_signer(current.hmac_key))


def _split(hmac_keys: str | Sequence[str] | None) -> tuple[str, ...]:
    if not hmac_keys:
        return ()
    items = hmac_keys.split(",") if isinstance(hmac_keys, str) else hmac_keys
    return tuple(key.strip() for key in items if key.strip())


_ENABLED: bool | None = None
_HMAC_KEYS: tuple[str, ...] = ()


def enable(hmac_keys: str | Sequence[str] | None = None) -> None:
    """Turn every :class:`WsgiMiddleware` on, with these keys (OSProfiler's ``enable``)."""
    global _ENABLED, _HMAC_KEYS
    _ENABLED = True
    _HMAC_KEYS = _split(hmac_keys)


def disable() -> None:
    """Turn every :class:`WsgiMiddleware` off: requests go straight to the app."""
    global _ENABLED
    _ENABLED = False


class _JoiningMiddleware(WSGIMiddleware):
    """Traces only requests with a valid signed header, with ``profiler.get()`` set."""

    def __init__(self, app: WSGIApp, keys: tuple[str, ...]) -> None:
        super().__init__(app, keys or None, new_traces=False)
        self.keys = keys
        self.key = keys[0] if keys else None

    def _adopt(self, parent: RemoteParent | None) -> None:
        super()._adopt(parent)
        if parent is not None:
            profiler.init(self.key)  # the app's own calls sign with the newest key


class WsgiMiddleware:
    """OSProfiler's ``WsgiMiddleware(application, hmac_keys=None, enabled=False)``."""

    def __init__(
        self,
        application: WSGIApp,
        hmac_keys: str | Sequence[str] | None = None,
        enabled: bool = False,
        **kwargs: Any,  # paste deploy's other settings, ignored as OSProfiler does
    ) -> None:
        self.application = application
        self.name = "wsgi"
        self.enabled = enabled
        self.hmac_keys = _split(hmac_keys)
        self._own = _JoiningMiddleware(application, self.hmac_keys)
        self._global: _JoiningMiddleware | None = None

    @classmethod
    def factory(
        cls, global_conf: dict[str, Any] | None, **local_conf: Any
    ) -> Callable[[WSGIApp], WsgiMiddleware]:
        """A paste deploy filter factory."""

        def make_filter(app: WSGIApp) -> WsgiMiddleware:
            return cls(app, **local_conf)

        return make_filter

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not (self.enabled if _ENABLED is None else _ENABLED):
            return self.application(environ, start_response)
        if not _HMAC_KEYS:
            return self._own(environ, start_response)
        # Keys given to enable() win, as in OSProfiler; the middleware for them is made
        # once per set of keys, not per request.
        inner = self._global
        if inner is None or inner.keys != _HMAC_KEYS:
            inner = self._global = _JoiningMiddleware(self.application, _HMAC_KEYS)
        return inner(environ, start_response)
