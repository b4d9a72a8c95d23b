"""The API's routers, one module per resource, mounted under ``/api/v1`` in this order.

Adding a resource is one module with a ``router`` and one line here (the metric routes
``jobs/{id}/metrics…`` and ``experiments/{id}/metrics`` plug in as ``routes.metrics``).
"""

from __future__ import annotations

from fastapi import APIRouter

from jobtrace.server.routes import batches, experiments, health, items, jobs, profiles, traces
from jobtrace.server.routes import metrics as metric_routes

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    jobs.router,
    experiments.router,
    metric_routes.router,
    traces.router,
    batches.router,
    items.router,
    profiles.router,
)
