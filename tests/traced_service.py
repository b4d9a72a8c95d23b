"""A traced FastAPI service with no shutdown code of its own, for the shutdown tests:

    JOBTRACE_URL=sqlite:///… python -m uvicorn tests.traced_service:app --workers 2

Every request is a span (:class:`jobtrace.tracing.ASGIMiddleware`) and counts itself in
``traced_requests_total``. The app has no lifespan: the middleware alone must write the
worker's last spans and series when uvicorn shuts the worker down.
"""

from __future__ import annotations

from fastapi import FastAPI

from jobtrace.instruments import Counter, process_source
from jobtrace.tracing import ASGIMiddleware

REQUESTS = Counter("traced_requests", documentation="Requests served")

inner = FastAPI()


@inner.get("/work")
async def work() -> dict[str, object]:
    REQUESTS.inc()
    return {"source": process_source()}


@inner.get("/health")
async def health() -> dict[str, object]:
    return {}


app = ASGIMiddleware(inner)
