"""API docs pages that work offline.

FastAPI's default ``/docs`` loads Swagger UI from a CDN, which shows a blank page on a
machine without internet access. The ``server`` extra installs ``fastapi-offline``, whose
wheel ships Swagger UI 5 and ReDoc 2; their files are served from the package here. Without
it, the pages fall back to the CDN and the server says so once at start.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

__all__ = ["STATIC_URL", "install_docs"]

log = logging.getLogger("jobtrace.server")

STATIC_URL = "/static/docs"


def _assets() -> Path | None:
    try:
        import fastapi_offline
    except ImportError:
        return None
    path = Path(fastapi_offline.__file__).parent / "static"
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def install_docs(app: FastAPI, title: str) -> None:
    """Serve ``/docs`` (Swagger UI) and ``/redoc`` for ``app.openapi_url``."""
    openapi_url = app.openapi_url or "/openapi.json"
    assets = _assets()
    if assets is not None:
        app.mount(STATIC_URL, StaticFiles(directory=assets), name="docs-assets")
    else:
        log.warning(
            "jobtrace server: the docs pages load Swagger UI and ReDoc from a CDN "
            "(install 'jobtrace[server]' to serve them from this machine)"
        )

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        if assets is None:
            return get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} API")
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} API",
            swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc_ui() -> HTMLResponse:
        if assets is None:
            return get_redoc_html(openapi_url=openapi_url, title=f"{title} API")
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} API",
            redoc_js_url=f"{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )
