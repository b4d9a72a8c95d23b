"""OSProfiler's ``osprofiler.requests``: outgoing ``requests`` calls traced and carrying
the trace headers.

>>> from jobtrace.compat.osprofiler import requests as osp_requests
>>> osp_requests.enable()          # every requests call, from now on    # doctest: +SKIP

After :func:`enable`, each request sent while a profiler is initialised is a point named
after the URL's scheme (``http``/``https``) with ``info={"requests": {"method", "query",
"path", "hostname", "port", "scheme"}}``, sends ``web.get_trace_id_headers()`` for that point
(so the called service's points are its children), and stops with
``{"requests": {"status_code": …}}``. Outside a profiler nothing is recorded or added. As
in OSProfiler it patches ``requests.adapters.HTTPAdapter.send``, for every session in the
process.

Differs: a request that raises (refused connection, timeout) ends its point with the
error's ``etype`` and ``message``, where OSProfiler leaves the point open; :func:`disable`
puts the original ``send`` back. For one session, without patching, see
:func:`jobtrace.tracing.traced_session`.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from jobtrace.compat.osprofiler import profiler, web
from jobtrace.compat.osprofiler.profiler import _class_name

__all__ = ["disable", "enable"]

log = logging.getLogger("jobtrace.compat.osprofiler")

_FUNC: Any = None  # HTTPAdapter.send as requests defines it


def _point(request: Any) -> tuple[str, dict[str, Any]]:
    """The point's name and info for ``request``; a URL requests itself will refuse (a bad
    port, say) still gets a point, and the error is requests' own to raise."""
    try:
        parsed = urlsplit(request.url)
        try:
            port: int | str = parsed.port or ""
        except ValueError:
            port = ""
        if not port:
            port = {"http": 80, "https": 443}.get(parsed.scheme, "")
        return parsed.scheme, {
            "requests": {
                "method": request.method,
                "query": parsed.query,
                "path": parsed.path,
                "hostname": parsed.hostname,
                "port": port,
                "scheme": parsed.scheme,
            }
        }
    except Exception:
        return "http", {"requests": {"method": getattr(request, "method", None)}}


def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
    """``HTTPAdapter.send`` with a point around the call and the trace headers added."""
    name, info = _point(request)
    profiler.start(name, info=info)
    try:
        request.headers.update(web.get_trace_id_headers())
        response = _FUNC(self, request, *args, **kwargs)
    except Exception as exc:
        profiler.stop(info={"etype": _class_name(exc), "message": str(exc)})
        raise
    profiler.stop(info={"requests": {"status_code": response.status_code}})
    return response


def enable() -> None:
    """Trace every ``requests`` call from now on (needs the ``requests`` package)."""
    global _FUNC
    try:
        from requests.adapters import HTTPAdapter
    except ImportError:
        log.warning("jobtrace: requests is not installed; its calls cannot be traced")
        return
    if HTTPAdapter.send is not send:
        _FUNC = HTTPAdapter.send
        HTTPAdapter.send = send  # type: ignore[method-assign]
        log.debug("jobtrace: requests calls are traced")


def disable() -> None:
    """Put ``requests``' own ``HTTPAdapter.send`` back."""
    if _FUNC is None:
        return
    from requests.adapters import HTTPAdapter

    if HTTPAdapter.send is send:
        HTTPAdapter.send = _FUNC  # type: ignore[method-assign]
