"""``amqp://``: publish record batches to a durable RabbitMQ queue, for ``jobtrace consume``.

>>> import jobtrace
>>> jobtrace.configure(url="amqp://guest:guest@127.0.0.1:5672/?queue=jobtrace.records")

Each batch the recorder hands over becomes one *persistent* message on a *durable* queue
(``?queue=`` in the URL, :data:`~jobtrace.amqp.DEFAULT_QUEUE` by default), in the ``http://``
sink's wire format (:func:`jobtrace.sinks.http.encode_batch`, what ``POST /api/v1/batches``
takes), with the recorder's batch id as its ``message_id``. The channel is in confirm
mode: :meth:`AMQPSink.write` returns only once the broker has the message on disk, so a
broker restart after it loses nothing.

Failures are the recorder's to handle, as for every sink: a write that gets no
confirmation (the broker down, restarting, refusing) raises
:class:`~jobtrace.errors.StoreError`; the recorder spools the batch to local disk under the
same batch id, retries the broker with a capped backoff and republishes the spool, oldest
first, once it is back. A batch may so reach the queue twice (its confirmation was lost, not
the message): the consumer stores each batch id once. The host program never waits on the
broker: publishing happens on the recorder's writer thread only.

Heartbeats: the recorder calls :meth:`AMQPSink.service` on every flush tick, so a
connection through an idle stretch of the job keeps answering the broker's heartbeats.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, ClassVar

from jobtrace import amqp
from jobtrace._ids import time_ordered_id
from jobtrace.errors import StoreError
from jobtrace.model import Record
from jobtrace.sinks.http import encode_batch

__all__ = ["RECORDS_HEADER", "AMQPSink"]

log = logging.getLogger("jobtrace.sinks.amqp")

#: Message header holding the batch's record count (the consumer's stats read it).
RECORDS_HEADER = "x-jobtrace-records"


class AMQPSink:
    """Publishes each batch as one confirmed, persistent message to a durable queue."""

    accepts_batch_id: ClassVar[bool] = True

    def __init__(self, url: str) -> None:
        self.target = amqp.parse_url(url)
        self.url = url
        self.queue = self.target.queue
        self._pika = amqp.import_pika()
        self._connection: Any = None
        self._channel: Any = None
        #: Messages the broker confirmed, and records in them.
        self.published = 0
        self.records = 0

    def write(self, records: Sequence[Record], batch_id: str | None = None) -> None:
        """Publish ``records`` as batch ``batch_id`` and wait for the broker's confirmation;
        raise :class:`~jobtrace.errors.StoreError` when it does not confirm."""
        if not records:
            return
        batch_id = batch_id or time_ordered_id()
        body = encode_batch(batch_id, records)
        pika = self._pika
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="application/json",
            message_id=batch_id,
            headers={RECORDS_HEADER: len(records)},
        )
        with amqp.quiet_pika():
            self._publish(body, properties, len(records))

    def _publish(self, body: bytes, properties: Any, count: int) -> None:
        pika = self._pika
        for attempt in range(2):
            channel = self._open()
            try:
                # Confirm mode: this returns once the broker has the message on disk and
                # raises if it refused it or the connection broke first.
                channel.basic_publish(
                    exchange="", routing_key=self.queue, body=body, properties=properties,
                    mandatory=True,
                )  # fmt: skip
            except pika.exceptions.UnroutableError:
                # The queue was deleted under us: declare it again (on a new connection)
                # and publish once more.
                self.close()
                if attempt == 0:
                    log.warning(
                        "jobtrace: RabbitMQ queue %r is gone; declaring it again", self.queue
                    )
                    continue
                raise StoreError(
                    f"{self.target.safe_url}: queue {self.queue!r} takes no messages"
                ) from None
            except (pika.exceptions.AMQPError, OSError) as exc:
                self.close()
                raise StoreError(
                    f"RabbitMQ at {self.target.safe_url} did not confirm the batch: "
                    f"{amqp.describe(exc)}"
                ) from None
            self.published += 1
            self.records += count
            return

    def service(self) -> None:
        """Answer the broker's heartbeats (and read its notices); a broken connection is
        closed quietly here and reopened by the next write."""
        connection = self._connection
        if connection is None:
            return
        try:
            with amqp.quiet_pika():
                connection.process_data_events(0)
        except Exception as exc:
            log.debug("jobtrace: RabbitMQ connection lost while idle (%s)", amqp.describe(exc))
            self.close()

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        amqp.close_quietly(connection)

    def after_fork(self) -> None:
        """Forget the parent's connection: the child's frames would interleave with it."""
        self._connection = self._channel = None

    def _open(self) -> Any:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self.close()
        pika = self._pika
        try:
            self._connection, self._channel = amqp.open_channel(
                self.target.parameters,
                (self.queue,),
                name=f"jobtrace-sink pid={os.getpid()}",
            )
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise StoreError(
                f"cannot reach RabbitMQ at {self.target.safe_url}: {amqp.describe(exc)}"
            ) from None
        return self._channel
