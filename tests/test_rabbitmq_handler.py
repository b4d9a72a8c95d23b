"""The RabbitMQ handler against the real broker: a durable queue, persistent confirmed
messages, nothing lost across a broker restart; and a broker that is down."""

from __future__ import annotations

import logging
import os
from typing import Any

import orjson
import pytest

from jobtrace.instruments import RabbitMQHandler, profile, profiler
from tests.amqp_helpers import amqp_queue, rabbitmqctl
from tests.amqp_helpers import drain as drain_messages
from tests.instruments_helpers import clean_instruments

__all__ = ["amqp_queue", "clean_instruments"]

pytestmark = pytest.mark.rabbitmq


@profile
def serve(n: int) -> int:
    return n


def drain(url: str, queue: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every message in ``queue``: (message id, records), taken off it."""
    messages = []
    for properties, body in drain_messages(url, queue):
        assert properties.delivery_mode == 2  # persistent
        messages.append((properties.message_id, orjson.loads(body)))
    return messages


def test_records_survive_a_broker_restart_and_none_is_lost_meanwhile(
    rabbitmq_url: str, amqp_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    handler = RabbitMQHandler("rabbit", rabbitmq_url, amqp_queue)
    profiler.add_handler(handler)
    for i in range(5):
        serve(i)
    assert profiler.flush()  # confirmed by the broker, on disk
    caplog.set_level(logging.WARNING, logger="jobtrace.instruments")
    rabbitmqctl("stop_app")
    try:
        for i in range(5, 12):
            assert serve(i) == i  # the service keeps answering while the broker is down
        assert not profiler.flush()
        assert handler.pending == 7
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    assert profiler.flush()  # reconnects and republishes what was not confirmed
    assert handler.pending == 0
    messages = drain(rabbitmq_url, amqp_queue)
    unique = dict(messages)  # consumers drop duplicates by message id
    records = [r for batch in unique.values() for r in batch]
    assert len(records) == 12
    assert {r["method"] for r in records} == {"test_rabbitmq_handler:serve"}
    assert len([r for r in caplog.records if "cannot publish" in r.getMessage()]) == 1
    profiler.delete_handler("rabbit")


def test_a_deleted_queue_is_declared_again_and_nothing_is_lost(
    rabbitmq_url: str, amqp_queue: str
) -> None:
    import pika

    handler = RabbitMQHandler("rabbit", rabbitmq_url, amqp_queue)
    profiler.add_handler(handler)
    serve(1)
    assert profiler.flush()
    assert len(drain(rabbitmq_url, amqp_queue)) == 1
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        connection.channel().queue_delete(queue=amqp_queue)  # an operator deletes it
    finally:
        connection.close()
    serve(2)
    assert not profiler.flush()  # unroutable: the queue is declared again, the record kept
    assert handler.pending == 1
    assert profiler.flush()
    records = [r for _, batch in drain(rabbitmq_url, amqp_queue) for r in batch]
    assert len(records) == 1 and handler.pending == 0
    profiler.delete_handler("rabbit")


def test_a_broker_that_is_down_buffers_a_bounded_number_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = RabbitMQHandler(
        "down", "amqp://guest:guest@127.0.0.1:1/", "jobtrace.never", max_buffered=3
    )
    profiler.add_handler(handler)
    with caplog.at_level(logging.WARNING, logger="jobtrace.instruments"):
        for i in range(5):
            assert serve(i) == i
        assert not profiler.flush()
        assert not profiler.flush()
    assert (handler.pending, handler.dropped) == (3, 2)
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "cannot publish" in m]) == 1
    assert len([m for m in messages if "dropping new ones" in m]) == 1
    handler.max_buffered = 0  # closing must not wait for a broker that never comes
    profiler.delete_handler("down")


# -- against a fake pika (no broker needed) ---------------------------------------------------


class FakeChannel:
    def __init__(self, refuse_queue: bool) -> None:
        self.refuse_queue = refuse_queue
        self.published: list[str] = []

    def queue_declare(self, queue: str, durable: bool) -> None:
        import pika

        if self.refuse_queue:  # the queue exists with other arguments
            raise pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED")

    def confirm_delivery(self) -> None:
        pass

    def basic_publish(self, **kwargs: Any) -> None:
        self.published.append(kwargs["properties"].message_id)


class FakeBroker:
    """Stands in for the ``pika`` module of a handler: records the connections it opens."""

    def __init__(self, *, refuse_queue: bool = False) -> None:
        import pika

        self.exceptions = pika.exceptions
        self.BasicProperties = pika.BasicProperties
        self.refuse_queue = refuse_queue
        self.connections: list[Any] = []

    def BlockingConnection(self, params: Any) -> Any:  # pika's name
        broker = self

        class Connection:
            closed = False

            def __init__(self) -> None:
                self.channel_ = FakeChannel(broker.refuse_queue)

            def channel(self) -> FakeChannel:
                return self.channel_

            def process_data_events(self, time_limit: float) -> None:
                pass

            def close(self) -> None:
                self.closed = True

        connection = Connection()
        self.connections.append(connection)
        return connection


def record(n: int) -> dict[str, Any]:
    return {"item": "x", "method": "x:y", "value": ("observe", n)}


def test_a_connection_whose_queue_is_refused_is_closed_not_leaked() -> None:
    broker = FakeBroker(refuse_queue=True)
    handler = RabbitMQHandler("refused", "amqp://guest:guest@127.0.0.1:1/", "q")
    handler._pika = broker
    handler.handle([record(1)])
    for _ in range(3):  # every retry connects anew
        assert not handler.flush()
    assert len(broker.connections) == 3
    assert all(connection.closed for connection in broker.connections)
    assert handler.pending == 1


def test_a_forked_child_neither_reuses_the_connection_nor_resends_the_parents_records() -> None:
    broker = FakeBroker()
    handler = RabbitMQHandler("forked", "amqp://guest:guest@127.0.0.1:1/", "q")
    handler._pika = broker
    handler.handle([record(1)])
    assert handler.flush() and handler._connection is not None
    handler.handle([record(2)])  # buffered when the fork happens: the parent sends it
    pid = os.fork()
    if pid == 0:  # the child: report by exit status only
        ok = handler._connection is None and handler.pending == 0
        handler.handle([record(3)])
        ok = ok and handler.flush() and len(broker.connections) == 2
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert handler.flush() and handler.pending == 0
    assert len(broker.connections) == 1  # the parent's own, still in use
