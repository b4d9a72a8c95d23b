"""A server worker's last spans and series reach the store when it is stopped gracefully.

A real service (tests/traced_service.py: spans by :class:`jobtrace.tracing.ASGIMiddleware`
and a counter, no shutdown code of its own) runs under ``uvicorn --workers 2`` with a flush
interval longer than the test, so that nothing is written before the end; SIGTERM stops
it. Every request's span and every count must then be in the store, and each worker's
series marked final.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from jobtrace.instruments.registry import SOURCE_SERIES
from jobtrace.store import Store
from tests.test_prometheus_endpoint import Service, load

REQUESTS = 200
WORK_SPANS = "SELECT count(*) FROM spans WHERE name LIKE '%/work'"


def rows(store_url: str, sql: str) -> list[tuple[Any, ...]]:
    with Store(store_url) as store, store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


@pytest.mark.timeout(600)
def test_sigterm_to_a_multi_worker_service_writes_every_span_and_final_series(
    tmp_path: Path,
) -> None:
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    Store(store_url).close()
    service = Service(
        store_url,
        tmp_path / "service",
        workers=2,
        app="tests.traced_service:app",
        JOBTRACE_FLUSH_INTERVAL="60",  # no tick during the test: only the shutdown writes
    )
    try:
        sent = load(service.url, REQUESTS)
    finally:
        service.stop()  # SIGTERM; uvicorn stops its workers gracefully
    assert sent["sent"] == REQUESTS
    assert rows(store_url, WORK_SPANS) == [(REQUESTS,)]
    counted = rows(store_url, "SELECT sum(value) FROM series WHERE name = 'traced_requests'")
    assert counted == [(REQUESTS,)]
    beats = rows(store_url, f"SELECT source, data FROM series WHERE name = '{SOURCE_SERIES}'")
    assert {source for source, _ in beats} >= set(sent["sources"])
    assert all(orjson.loads(data).get("final") for _, data in beats)
