"""A handler that sends profiling records to a durable RabbitMQ queue (pika), losing none.

>>> from jobtrace.instruments import profiler, RabbitMQHandler
>>> profiler.add_handler(RabbitMQHandler("rabbit", "amqp://guest:guest@127.0.0.1:5672/"))

Records arrive on the dispatcher's thread (never the caller's) and are buffered. On every
dispatcher tick the buffer becomes one message — a JSON list of Phanos record dicts, with a
stable ``message_id`` — published *persistent* to a *durable* queue with publisher
confirms, so what the broker confirmed survives its restart. A message stays in the
handler until the broker confirms it: when the broker goes away (or restarts) mid-way the
handler reconnects with backoff and republishes, in order, everything unconfirmed. A
message may thus arrive twice; consumers drop duplicates by ``message_id``. The tick also
services the connection's heartbeats, so an idle connection is not dropped.

While the broker is down, the service keeps answering: records are buffered up to
``max_buffered``, and past that new ones are dropped and counted (:attr:`dropped`), with
one log line per outage.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import weakref
from collections import deque
from typing import Any, Final, NamedTuple

from jobtrace._config import mask_url
from jobtrace.amqp import close_quietly, open_channel
from jobtrace.instruments.handlers import BaseHandler, ProfileRecord, dumps_records
from jobtrace.instruments.registry import process_source

__all__ = ["DEFAULT_QUEUE", "DEFAULT_URL", "RabbitMQHandler"]

log = logging.getLogger("jobtrace.instruments")

DEFAULT_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_QUEUE: Final = "jobtrace.profile"
#: Longest pause between attempts to reach a broker that is down.
MAX_RETRY_DELAY: Final = 30.0


class _Message(NamedTuple):
    message_id: str
    body: bytes
    records: int


class RabbitMQHandler(BaseHandler):
    """Publishes root calls' records to the durable queue ``queue`` at ``url``."""

    def __init__(
        self,
        handler_name: str,
        url: str = DEFAULT_URL,
        queue: str = DEFAULT_QUEUE,
        *,
        max_buffered: int = 100_000,
        heartbeat: int = 30,
        socket_timeout: float = 5.0,
    ) -> None:
        super().__init__(handler_name)
        import pika  # here: only this handler needs pika (the `rabbitmq` extra)

        self._pika = pika
        self.url = url
        self.queue = queue
        self.max_buffered = max_buffered
        params = pika.URLParameters(url)
        params.heartbeat = heartbeat
        params.socket_timeout = socket_timeout
        params.blocked_connection_timeout = max(socket_timeout, 10.0)
        params.connection_attempts = 1
        self._params = params
        self._properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json"
        )
        self._connection: Any = None
        self._channel: Any = None
        self._records: list[ProfileRecord] = []
        self._unconfirmed: deque[_Message] = deque()
        self._buffered = 0
        self._seq = itertools.count()
        self._retry_at = 0.0
        self._retry_delay = 0.5
        self._down_since: float | None = None
        self._overflowing = False
        self.dropped = 0
        self.published = 0
        self.republished = 0
        _handlers.add(self)

    # -- the dispatcher's side ------------------------------------------------------------------

    def handle(self, records: list[ProfileRecord], profiler_name: str = "profiler") -> None:
        if self._buffered + len(records) > self.max_buffered:
            self.dropped += len(records)
            if not self._overflowing:
                self._overflowing = True
                log.warning(
                    "jobtrace: RabbitMQ handler %r holds %d unsent records (broker %s "
                    "unreachable?); dropping new ones, counted in .dropped",
                    self.handler_name,
                    self._buffered,
                    mask_url(self.url),
                )
            return
        self._records.extend(records)
        self._buffered += len(records)

    def tick(self) -> None:
        self._send(force=False)

    def flush(self) -> bool:
        """Publish everything now, retrying the broker at once; True if all is confirmed."""
        return self._send(force=True)

    @property
    def pending(self) -> int:
        """Records not yet confirmed by the broker."""
        return self._buffered

    # -- publishing --------------------------------------------------------------------------

    def _seal(self) -> None:
        """Turn buffered records into one message with a stable id."""
        if self._records:
            records, self._records = self._records, []
            message_id = f"{self.handler_name}:{process_source()}:{next(self._seq)}"
            self._unconfirmed.append(_Message(message_id, dumps_records(records), len(records)))

    def _send(self, *, force: bool) -> bool:
        self._seal()
        if self._connection is None:
            if not self._unconfirmed:
                return True
            if not force and time.monotonic() < self._retry_at:
                return False
            if not self._connect():
                return False
        exceptions = self._pika.exceptions
        try:
            while self._unconfirmed:
                message = self._unconfirmed[0]
                properties = self._pika.BasicProperties(
                    delivery_mode=self._properties.delivery_mode,
                    content_type=self._properties.content_type,
                    message_id=message.message_id,
                )
                # With confirms on, this returns once the broker has the message on disk
                # (persistent, durable queue), and raises if it refused it.
                self._channel.basic_publish(
                    exchange="", routing_key=self.queue, body=message.body,
                    properties=properties, mandatory=True,
                )  # fmt: skip
                self._unconfirmed.popleft()
                self._buffered -= message.records
                self.published += 1
            self._overflowing = False
            self._connection.process_data_events(0)  # heartbeats, on every tick
            return True
        except exceptions.UnroutableError:
            self._declare_again()
        except exceptions.NackError as exc:
            log.warning("jobtrace: RabbitMQ refused a message (%s); it will be retried", exc)
        except (exceptions.AMQPError, OSError) as exc:
            self._lost(exc)
        return False

    def _declare_again(self) -> None:
        """The queue is gone (deleted by an operator): declare it again; the message stays
        first in line for the next tick."""
        log.warning("jobtrace: RabbitMQ queue %r is gone; declaring it again", self.queue)
        try:
            self._channel.queue_declare(queue=self.queue, durable=True)
        except (self._pika.exceptions.AMQPError, OSError) as exc:
            self._lost(exc)

    def _connect(self) -> bool:
        pika = self._pika
        try:
            connection, channel = open_channel(self._params, (self.queue,), pika=pika)
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._lost(exc)
            return False
        self._connection, self._channel = connection, channel
        if self._down_since is not None:
            log.warning(
                "jobtrace: RabbitMQ at %s is reachable again; republishing %d unconfirmed messages",
                mask_url(self.url),
                len(self._unconfirmed),
            )
            self.republished += len(self._unconfirmed)
        self._down_since = None
        self._retry_delay = 0.5
        return True

    def _lost(self, exc: BaseException) -> None:
        self._close_connection()
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "jobtrace: cannot publish to RabbitMQ at %s (%s); buffering up to %d records "
                "and retrying",
                mask_url(self.url),
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                self.max_buffered,
            )
        else:
            self._retry_delay = min(self._retry_delay * 2, MAX_RETRY_DELAY)
        self._retry_at = now + self._retry_delay

    def _close_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        close_quietly(connection)

    def _after_fork_in_child(self) -> None:
        """A forked child must not speak on the parent's connection (its frames would
        interleave with the parent's), nor send what the parent buffered (the parent sends
        it): it starts with no connection and nothing pending."""
        self._connection = self._channel = None
        self._records = []
        self._unconfirmed = deque()
        self._buffered = 0
        self._down_since = None
        self._retry_at = 0.0
        self._retry_delay = 0.5
        self._overflowing = False

    def close(self) -> None:
        if not self.flush():
            log.warning(
                "jobtrace: RabbitMQ handler %r closed with %d records unsent",
                self.handler_name,
                self._buffered,
            )
        self._close_connection()


_handlers: weakref.WeakSet[RabbitMQHandler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in list(_handlers):
        handler._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
