"""The FastAPI application: :func:`create_app` builds one for a store URL.

>>> from jobtrace.server import create_app
>>> app = create_app("sqlite:///.jobtrace/jobtrace.db")     # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, port=8000)             # doctest: +SKIP

Layout: the routers of :mod:`jobtrace.server.routes` under ``/api/v1``; errors through
:mod:`jobtrace.server.errors` (one body for all); docs pages from
:mod:`jobtrace.server.docs`. An app holds nothing but its store's connections, so any number
of workers and instances can share one PostgreSQL store.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from jobtrace import __version__
from jobtrace.dashboard import install as install_dashboard
from jobtrace.instruments.registry import shutdown_flush
from jobtrace.server.auth import AuthSettings, Guard, authorize
from jobtrace.server.docs import install_docs
from jobtrace.server.errors import BodyLimit, install_handlers
from jobtrace.server.routes import ROUTERS, health, prometheus
from jobtrace.server.scrape import ScrapeSettings, SourceRetirer
from jobtrace.server.wire import JSONBody
from jobtrace.store.core import Store

__all__ = ["API_PREFIX", "MAX_BODY_BYTES", "app_from_env", "create_app"]

API_PREFIX = "/api/v1"
#: Request bodies above this are refused with a 413 (the http sink then halves its batch).
MAX_BODY_BYTES = 64 * 1024 * 1024

_DESCRIPTION = """\
REST API of a jobtrace store: jobs, their metrics, experiments, traces and batch ingest.

Every list is paged with one envelope (`index` is an element offset; `pageLength` defaults
to 10, at most 1000). Every error has one body: `{"error", "message", "detail", "status"}`.
Times are ISO-8601 with an offset; special floats travel as `"nan"`, `"inf"`, `"-inf"`.
"""


def create_app(
    store_url: str,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    scrape: ScrapeSettings | None = None,
    auth: AuthSettings | None = None,
) -> FastAPI:
    """A FastAPI app serving the store at ``store_url`` (created and migrated if needed);
    ``scrape`` tunes ``/metrics`` and the folding of dead sources, ``auth`` who may read
    (see :mod:`jobtrace.server.auth`; writes need a token once the store has one)."""
    store = Store(store_url)
    scrape = scrape or ScrapeSettings()
    retirer = SourceRetirer(store, scrape)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The app's own objects (routes, models, SQLAlchemy metadata) live as long as the
        # process: freezing them keeps the collector from rescanning them every time an
        # ingest batch's many small objects trigger a full collection.
        gc.freeze()
        retirer.start()
        yield
        await retirer.stop()
        store.close()
        # A deployment that records in the server's own process (its instruments, a
        # tracing middleware around the app) gets its last series and spans written.
        await asyncio.to_thread(shutdown_flush, only_if_recording=True)

    app = FastAPI(
        title="jobtrace",
        version=__version__,
        description=_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        default_response_class=JSONBody,
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.scrape = scrape
    app.state.auth = Guard(store, auth or AuthSettings())
    install_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    # Every route but /health (load balancers, readiness probes) goes through one guard;
    # /metrics too, as a read: it shows job names and metric values.
    guarded = [Depends(authorize)]
    for router in ROUTERS:
        open_route = router is health.router
        app.include_router(router, prefix=API_PREFIX, dependencies=None if open_route else guarded)
    app.include_router(prometheus.router, dependencies=guarded)  # /metrics, where Prometheus looks
    install_docs(app, "jobtrace")

    # The dashboard's pages at / for browsers (their own guard: the same tokens, or a
    # sign-in cookie); programs asking / get the API's index, open as before.
    install_dashboard(
        app,
        {
            "name": "jobtrace",
            "version": __version__,
            "api": API_PREFIX,
            "docs": "/docs",
            "metrics": "/metrics",
        },
    )
    return app


def app_from_env() -> FastAPI:
    """The app for the store ``JOBTRACE_URL`` names, guarded as ``JOBTRACE_AUTH_READS`` and
    ``JOBTRACE_ALLOWED_ORIGINS`` say: uvicorn's factory for worker processes."""
    from jobtrace import _config

    return create_app(_config.resolve().url, auth=AuthSettings.from_env())
