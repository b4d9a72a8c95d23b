"""The dashboard's static files, all served from installed packages: its own script and
style, the report pages' scripts and styles (the trace waterfall and the flamegraphs, the
same code as the self-contained reports), and plotly.js from the ``plotly`` wheel."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from jobtrace.dashboard.pages import ASSET_PREFIX, HERE, security_headers

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@cache
def _asset(name: str) -> bytes | None:
    from jobtrace.report import html, profile_html

    if name in {"dashboard.js", "dashboard.css"}:
        return (HERE / "static" / name).read_bytes()
    if name in {"profile_report.js", "profile_report.css"}:
        return profile_html.asset(name).encode("utf-8")
    if name == "trace_report.js":
        return html.TRACE_SCRIPT.encode("utf-8")
    if name == "trace_report.css":
        return html.TRACE_STYLE.encode("utf-8")
    if name == "plotly.min.js":
        import plotly

        return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    return None


@router.get(ASSET_PREFIX + "/{name}")
def asset(name: str) -> Response:
    """One static file; the version in the page's link changes the address on upgrade, so
    a day's caching is safe."""
    body = _asset(name)
    if body is None:
        raise HTTPException(404, f"no dashboard asset {name!r}")
    headers = {**security_headers(), "Cache-Control": "public, max-age=86400"}
    return Response(body, media_type=_TYPES[Path(name).suffix], headers=headers)
