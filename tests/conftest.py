"""Shared fixtures: an isolated jobtrace directory per test, stores on SQLite and on the
real PostgreSQL server, a private PostgreSQL server for tests that restart the database
(:mod:`tests.pg_private`), and a fresh recorder configuration."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobtrace import _config
from jobtrace.recorder import get_recorder
from jobtrace.sinks.memory import MemorySink
from tests.pg_private import private_pg, private_postgres

# Fixtures defined in helper modules, offered to every test module.
__all__ = ["private_pg", "private_postgres"]

POSTGRES_URL = os.environ.get(
    "JOBTRACE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
RABBITMQ_URL = os.environ.get("JOBTRACE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _postgres_reachable() -> str | None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except Exception as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@pytest.fixture(scope="session")
def postgres_base_url() -> str:
    problem = _postgres_reachable()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL must be reachable under CI at {POSTGRES_URL}: {problem}")
        pytest.skip(f"no PostgreSQL server at {POSTGRES_URL} ({problem})")
    return POSTGRES_URL


def _rabbitmq_reachable() -> str | None:
    try:
        import pika

        params = pika.URLParameters(RABBITMQ_URL)
        params.socket_timeout = 3
        params.connection_attempts = 1
        pika.BlockingConnection(params).close()
        return None
    except Exception as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that talks to the shared broker runs on one xdist worker, one at a time
    (``--dist loadgroup``): some restart the broker (``rabbitmqctl stop_app``), which must
    not cut another test's connection mid-way."""
    for item in items:
        if "rabbitmq_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("rabbitmq"))


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The real RabbitMQ broker (skipped locally when unreachable, never under CI=true)."""
    problem = _rabbitmq_reachable()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"RabbitMQ must be reachable under CI at {RABBITMQ_URL}: {problem}")
        pytest.skip(f"no RabbitMQ broker at {RABBITMQ_URL} ({problem})")
    return RABBITMQ_URL


@pytest.fixture
def postgres_url(postgres_base_url: str) -> Iterator[str]:
    """A PostgreSQL store URL confined to a fresh schema, dropped after the test."""
    import psycopg

    schema = f"jt_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_base_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in postgres_base_url else "?"
    yield f"{postgres_base_url}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_base_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on the embedded SQLite store and on the real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(autouse=True)
def isolated_jobtrace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own jobtrace directory and environment, and a recorder
    pointed at a memory sink named after the test."""
    directory = tmp_path / "jt"
    for name in list(os.environ):
        if name.startswith("JOBTRACE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(_config.ENV_DIR, str(directory))
    MemorySink.reset()
    _config.configure(url="memory://default", install_signal_handlers=False)
    yield directory
    if "jobtrace.instruments" in sys.modules:
        # Instruments tick on the recorder once defined: no test leaves them to the next.
        from tests.instruments_helpers import reset_instruments

        reset_instruments()
    recorder = get_recorder()
    recorder.flush(timeout=10)
    spans = sys.modules.get("jobtrace.tracing.spans")
    if spans is not None:  # a compatibility layer's service name (OSProfiler's project-service)
        spans.set_default_service(None)
    _config.configure(url="memory://default", install_signal_handlers=False)
    MemorySink.reset()


@pytest.fixture
def memory_sink() -> MemorySink:
    """Point the recorder at a fresh memory sink and return it."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    _config.configure(url=f"memory://{name}", install_signal_handlers=False)
    return MemorySink.named(name)
