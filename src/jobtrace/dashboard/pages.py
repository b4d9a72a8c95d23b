"""What every dashboard page shares: the templates, the security headers, the sign-in
check, query-string helpers and the HTML error page."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from jobtrace import __version__
from jobtrace._clock import iso
from jobtrace.errors import JobtraceError, NotFoundError, QueryError, SearchError
from jobtrace.report.html import json_for_script
from jobtrace.report.traces import format_ms
from jobtrace.server.auth import SESSION_COOKIE, Guard
from jobtrace.server.errors import APIError

__all__ = [
    "CSP",
    "LoginNeeded",
    "error_page",
    "int_param",
    "page_auth",
    "render",
    "security_headers",
]

HERE = Path(__file__).parent
#: Where the dashboard's scripts and styles are served (a path the API never uses).
ASSET_PREFIX = "/ui/static"

#: Scripts only from this server (no inline script at all, so an injected <script> or
#: event attribute never runs); no request to another host. Inline styles are allowed:
#: plotly.js styles its charts through <style> elements it makes, and style cannot run code.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def security_headers() -> dict[str, str]:
    """Headers every dashboard page and asset carries."""
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


class LoginNeeded(Exception):
    """A page was asked for without a valid token while the server needs one."""

    def __init__(self, target: str, message: str) -> None:
        super().__init__(message)
        self.target = target
        self.message = message


async def page_auth(request: Request) -> None:
    """The pages' guard: the same tokens as the API, from the ``Authorization`` header or
    the sign-in cookie; without a valid one (where one is needed) the sign-in page."""
    guard: Guard = request.app.state.auth
    header = request.headers.get("authorization")
    cookie = request.cookies.get(SESSION_COOKIE)
    if header is None and cookie:
        header = f"Bearer {cookie}"
    try:
        await guard.identify(header, write=False)
    except APIError as exc:
        if exc.status != 401:
            raise
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginNeeded(target, exc.message) from None


def on_login_needed(request: Request, exc: Exception) -> Response:
    """Send a browser to the sign-in page, which brings it back afterwards."""
    assert isinstance(exc, LoginNeeded)
    return RedirectResponse("/login?" + urlencode({"next": exc.target}), status_code=303)


# -- templates -------------------------------------------------------------------------------


def fmt_seconds(value: float | None) -> str:
    """A duration in seconds for people: ``350 ms``, ``4.20 s``, ``3m 07s``, ``2h 05m``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value < 60:
        return format_ms(value * 1000)
    whole = round(value)
    minutes, seconds = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


def fmt_kb(value: float | None) -> str:
    """KiB as the largest fitting binary unit."""
    if value is None:
        return "-"
    amount, units = float(value), ("KiB", "MiB", "GiB", "TiB")
    unit = 0
    while abs(amount) >= 1024 and unit < len(units) - 1:
        amount /= 1024
        unit += 1
    return f"{amount:.0f} {units[unit]}" if unit == 0 else f"{amount:.1f} {units[unit]}"


def fmt_value(value: Any) -> str:
    """A metric or param value: floats to 6 significant digits, the rest as text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return json_for_script(value)
    return str(value)


def fmt_time(value: float | None) -> str:
    """Epoch seconds as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    text = iso(value)
    return "-" if text is None else text[:19].replace("T", " ")


def query_link(request: Request, **changes: Any) -> str:
    """The current page's address with query parameters changed (None removes one, a
    list repeats it); paging restarts unless ``index`` is among the changes."""
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    if "index" not in changes:
        params.pop("index", None)
    for key, value in changes.items():
        if value is None or value == [] or value is False:
            params.pop(key, None)
        elif isinstance(value, list | tuple):
            params[key] = [str(v) for v in value]
        else:
            params[key] = ["1" if value is True else str(value)]
    query = urlencode([(k, v) for k, values in params.items() for v in values])
    return request.url.path + (f"?{query}" if query else "")


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every {{ }} is escaped; nothing is marked safe but JSON below
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["script_json"] = lambda data: Markup(json_for_script(data))
    env.filters["seconds"] = fmt_seconds
    env.filters["kb"] = fmt_kb
    env.filters["value"] = fmt_value
    env.filters["time"] = fmt_time
    env.globals["query_link"] = query_link
    env.globals["version"] = __version__
    env.globals["static"] = ASSET_PREFIX
    return env


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page from ``templates/`` with the security headers."""
    context.setdefault("section", "")
    text = _env().get_template(template).render(request=request, **context)
    headers = {**security_headers(), "Cache-Control": "no-store"}
    return HTMLResponse(text, status_code=status, headers=headers)


def error_page(request: Request, exc: JobtraceError) -> HTMLResponse:
    """The store's verdict on a page's parameters as a page: 404 for an unknown job,
    experiment or trace, 422 for a search that does not parse, 400 for the rest."""
    status = 404 if isinstance(exc, NotFoundError) else 422 if isinstance(exc, SearchError) else 400
    title = "Not found" if status == 404 else "Cannot show this page"
    return render(request, "error.html", status, title=title, message=str(exc))


def int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter between ``low`` and ``high``; QueryError otherwise."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{name} must be an integer, got {raw[:50]!r}") from None
    if not low <= value <= high:
        raise QueryError(f"{name} must be between {low} and {high}, got {value}")
    return value
