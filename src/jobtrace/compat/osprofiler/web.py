"""OSProfiler's ``osprofiler.web``, backed by jobtrace: switch by changing one import.

>>> from jobtrace import profiler, web        # was: from osprofiler import profiler, web
>>> app = web.WsgiMiddleware(app, hmac_keys="new-secret,old-secret", enabled=True)  # doctest: +SKIP
>>> profiler.init(hmac_key="new-secret")                                            # doctest: +SKIP
>>> requests.get(url, headers=web.get_trace_id_headers())                           # doctest: +SKIP

As in OSProfiler: ``hmac_keys`` is a comma-separated string or a list (kept as a list), any
of the keys verifies; a request is traced only when it carries a valid signed header, and
then the middleware calls ``profiler.init(hmac_key=<the key that matched>, base_id=…,
parent_id=…)``, wraps the app in a point named ``wsgi`` with ``info={"request": {"path",
"query", "method", "scheme"}}`` and cleans the profiler afterwards; ``enable(hmac_keys)``
and ``disable()`` override every middleware's settings. ``get_trace_id_headers()`` signs the
current point (or, right after ``init``, the new trace) with the profiler's key. The
middleware is called as WSGI (``environ, start_response``; the point then lasts until the
server closes the response) or, like OSProfiler's ``webob.dec.wsgify``, with one WebOb
``Request`` (it returns ``request.get_response(app)``).

Differs on purpose: jobtrace's headers are signed with HMAC-SHA256 and expire (see
:mod:`jobtrace.tracing.signing`); OSProfiler's are HMAC-SHA1 and valid forever, so a
captured header can be replayed to make a service trace requests. By default an OSProfiler
header is refused (logged once). During a migration, :func:`set_mixed_fleet` (or
``JOBTRACE_OSPROFILER_MIXED_FLEET=1``) makes this layer accept OSProfiler's headers as well
and emit them, so OSProfiler and jobtrace services trace one request together. That is
OSProfiler's (weaker) security; turn it off once the fleet is switched.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import functools
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote

from jobtrace.compat.osprofiler import profiler
from jobtrace.tracing.signing import X_TRACE_HMAC, X_TRACE_INFO, TraceHeaderError, TraceSigner
from jobtrace.tracing.spans import current_span_var
from jobtrace.tracing.web import ClosingBody

__all__ = [
    "ENV_MIXED_FLEET",
    "X_TRACE_HMAC",
    "X_TRACE_INFO",
    "WsgiMiddleware",
    "disable",
    "enable",
    "get_trace_id_headers",
    "mixed_fleet",
    "set_mixed_fleet",
]

log = logging.getLogger("jobtrace.compat.osprofiler")

#: ``1`` turns the mixed-fleet mode on for the whole process (see :func:`set_mixed_fleet`).
ENV_MIXED_FLEET = "JOBTRACE_OSPROFILER_MIXED_FLEET"

_MIXED_FLEET: bool | None = None  # None: as the environment says


def set_mixed_fleet(enabled: bool | None) -> None:
    """Accept OSProfiler's own signed headers (HMAC-SHA1, no expiry) besides jobtrace's,
    and emit them from :func:`get_trace_id_headers`, so services still on OSProfiler and
    services on jobtrace trace one request together. Off by default: anyone who captures
    such a header can replay it forever. ``None`` goes back to the environment variable
    ``JOBTRACE_OSPROFILER_MIXED_FLEET``."""
    global _MIXED_FLEET
    _MIXED_FLEET = enabled


def mixed_fleet() -> bool:
    """Whether the mixed-fleet mode is on."""
    if _MIXED_FLEET is not None:
        return _MIXED_FLEET
    return os.environ.get(ENV_MIXED_FLEET, "").strip().lower() in {"1", "true", "yes", "on"}


# -- OSProfiler's wire format (HMAC-SHA1 over base64 JSON, no expiry) ---------------------------


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _sha1_mac(data: str, key: str | bytes) -> str:
    raw_key = key.encode("utf-8") if isinstance(key, str) else key
    return hmac.new(raw_key, data.encode("latin-1"), hashlib.sha1).hexdigest()


def _osprofiler_pack(base_id: str, parent_id: str, key: str | bytes) -> tuple[str, str]:
    payload = json.dumps({"base_id": base_id, "parent_id": parent_id})
    data = base64.urlsafe_b64encode(payload.encode("utf-8")).decode("ascii")
    return data, _sha1_mac(data, key)


def _osprofiler_unpack(data: str, mac: str, keys: Sequence[str]) -> _Caller | None:
    for key in keys:
        if hmac.compare_digest(mac, _sha1_mac(data, key)):
            break
    else:
        return _refuse("bad_signature")
    try:
        fields = json.loads(base64.urlsafe_b64decode(data.encode("latin-1")))
    except (binascii.Error, ValueError):
        return _refuse("malformed")
    # OSProfiler's rule: base_id required, parent_id optional, nothing else.
    if not isinstance(fields, dict) or "base_id" not in fields:
        return _refuse("malformed")
    if set(fields) - {"base_id", "parent_id"}:
        return _refuse("malformed")
    base_id, parent_id = fields["base_id"], fields.get("parent_id")
    if not isinstance(base_id, str) or not (parent_id is None or isinstance(parent_id, str)):
        return _refuse("malformed")
    return _Caller(key, base_id, parent_id)


# -- headers out -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _signer(key: str | bytes) -> TraceSigner:
    return TraceSigner(key)


def get_trace_id_headers() -> dict[str, str]:
    """``X-Trace-Info`` and ``X-Trace-HMAC`` for the current point, signed with the key
    given to ``profiler.init``; empty without a profiler or a key (nothing goes unsigned).
    Right after ``init`` they name the new trace, so the next service joins it."""
    current = profiler.get()
    if not current or not (current.hmac_key or current._signer):
        return {}
    try:
        base_id, parent_id, trace_id, span_id = current._wire_ids()
        if not current.hmac_key:  # a request joined by jobtrace's middleware: its keys
            info, mac = current._signer.sign(trace_id, span_id, True)
        elif mixed_fleet():
            info, mac = _osprofiler_pack(base_id, parent_id, current.hmac_key)
        else:
            info, mac = _signer(current.hmac_key).sign(trace_id, span_id, True)
    except Exception as exc:  # instrumentation must not break the user's call
        _refuse_once("headers", f"trace headers could not be made ({exc!r}); sent without")
        return {}
    return {X_TRACE_INFO: info, X_TRACE_HMAC: mac}


# -- headers in --------------------------------------------------------------------------------


class _Caller:
    """A verified header: the key that verified it and the ids to give ``profiler.init``."""

    __slots__ = ("base_id", "hmac_key", "parent_id")

    def __init__(self, hmac_key: str, base_id: str, parent_id: str | None) -> None:
        self.hmac_key = hmac_key
        self.base_id = base_id
        self.parent_id = parent_id


_PROBLEMS = {
    "malformed": "a trace header could not be read",
    "bad_signature": "a trace header's signature matches no key here (tampered or forged?)",
    "expired": "a signed trace header had expired (slow transit or clock skew?)",
    "internal": "reading a trace header failed unexpectedly",
    "osprofiler_header": (
        "an OSProfiler-signed trace header (HMAC-SHA1, no expiry) arrived; it is accepted "
        f"only in the mixed-fleet mode ({ENV_MIXED_FLEET}=1 or web.set_mixed_fleet(True))"
    ),
}
_logged: set[str] = set()


def _refuse_once(reason: str, message: str) -> None:
    if reason not in _logged:
        _logged.add(reason)
        log.warning("jobtrace: %s. Later ones of this kind are not logged.", message)


def _refuse(reason: str) -> _Caller | None:
    """Log (once per reason) why a header is not trusted; None, for ``return _refuse(…)``."""
    _refuse_once(reason, _PROBLEMS[reason] + "; the request is served without tracing")
    return None


def _verify(
    info: str | bytes | None, mac: str | bytes | None, keys: Sequence[str]
) -> _Caller | None:
    """The caller to join, or None (no header, no key, or one not to be trusted); a
    header never breaks the request, whatever it holds."""
    try:
        return _check(info, mac, keys)
    except Exception:  # an odd key or header value: served untraced, logged once
        return _refuse("internal")


def _check(  # noqa: PLR0911  (one early exit per kind of untrusted header)
    info: str | bytes | None, mac: str | bytes | None, keys: Sequence[str]
) -> _Caller | None:
    if not keys or not info or not mac:
        return None
    data, signature = _text(info), _text(mac).strip().lower()
    if not signature:
        return None
    if len(data) > 4096:
        return _refuse("malformed")
    if len(signature) == 40:  # HMAC-SHA1: OSProfiler's format
        if not mixed_fleet():
            return _refuse("osprofiler_header")
        return _osprofiler_unpack(data, signature, keys)
    reason = "bad_signature"
    for key in keys:
        try:
            parent = _signer(key).verify(data, signature)
        except TraceHeaderError as exc:
            if exc.reason != "bad_signature":
                reason = exc.reason
                break
            continue
        if not parent.sampled:
            return None  # the caller does not record this trace: neither do we
        return _Caller(key, f"{parent.trace_id:032x}", f"{parent.span_id:016x}")
    return _refuse(reason)


# -- the middleware ----------------------------------------------------------------------------


def _split(hmac_keys: str | Sequence[str] | None) -> list[str]:
    if not hmac_keys:
        return []
    if isinstance(hmac_keys, str):
        return [key.strip() for key in hmac_keys.split(",") if key.strip()]
    return list(hmac_keys)


_ENABLED: bool | None = None
_HMAC_KEYS: list[str] | None = None


def enable(hmac_keys: str | Sequence[str] | None = None) -> None:
    """Turn every :class:`WsgiMiddleware` on; with ``hmac_keys``, those keys replace each
    middleware's own (OSProfiler's ``enable``, used by ``init_from_conf``)."""
    global _ENABLED, _HMAC_KEYS
    _ENABLED = True
    _HMAC_KEYS = _split(hmac_keys)


def disable() -> None:
    """Turn every :class:`WsgiMiddleware` off: requests go straight to the app."""
    global _ENABLED
    _ENABLED = False


# WebOb's request.path quotes what is not safe in a URL path; the point records the same.
_PATH_SAFE = "/~!$&'()*+,;=:@"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WsgiMiddleware:
    """OSProfiler's ``WsgiMiddleware(application, hmac_keys=None, enabled=False, **kwargs)``;
    other keyword arguments (paste deploy settings) are accepted and ignored, as there."""

    def __init__(
        self,
        application: Any,
        hmac_keys: str | Sequence[str] | None = None,
        enabled: bool = False,
        **kwargs: Any,
    ) -> None:
        self.application = application
        self.name = "wsgi"
        self.enabled = enabled
        self.hmac_keys = _split(hmac_keys)

    @classmethod
    def factory(
        cls, global_conf: dict[str, Any] | None, **local_conf: Any
    ) -> Callable[[Any], WsgiMiddleware]:
        """A paste deploy filter factory."""

        def make_filter(app: Any) -> WsgiMiddleware:
            return cls(app, **local_conf)

        return make_filter

    def _on(self) -> bool:
        return self.enabled if _ENABLED is None else _ENABLED

    def __call__(self, environ: Any, start_response: Callable[..., Any] | None = None) -> Any:
        if isinstance(environ, dict):
            if start_response is None:
                raise TypeError("a WSGI call needs (environ, start_response)")
            return self._wsgi(environ, start_response)
        return self._request(environ)  # one WebOb Request, as webob.dec.wsgify allows

    # A WebOb Request (OSProfiler's own calling convention).
    def _request(self, request: Any) -> Any:
        if not self._on():
            return request.get_response(self.application)
        headers = request.headers
        caller = _verify(
            headers.get(X_TRACE_INFO), headers.get(X_TRACE_HMAC), _HMAC_KEYS or self.hmac_keys
        )
        if caller is None:
            return request.get_response(self.application)
        info = {
            "request": {
                "path": request.path,
                "query": request.query_string,
                "method": request.method,
                "scheme": request.scheme,
            }
        }
        return contextvars.copy_context().run(self._traced_request, caller, info, request)

    def _traced_request(self, caller: _Caller, info: dict[str, Any], request: Any) -> Any:
        _fresh_request()
        profiler.init(hmac_key=caller.hmac_key, base_id=caller.base_id, parent_id=caller.parent_id)
        try:
            with profiler.Trace(self.name, info=info):
                return request.get_response(self.application)
        finally:
            profiler.clean()

    # Plain WSGI.
    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not self._on():
            return self.application(environ, start_response)
        caller = _verify(
            environ.get("HTTP_X_TRACE_INFO"),
            environ.get("HTTP_X_TRACE_HMAC"),
            _HMAC_KEYS or self.hmac_keys,
        )
        if caller is None:
            return self.application(environ, start_response)
        path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
        info = {
            "request": {
                "path": quote(path.encode("latin-1", "replace"), safe=_PATH_SAFE),
                "query": str(environ.get("QUERY_STRING", "")),
                "method": str(environ.get("REQUEST_METHOD", "GET")),
                "scheme": str(environ.get("wsgi.url_scheme", "http")),
            }
        }
        # The request's own context: its profiler never leaks into the next request this
        # server thread handles, and the body is produced under the same point.
        context = contextvars.copy_context()
        return context.run(self._traced_wsgi, context, caller, info, environ, start_response)

    def _traced_wsgi(
        self,
        context: contextvars.Context,
        caller: _Caller,
        info: dict[str, Any],
        environ: dict[str, Any],
        start_response: Callable[..., Any],
    ) -> Any:
        _fresh_request()
        profiler.init(hmac_key=caller.hmac_key, base_id=caller.base_id, parent_id=caller.parent_id)
        point = profiler.Trace(self.name, info=info)
        point.__enter__()
        try:
            body = self.application(environ, start_response)
        except BaseException as exc:
            try:
                point.__exit__(type(exc), exc, exc.__traceback__)
            finally:
                profiler.clean()
            raise
        return _TracedBody(body, context, point)


def _fresh_request() -> None:
    """Start the request's own context from the caller's ids alone: no profiler, point or
    span of the code around the server (an in-process caller, a leaked profiler)."""
    profiler._profiler_var.set(None)
    profiler._point_var.set(None)
    current_span_var.set(None)


class _TracedBody(ClosingBody):
    """A response body whose point ends (and profiler is cleaned) when the server closes it."""

    __slots__ = ()

    @staticmethod
    def _finish(opened: Any, exc: BaseException | None) -> None:
        try:
            opened.__exit__(None if exc is None else type(exc), exc, None)
        finally:
            profiler.clean()
