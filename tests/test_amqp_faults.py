"""Faults between a job, RabbitMQ, ``jobtrace consume`` and the store, each with the count
of records sent against the count stored — which must match exactly: a consumer SIGKILLed
mid-stream and restarted, its connection to the broker cut mid-stream, the store down and
back, the broker restarted under a recording job and a running consumer."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import jobtrace
from jobtrace.consumer import Consumer
from tests.amqp_helpers import (
    TCPProxy,
    amqp_queue,
    publish_batches,
    queue_url,
    rabbitmqctl,
    stored_counts,
    wait_until,
)
from tests.cli_helpers import cli_env
from tests.pg_private import PrivateDatabase

__all__ = ["amqp_queue"]

# Each moves 120,000 records or more through a broker, a consumer and a store, some with
# restarts: minutes on a loaded machine, past the suite's default timeout.
pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(600)]

BATCHES, SIZE = 120, 1_000


def start_consumer(url: str, store_url: str, cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobtrace", "consume", url, "--store", store_url, *args],
        cwd=cwd,
        env=cli_env(cwd / ".jt"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_a_consumer_sigkilled_mid_stream_and_restarted_stores_every_record_once(
    rabbitmq_url: str, amqp_queue: str, store_url: str, tmp_path: Path
) -> None:
    url = queue_url(rabbitmq_url, amqp_queue)
    sent = publish_batches(url, "job-kill", BATCHES, SIZE)
    kills = 0
    for share in (0.1, 0.3, 0.5):  # killed three times, each at a later point of the stream
        process = start_consumer(url, store_url, tmp_path, "--prefetch", "4")
        try:
            wait_until(
                f"{share:.0%} of the records stored",
                lambda share=share: stored_counts(store_url, "job-kill")[0] >= share * sent,
                timeout=120,
            )
        finally:
            process.send_signal(signal.SIGKILL)  # mid-stream: batches in hand, unacknowledged
            process.wait(30)
        kills += 1
    assert stored_counts(store_url, "job-kill")[0] < sent  # some were still queued
    last = start_consumer(url, store_url, tmp_path, "--until-empty")
    _, err = last.communicate(timeout=180)
    assert last.returncode == 0, err
    assert kills == 3
    assert stored_counts(store_url, "job-kill") == (sent, sent)


def test_a_consumer_whose_broker_connection_drops_mid_stream_stores_every_record_once(
    rabbitmq_url: str, amqp_queue: str, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    broker = urlsplit(rabbitmq_url)
    proxy = TCPProxy((broker.hostname or "127.0.0.1", broker.port or 5672))
    sent = publish_batches(queue_url(rabbitmq_url, amqp_queue), "job-drop", BATCHES, SIZE)
    consumer = Consumer(queue_url(proxy.url(), amqp_queue), store_url, prefetch=8)
    thread = threading.Thread(target=consumer.run, kwargs={"until_empty": True})
    thread.start()
    try:
        for share in (0.25, 0.5, 0.75):
            wait_until(
                f"{share:.0%} stored",
                lambda share=share: consumer.stats.records >= share * sent,
            )
            proxy.drop()  # acknowledgements in flight are lost: those batches come again
        thread.join(180)
        assert not thread.is_alive()
    finally:
        consumer.stop()
        thread.join(30)
        proxy.close()
    assert stored_counts(store_url, "job-drop") == (sent, sent)
    assert proxy.connections >= 4  # it reconnected after each drop


def test_a_store_down_then_up_holds_the_message_and_loses_nothing(
    rabbitmq_url: str, amqp_queue: str, private_pg: PrivateDatabase
) -> None:
    url = queue_url(rabbitmq_url, amqp_queue)
    sent = publish_batches(url, "job-db", 40, SIZE)
    consumer = Consumer(url, private_pg.url, prefetch=4)
    thread = threading.Thread(target=consumer.run)
    thread.start()
    try:
        wait_until("a quarter stored", lambda: consumer.stats.records >= sent // 4)
        private_pg.server.stop("immediate")  # as if the database host lost power
        wait_until("the consumer to see the store down", lambda: consumer.stats.store_down)
        held = consumer.stats.messages
        sent += publish_batches(url, "job-db-later", 10, SIZE)  # the queue keeps taking
        assert consumer.stats.messages == held  # nothing acknowledged while it is down
        private_pg.server.start()
        wait_until(
            "everything stored", lambda: consumer.stats.messages == 50 and consumer.stats.lag == 0
        )
    finally:
        consumer.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert not consumer.stats.store_down
    first, later = (
        stored_counts(private_pg.url, "job-db"),
        stored_counts(private_pg.url, "job-db-later"),
    )
    assert first[0] + later[0] == sent and first == (40 * SIZE, 40 * SIZE)


def test_a_broker_restarted_under_a_recording_job_and_a_consumer_loses_nothing(
    rabbitmq_url: str, amqp_queue: str, tmp_path: Path
) -> None:
    url = queue_url(rabbitmq_url, amqp_queue)
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    consumer = Consumer(url, store_url)
    thread = threading.Thread(target=consumer.run)
    jobtrace.configure(url=url, install_signal_handlers=False)
    steps = 0

    def record_points(chunks: int, timeout: float | None) -> None:
        nonlocal steps
        for _ in range(chunks):
            for _ in range(1_000):
                jobtrace.log_metric("loss", 0.5, steps)
                steps += 1
            jobtrace.flush(timeout=timeout)

    thread.start()
    try:
        with jobtrace.job("restart", job_id="job-restart", report=False, profile=False):
            record_points(20, None)
            wait_until("some stored", lambda: consumer.stats.records > 0)
            rabbitmqctl("stop_app")
            try:
                record_points(20, 2)  # the job goes on while the broker is down: spooled
            finally:
                rabbitmqctl("start_app")
                rabbitmqctl("await_startup")
            record_points(10, None)
        assert jobtrace.flush()  # the spool replayed into the queue, confirmed
        wait_until(
            "every point stored",
            lambda: stored_counts(store_url, "job-restart")[1] == steps,
            timeout=120,
        )
    finally:
        consumer.stop()
        thread.join(60)
    assert stored_counts(store_url, "job-restart") == (steps, steps) == (50_000, 50_000)
