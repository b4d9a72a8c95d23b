"""The ``amqp://`` sink against the real broker: one confirmed, persistent message per batch in
the server's wire format, the batch id as message id, heartbeats serviced, and a broker
that goes away costs the job nothing (the spool holds the batches, replayed in order)."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import pytest

import jobtrace
from jobtrace import _config, amqp
from jobtrace.errors import ConfigurationError, StoreError
from jobtrace.recorder import get_recorder
from jobtrace.sinks import open_sink
from jobtrace.sinks.amqp import RECORDS_HEADER, AMQPSink
from tests.amqp_helpers import TCPProxy, amqp_queue, batch_records, drain, queue_url

__all__ = ["amqp_queue"]


def test_the_queue_comes_from_the_url_or_defaults_and_pikas_own_parameters_pass() -> None:
    target = amqp.parse_url("amqp://u:p@broker:5673/vh?queue=jobs.in&heartbeat=7")
    assert target.queue == "jobs.in"
    assert target.parameters.heartbeat == 7
    assert target.parameters.virtual_host == "vh"
    assert target.parameters.port == 5673
    assert amqp.parse_url("amqp://broker/").queue == amqp.DEFAULT_QUEUE
    assert amqp.parse_url("amqp://broker/?queue=a", queue="b").queue == "b"
    assert target.safe_url == "amqp://u:***@broker:5673/vh?queue=jobs.in&heartbeat=7"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("amqp:///", "needs a host"),
        ("amqp://broker/?queue=", "bad queue name"),
        ("amqp://broker/?nonsense=1", "Unknown URL parameter"),
    ],
)
def test_a_bad_url_is_a_configuration_error_naming_it(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        AMQPSink(url)


def test_jobtrace_url_amqp_chooses_the_amqp_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_config.ENV_URL, "amqp://guest:guest@127.0.0.1:1/?queue=q")
    sink = open_sink(_config.resolve().url)
    assert isinstance(sink, AMQPSink) and sink.queue == "q"
    sink.close()


def test_an_unreachable_broker_raises_store_error_promptly_and_pika_stays_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sink = AMQPSink("amqp://guest:guest@127.0.0.1:1/?queue=q")
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot reach RabbitMQ at amqp://guest:\\*\\*\\*@"):
        sink.write(batch_records("j", 0, 3), "b-0")
    assert time.monotonic() - started < 10
    # The recorder says it once per outage; pika's tracebacks per attempt are not passed on.
    noise = [r for r in caplog.records if r.name.startswith("pika") and r.levelno >= logging.INFO]
    assert noise == []


@pytest.mark.rabbitmq
def test_a_deleted_queue_is_declared_again(rabbitmq_url: str, amqp_queue: str) -> None:
    import pika

    sink = AMQPSink(queue_url(rabbitmq_url, amqp_queue))
    sink.write(batch_records("job-1", 0, 5), "b-0")
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    connection.channel().queue_delete(queue=amqp_queue)  # an operator's mistake
    connection.close()
    sink.write(batch_records("job-1", 1, 5), "b-1")
    sink.close()
    assert [p.message_id for p, _ in drain(rabbitmq_url, amqp_queue)] == ["b-1"]


@pytest.mark.rabbitmq
def test_each_batch_is_one_persistent_message_with_the_batch_id_in_the_servers_format(
    rabbitmq_url: str, amqp_queue: str
) -> None:
    from jobtrace.server.ingest import decode_batch

    sink = AMQPSink(queue_url(rabbitmq_url, amqp_queue))
    batches = {f"batch-{i}": batch_records("job-1", i, 1_000) for i in range(3)}
    for batch_id, records in batches.items():
        sink.write(records, batch_id)
    sink.close()
    messages = drain(rabbitmq_url, amqp_queue)
    assert [p.message_id for p, _ in messages] == list(batches)
    for properties, body in messages:
        assert properties.delivery_mode == 2  # persistent
        assert properties.content_type == "application/json"
        batch_id, records = decode_batch(body)  # what POST /api/v1/batches decodes
        assert batch_id == properties.message_id
        assert records == batches[batch_id]
        assert properties.headers[RECORDS_HEADER] == len(records)


@pytest.mark.rabbitmq
def test_a_job_recording_to_amqp_publishes_every_record(rabbitmq_url: str, amqp_queue: str) -> None:
    jobtrace.configure(url=queue_url(rabbitmq_url, amqp_queue), install_signal_handlers=False)
    with jobtrace.job("to-queue", job_id="amqp-job", report=False, profile=False):
        for step in range(25_000):
            jobtrace.log_metric("loss", 0.25, step)
    assert jobtrace.flush()
    from jobtrace.server.ingest import decode_batch

    records = [r for _, body in drain(rabbitmq_url, amqp_queue) for r in decode_batch(body)[1]]
    assert sum(r[0] == "metric" for r in records) == 25_000
    assert {r[3] for r in records if r[0] == "metric"} == set(range(25_000))
    assert [r for r in records if r[0] == "job"][-1][5] == "succeeded"


@pytest.mark.rabbitmq
def test_an_idle_connection_kept_alive_by_service_is_reused(
    rabbitmq_url: str, amqp_queue: str
) -> None:
    # A 1 s heartbeat: unserviced, the broker would close the connection within seconds.
    sink = AMQPSink(queue_url(rabbitmq_url, amqp_queue) + "&heartbeat=1")
    sink.write(batch_records("job-1", 0, 10), "b-0")
    connection = sink._connection
    for _ in range(12):  # three seconds of flush ticks with nothing to send
        time.sleep(0.25)
        sink.service()
    assert sink._connection is connection and connection.is_open
    sink.write(batch_records("job-1", 1, 10), "b-1")
    assert sink._connection is connection
    sink.close()
    assert [p.message_id for p, _ in drain(rabbitmq_url, amqp_queue)] == ["b-0", "b-1"]


@pytest.mark.rabbitmq
def test_the_recorder_services_the_sinks_connection_on_every_tick(
    rabbitmq_url: str, amqp_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    serviced: list[float] = []
    monkeypatch.setattr(AMQPSink, "service", lambda self: serviced.append(time.monotonic()))
    jobtrace.configure(url=queue_url(rabbitmq_url, amqp_queue), install_signal_handlers=False)
    recorder = get_recorder()
    with jobtrace.job("ticks", report=False, profile=False):
        pass
    assert jobtrace.flush()  # the sink is open now
    recorder._service_sink()  # what the writer thread does after each flush
    assert len(serviced) == 1


@pytest.mark.rabbitmq
def test_a_broker_away_mid_job_costs_nothing_the_spool_replays_in_order(
    rabbitmq_url: str, amqp_queue: str
) -> None:
    from jobtrace.server.ingest import decode_batch

    broker = urlsplit(rabbitmq_url)
    proxy = TCPProxy((broker.hostname or "127.0.0.1", broker.port or 5672))
    try:
        jobtrace.configure(url=queue_url(proxy.url(), amqp_queue), install_signal_handlers=False)
        recorder = get_recorder()
        with jobtrace.job("outage", job_id="outage-job", report=False, profile=False):
            for step in range(10_000):
                jobtrace.log_metric("loss", 1.0, step)
            assert jobtrace.flush()
            proxy.down()  # the broker goes away mid-job
            started = time.monotonic()
            for step in range(10_000, 30_000):
                jobtrace.log_metric("loss", 1.0, step)
            jobtrace.flush(timeout=5)  # spooled, not blocked on the broker
            assert time.monotonic() - started < 15
            assert recorder.spooled >= 20_000
            proxy.drop()  # connections cut again while it is down
            proxy.up()
        assert jobtrace.flush()  # reconnects, replays the spool, then the rest
    finally:
        proxy.close()
    steps = []
    for _, body in drain(rabbitmq_url, amqp_queue):
        steps += [r[3] for r in decode_batch(body)[1] if r[0] == "metric"]
    assert sorted(set(steps)) == list(range(30_000))  # none lost (a batch may come twice)
    assert steps[:10_000] == list(range(10_000))
