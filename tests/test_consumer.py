"""``jobtrace consume`` against the real broker and the SQLite and PostgreSQL stores: every
batch stored once, duplicates dropped by batch id, poison messages dead-lettered without
holding up the queue, several consumers side by side, progress on the server's /metrics."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

import jobtrace
from jobtrace.consumer import ERROR_HEADER, Consumer
from jobtrace.sinks.amqp import AMQPSink
from jobtrace.sinks.http import encode_batch
from tests.amqp_helpers import (
    amqp_queue,
    batch_records,
    drain,
    publish_batches,
    queue_url,
    stored_counts,
    wait_until,
)
from tests.cli_helpers import cli_env, jobtrace_cli

__all__ = ["amqp_queue"]

pytestmark = pytest.mark.rabbitmq


def publish_raw(url: str, queue: str, body: bytes, message_id: str | None) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue=queue, durable=True)
        properties = pika.BasicProperties(delivery_mode=2, message_id=message_id)
        channel.basic_publish(exchange="", routing_key=queue, body=body, properties=properties)
    finally:
        connection.close()


def test_every_batch_is_stored_once_even_when_it_is_published_twice(
    rabbitmq_url: str, amqp_queue: str, store_url: str
) -> None:
    url = queue_url(rabbitmq_url, amqp_queue)
    sent = publish_batches(url, "job-once", 40, 2_500)
    sink = AMQPSink(url)  # a batch republished after a lost confirmation
    sink.write(batch_records("job-once", 7, 2_500), "job-once-7")
    sink.close()
    stats = Consumer(url, store_url, prefetch=4).run(until_empty=True)
    assert stored_counts(store_url, "job-once") == (sent, sent)
    assert (stats.messages, stats.duplicates, stats.records) == (41, 1, sent + 1)  # + the job
    assert stats.lag == 0 and stats.dead_lettered == 0


def test_an_undecodable_message_is_dead_lettered_and_the_queue_goes_on(
    rabbitmq_url: str, amqp_queue: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = queue_url(rabbitmq_url, amqp_queue)
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    publish_raw(rabbitmq_url, amqp_queue, b"\x00 not json", "garbage-1")
    publish_raw(rabbitmq_url, amqp_queue, b'{"id": "x", "records": 3}', "no-records")
    sent = publish_batches(url, "job-after", 3, 100)
    caplog.set_level(logging.WARNING, logger="jobtrace.consumer")
    stats = Consumer(url, store_url).run(until_empty=True)
    assert stored_counts(store_url, "job-after") == (sent, sent)
    assert stats.dead_lettered == 2
    dead = drain(rabbitmq_url, f"{amqp_queue}.dead")
    assert [(p.message_id, body) for p, body in dead] == [
        ("garbage-1", b"\x00 not json"),
        ("no-records", b'{"id": "x", "records": 3}'),
    ]
    assert "not valid JSON" in dead[0][0].headers[ERROR_HEADER]
    assert dead[0][0].delivery_mode == 2
    lines = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(lines) == 2 and "garbage-1" in lines[0]


def test_records_refused_are_dead_lettered_and_the_rest_of_their_batch_stored(
    rabbitmq_url: str, amqp_queue: str, store_url: str
) -> None:
    url = queue_url(rabbitmq_url, amqp_queue)
    records = batch_records("job-bad", 0, 10)
    body = orjson.loads(encode_batch("bad-batch", records))
    body["records"][3][3] = -1  # record 3 (a point): a negative step
    body["records"][5][2] = ""  # record 5: an empty metric name
    publish_raw(rabbitmq_url, amqp_queue, orjson.dumps(body), "bad-batch")
    stats = Consumer(url, store_url).run(until_empty=True)
    assert stored_counts(store_url, "job-bad") == (8, 8)
    assert (stats.records, stats.rejected_records, stats.dead_lettered) == (9, 2, 1)
    [(properties, dead_body)] = drain(rabbitmq_url, f"{amqp_queue}.dead")
    assert properties.message_id == "bad-batch/rejected"
    dead = orjson.loads(dead_body)
    assert dead["records"] == [body["records"][3], body["records"][5]]
    assert "record 3" in properties.headers[ERROR_HEADER]
    assert "record 5" in properties.headers[ERROR_HEADER]


def test_several_consumers_side_by_side_store_every_record_once(
    rabbitmq_url: str, amqp_queue: str, store_url: str
) -> None:
    url = queue_url(rabbitmq_url, amqp_queue)
    sent = publish_batches(url, "job-shared", 60, 1_000)
    consumers = [Consumer(url, store_url, prefetch=1) for _ in range(3)]
    threads = [threading.Thread(target=c.run, kwargs={"until_empty": True}) for c in consumers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert stored_counts(store_url, "job-shared") == (sent, sent)
    assert sum(c.stats.messages for c in consumers) == 60
    assert sum(c.stats.duplicates for c in consumers) == 0


def test_consumer_progress_and_lag_reach_the_servers_metrics(
    rabbitmq_url: str, amqp_queue: str, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from jobtrace.instruments import publish
    from jobtrace.server import create_app

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    url = queue_url(rabbitmq_url, amqp_queue)
    sent = publish_batches(url, "job-metrics", 5, 200)
    publish_raw(rabbitmq_url, amqp_queue, b"junk", "junk-1")
    jobtrace.configure(url=store_url, install_signal_handlers=False)
    Consumer(url, store_url, instruments=True).run(until_empty=True)
    publish(final=True)
    assert jobtrace.flush()
    with TestClient(create_app(store_url)) as client:
        text = client.get("/metrics").text
    label = f'queue="{amqp_queue}"'
    lines = [line for line in text.splitlines() if label in line]
    records = [line for line in lines if line.startswith("jobtrace_consumer_records_total")]
    assert len(records) == 1 and records[0].endswith(f" {float(sent + 1)}")
    outcomes = {
        line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("jobtrace_consumer_messages_total")
    }
    assert outcomes == {"stored": 5.0, "duplicate": 0.0, "dead_lettered": 1.0}
    assert any(line.startswith("jobtrace_consumer_lag_messages") for line in lines)


def test_the_cli_refuses_bad_urls_with_one_line(tmp_path: Path) -> None:
    result = jobtrace_cli("consume", "http://x/", "--store", "sqlite:///s.db", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "jobtrace: error: AMQP_URL must be amqp://… or amqps://…, not 'http://x/'"
    ]
    result = jobtrace_cli("consume", "amqp://h/", "--store", "http://server:8000", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "needs a database store" in result.stderr


def test_sigterm_finishes_the_batch_in_hand_and_exits_0(
    rabbitmq_url: str, amqp_queue: str, tmp_path: Path
) -> None:
    url = queue_url(rabbitmq_url, amqp_queue)
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    sent = publish_batches(url, "job-term", 20, 2_000)
    process = subprocess.Popen(
        [sys.executable, "-m", "jobtrace", "consume", url, "--store", store_url, "--prefetch", "1"],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jt"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until("a first batch stored", lambda: stored_counts(store_url, "job-term")[0] > 0)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    points, _ = stored_counts(store_url, "job-term")
    assert points % 2_000 == 0  # whole batches only
    # What it did not take is still queued; a second consumer takes the rest, once each.
    stats = Consumer(url, store_url).run(until_empty=True)
    assert stored_counts(store_url, "job-term") == (sent, sent)
    assert stats.duplicates == 0
    assert b"records stored" in err


def test_doctor_reports_the_queue_and_an_unreachable_broker(
    rabbitmq_url: str, amqp_queue: str, tmp_path: Path
) -> None:
    publish_batches(queue_url(rabbitmq_url, amqp_queue), "job-doctor", 2, 10)
    url = queue_url(rabbitmq_url, amqp_queue)
    result = jobtrace_cli("doctor", "--json", "--store", url, cwd=tmp_path)
    store = orjson.loads(result.stdout)["store"]
    assert store["reachable"] is True
    assert f"queue '{amqp_queue}' holds 2 message(s)" in store["detail"]
    result = jobtrace_cli(
        "doctor", "--json", "--store", "amqp://guest:guest@127.0.0.1:1/", cwd=tmp_path
    )
    store = orjson.loads(result.stdout)["store"]
    assert store["reachable"] is False and "Connection refused" in store["detail"]
