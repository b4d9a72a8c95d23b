"""An instrumented FastAPI service for the ``/metrics`` tests, run under uvicorn with
several workers, each a process recording to the store ``JOBTRACE_URL`` names:

    JOBTRACE_URL=sqlite:///… python -m uvicorn tests.metrics_service:app --workers 3

``GET /work?n=…`` counts itself in ``service_requests_total{route="work"}``, runs a
``@jobtrace.profile``d method (and the profiled call it makes), and answers with the
worker's pid and instrument source, so a test knows which workers served it. A worker's
series reach the store on every recorder tick and, marked final, when it shuts down.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import jobtrace
from jobtrace.instruments import Counter, Gauge, process_source, publish

REQUESTS = Counter("service_requests", labels=["route"], documentation="Requests served")
IN_FLIGHT = Gauge("service_in_flight", mode="live-sum", documentation="Requests in progress")


class Shop:
    @jobtrace.profile
    async def checkout(self, n: int) -> int:
        await asyncio.sleep(0)
        return self.price(n)

    @jobtrace.profile
    def price(self, n: int) -> int:
        return n * n


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # uvicorn's workers die by a re-raised SIGTERM after a graceful shutdown, so no exit
    # hook runs there: the last series, marked final, are sent here.
    publish(final=True)
    jobtrace.flush()


shop = Shop()
app = FastAPI(lifespan=lifespan)


@app.get("/work")
async def work(n: int = 1) -> dict[str, object]:
    REQUESTS.labels(route="work").inc()
    IN_FLIGHT.inc()
    try:
        return {"pid": os.getpid(), "source": process_source(), "value": await shop.checkout(n)}
    finally:
        IN_FLIGHT.dec()


@app.get("/health")
async def health() -> dict[str, object]:
    return {"pid": os.getpid()}
