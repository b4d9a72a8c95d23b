"""Helpers for the ``amqp://`` sink and ``jobtrace consume`` tests: a queue of the test's own,
batches of known records, what a store holds, and a TCP proxy in front of the broker that a
test can cut (connections dropped, the broker unreachable) without touching the broker the
other tests share."""

from __future__ import annotations

import contextlib
import select
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from jobtrace import model
from jobtrace.errors import StoreError
from jobtrace.sinks.amqp import AMQPSink
from jobtrace.store import Store, schema
from tests.conftest import IN_CI

__all__ = [
    "TCPProxy",
    "amqp_queue",
    "batch_records",
    "drain",
    "publish_batches",
    "queue_url",
    "rabbitmqctl",
    "retried",
    "stored_counts",
    "wait_until",
]


@pytest.fixture
def amqp_queue(rabbitmq_url: str) -> Iterator[str]:
    """A queue name of the test's own; the queue and its dead-letter queue deleted after."""
    import pika

    name = f"jobtrace.test.{uuid.uuid4().hex[:12]}"
    yield name

    def delete() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        try:
            channel = connection.channel()
            channel.queue_delete(queue=name)
            channel.queue_delete(queue=f"{name}.dead")
        finally:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()

    retried(delete, (pika.exceptions.AMQPConnectionError, pika.exceptions.ConnectionClosed))


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl`` (to stop and start the broker); skipped locally without it,
    failed under CI=true."""
    if shutil.which("rabbitmqctl") is None:
        if IN_CI:
            pytest.fail("rabbitmqctl must be installed under CI to restart the broker")
        pytest.skip("rabbitmqctl is not installed: cannot restart the broker")
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def queue_url(base: str, queue: str) -> str:
    """``base`` (an amqp:// URL without a query) naming ``queue``."""
    return f"{base}?queue={queue}"


def retried(what: Callable[[], Any], errors: tuple[type[BaseException], ...]) -> Any:
    """``what()``, tried again for up to two minutes while it raises ``errors``: the broker
    is shared, and another test run may restart it (``rabbitmqctl stop_app``) meanwhile."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return what()
        except errors:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def drain(url: str, queue: str) -> list[tuple[Any, bytes]]:
    """Every message in ``queue`` as (properties, body), taken off it."""
    import pika

    messages: list[tuple[Any, bytes]] = []

    def take() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            channel = connection.channel()
            while True:
                method, properties, body = channel.basic_get(queue=queue, auto_ack=True)
                if method is None:
                    break
                messages.append((properties, body))
        finally:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()

    retried(take, (pika.exceptions.AMQPConnectionError, pika.exceptions.ConnectionClosed))
    return messages


def batch_records(job_id: str, batch: int, size: int) -> list[model.Record]:
    """Batch number ``batch`` of a job: ``size`` metric points with steps of their own (and
    the job's snapshot in batch 0), so a store holding them all has exactly
    ``batches * size`` points."""
    records: list[model.Record] = []
    if batch == 0:
        job = {"kind": "job", "id": job_id, "seq": 1, "name": "amqp-test", "status": "running"}
        records.append(model.from_dict({**job, "start_time": time.time()}))
    now = time.time()
    records += [("metric", job_id, "loss", batch * size + i, 0.5, now) for i in range(size)]
    return records


def publish_batches(url: str, job_id: str, batches: int, size: int) -> int:
    """Publish ``batches`` batches of ``size`` points through the sink; the points sent."""
    sink = AMQPSink(url)
    try:
        for batch in range(batches):
            records = batch_records(job_id, batch, size)
            # Published again under the same id if the broker restarts meanwhile, as the
            # recorder replays a batch: the consumer stores it once either way.
            retried(lambda: sink.write(records, f"{job_id}-{batch}"), (StoreError,))  # noqa: B023
    finally:
        sink.close()
    return batches * size


def stored_counts(store_url: str, job_id: str) -> tuple[int, int]:
    """(metric points, distinct steps) the store holds for ``job_id``."""
    table = schema.metrics
    with Store(store_url) as store, store.engine.connect() as conn:
        query = sa.select(sa.func.count(), sa.func.count(sa.distinct(table.c.step))).where(
            table.c.job_id == job_id
        )
        points, steps = conn.execute(query).one()
    return int(points), int(steps)


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``condition`` (something another process does) until true, or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


_Pair = tuple[socket.socket, socket.socket]


class TCPProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; :meth:`drop` cuts every connection,
    :meth:`down` refuses new ones too until :meth:`up`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = self._listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._stopped = False
        self.connections = 0
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()

    @staticmethod
    def _listen(port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(16)
        listener.setblocking(False)
        return listener

    def url(self, user: str = "guest", password: str = "guest") -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/"

    def drop(self) -> None:
        """Close every connection through the proxy (both ends), as a broker crash would."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def down(self) -> None:
        """Drop every connection and refuse new ones."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.drop()

    def up(self) -> None:
        with self._lock:
            if self._listener is None:
                self._listener = self._listen(self.port)

    def close(self) -> None:
        self._stopped = True
        self.down()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stopped:
            with self._lock:
                listener = self._listener
                pairs = list(self._pairs)
            sockets: list[socket.socket] = [s for pair in pairs for s in pair]
            if listener is not None:
                sockets.append(listener)
            try:
                readable, _, _ = select.select(sockets, [], [], 0.05)
            except (OSError, ValueError):
                continue  # a socket closed under us by drop(): look again
            for sock in readable:
                if sock is listener:
                    self._accept(listener)
                else:
                    self._forward(sock, pairs)

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        client.setblocking(True)
        with self._lock:
            self._pairs.append((client, server))
            self.connections += 1

    def _forward(
        self, sock: socket.socket, pairs: list[tuple[socket.socket, socket.socket]]
    ) -> None:
        for pair in pairs:
            if sock in pair:
                other = pair[1] if sock is pair[0] else pair[0]
                try:
                    data = sock.recv(65536)
                    if data:
                        other.sendall(data)
                        return
                except OSError:
                    pass
                with self._lock:
                    if pair in self._pairs:
                        self._pairs.remove(pair)
                for s in pair:
                    s.close()
                return
