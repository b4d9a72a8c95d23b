"""The web dashboard of ``jobtrace serve``: server-rendered pages at ``/`` beside the REST API.

>>> from jobtrace.server import create_app
>>> app = create_app("sqlite:///.jobtrace/jobtrace.db")   # doctest: +SKIP
>>> # GET /  jobs · /jobs/ID  one job · /experiments · /compare?job=A&job=B · /traces · /services

Pages are Jinja2 templates (autoescaped) with a little hand-written JavaScript that reads
its data from an escaped JSON element and sets user strings with ``textContent``; charts
are plotly.js from the ``plotly`` wheel, served from the installed package. Nothing is
fetched from another host, and every page sends a Content-Security-Policy that runs only
scripts from the server itself. Jinja2 and plotly are the ``jobtrace[ui]`` extra: without
them :func:`install` serves a one-line page saying how to get them, and the API is as
before.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

__all__ = ["UI_HINT", "install", "wants_html"]

#: What ``/`` says when the extra is missing.
UI_HINT = (
    "The jobtrace dashboard needs its extra: pip install 'jobtrace[ui]' (the API is at /api/v1)."
)


def wants_html(request: Request) -> bool:
    """Whether a request for ``/`` comes from a browser (else it gets the API's index)."""
    return "text/html" in request.headers.get("accept", "")


def install(app: FastAPI, index: dict[str, Any]) -> None:
    """Mount the dashboard's pages on ``app``; ``/`` answers programs with ``index`` (JSON)
    and browsers with the jobs page (or, without ``jobtrace[ui]``, how to install it)."""
    try:
        import jinja2  # noqa: F401
        import plotly  # noqa: F401
    except ImportError:
        from fastapi.responses import JSONResponse, PlainTextResponse, Response

        @app.get("/", include_in_schema=False)
        def missing(request: Request) -> Response:
            if not wants_html(request):
                return JSONResponse(index)
            return PlainTextResponse(UI_HINT + "\n")

        return
    from jobtrace.dashboard.routes import install_pages

    install_pages(app, index)
