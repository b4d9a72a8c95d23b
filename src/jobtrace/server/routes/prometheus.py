"""``GET /metrics``: the store's instrument series and what it knows, for Prometheus.

Mounted at the root (``/metrics``, where Prometheus looks), not under ``/api/v1``; what it
serves and how its cost stays bounded is described in :mod:`jobtrace.server.scrape`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from jobtrace.server.deps import StoreDep
from jobtrace.server.errors import APIError
from jobtrace.server.scrape import ScrapeSettings, render_scrape

__all__ = ["router"]

router = APIRouter(tags=["prometheus"])


@router.get(
    "/metrics",
    summary="Prometheus exposition: merged instrument series and the store's jobs, "
    "metrics and spans",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}, "application/openmetrics-text": {}}}},
)
def metrics(
    request: Request,
    store: StoreDep,
    accept: Annotated[str | None, Header(max_length=8192)] = None,
) -> Response:
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise APIError(
            503,
            "/metrics needs prometheus_client: pip install 'jobtrace[prometheus]'",
            kind="unavailable",
        ) from exc
    settings: ScrapeSettings = getattr(request.app.state, "scrape", None) or ScrapeSettings()
    body, content_type = render_scrape(store, accept=accept, settings=settings)
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})
