"""A real uvicorn server on loopback for tests: in a thread (fast, most tests) or as the
`jobtrace serve` command in a subprocess (to kill and restart it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.cli_helpers import cli_env

READY_TIMEOUT = 60.0
#: The keys of the API's one error body.
ERROR_KEYS = {"error", "message", "detail", "status"}


def assert_error(response: httpx.Response, status: int, kind: str | None = None) -> dict[str, Any]:
    """Assert ``response`` is the shared error body with ``status`` (and ``kind``)."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS
    assert body["status"] == status and body["message"]
    if kind is not None:
        assert body["error"] == kind
    return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll the health endpoint until it answers (bounded; no blind sleep)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"no server answered at {url} within {READY_TIMEOUT} s")


@contextmanager
def thread_server(store_url: str, port: int = 0, **app_options: int) -> Iterator[str]:
    """A uvicorn server for ``store_url`` on loopback (a free port unless given), in a
    thread; yields its URL."""
    import uvicorn

    from jobtrace.server import create_app

    config = uvicorn.Config(
        create_app(store_url, **app_options), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + READY_TIMEOUT
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class ServeProcess:
    """`jobtrace serve` in a subprocess, on a fixed port so it can be restarted there."""

    def __init__(
        self,
        store_url: str,
        directory: Path,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.store_url = store_url
        self.directory = directory
        self.args = args  # more `jobtrace serve` options
        self.env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "serve.log"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "jobtrace", "serve", "--store", self.store_url),
                    "--create",  # the tests' SQLite stores start out new
                    *("--port", str(self.port), "--log-level", "warning"),
                    *self.args,
                ],
                env=cli_env(self.directory, **self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_ready(self.url, self.process)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as when a machine dies."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None
