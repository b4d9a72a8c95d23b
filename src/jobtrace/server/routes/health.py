"""``GET /health``: the server is up (used by load balancers and by tests waiting for it)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jobtrace import __version__

router = APIRouter(tags=["server"])


@router.get("/health", summary="Whether the server is up")
def health() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}
