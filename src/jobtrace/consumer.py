"""``jobtrace consume``: move record batches from a RabbitMQ queue into a store, exactly once.

>>> from jobtrace.consumer import Consumer
>>> Consumer("amqp://guest:guest@127.0.0.1:5672/", "sqlite:///jobtrace.db").run(until_empty=True)

The ``amqp://`` sink publishes one message per batch in the ``POST /api/v1/batches`` wire
format with the batch id as ``message_id``; each message goes through the server's own
ingest (:func:`jobtrace.server.routes.batches.ingest`: the same decoding, checks and
lenient handling), which writes the batch id in the same transaction as the batch's rows.
The message is acknowledged only after that commit. So a consumer killed at any point
leaves the message unacknowledged, the broker hands it out again, and the store answers
"already stored" for a batch it has: every record is stored exactly once, whatever the kill,
and several consumers can share one queue (the broker gives each message to one of them;
a batch published twice is stored once wherever it lands).

What cannot be stored never holds up the queue. A message that does not decode (not a
batch) goes whole to the dead-letter queue (``QUEUE.dead``, see
:func:`jobtrace.amqp.dead_letter_queue`); records the checks or the database refuse are
left out of their batch, the rest stored, and they go to the dead-letter queue as a batch of
their own (id ``BATCH/rejected``, the reasons in the ``x-jobtrace-error`` header). Each
with one log line. A store that is down is not a poison: the message in hand is kept and
retried with a capped backoff until the store is back (or the consumer is stopped, which
leaves it to the broker). A broker that goes away is reconnected to the same way.

Progress: :attr:`Consumer.stats` (messages, records, duplicates, dead-lettered, the queue's
lag), ``on_tick`` called about once a second with it, and, with ``instruments=True``,
Prometheus series (``jobtrace_consumer_records_total``, ``jobtrace_consumer_messages_total``
by outcome, ``jobtrace_consumer_lag_messages``) that travel through the recorder to the
store a server's ``/metrics`` reads.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson

from jobtrace import amqp
from jobtrace.errors import StoreError

if TYPE_CHECKING:
    from jobtrace.store import Store

__all__ = ["DEFAULT_PREFETCH", "ERROR_HEADER", "Consumer", "ConsumerStats"]

log = logging.getLogger("jobtrace.consumer")

#: Messages the broker may hand this consumer ahead of its acknowledgements.
DEFAULT_PREFETCH: Final = 8
#: Header of a dead-lettered message saying why it could not be stored.
ERROR_HEADER: Final = "x-jobtrace-error"
#: Longest pause between attempts to reach a broker or store that is down.
MAX_RETRY_DELAY: Final = 30.0
#: Seconds the consumer waits for a message before it looks at the queue's depth and stop
#: requests again: how quickly SIGTERM is obeyed on an idle queue.
IDLE_TICK: Final = 0.25
#: Seconds between looks at the queue's depth (and calls of ``on_tick``).
LOOK_INTERVAL: Final = 1.0


@dataclass
class ConsumerStats:
    """What a consumer has done so far."""

    queue: str
    #: Messages acknowledged: stored, duplicates and dead-lettered together.
    messages: int = 0
    #: Records stored (a duplicate batch's are not counted again).
    records: int = 0
    #: Messages whose batch id the store already had (a republished or redelivered batch).
    duplicates: int = 0
    #: Messages dead-lettered whole (undecodable), and records dead-lettered from batches
    #: stored without them.
    dead_lettered: int = 0
    rejected_records: int = 0
    #: Messages ready in the queue at the last look (None before the first).
    lag: int | None = None
    #: The store refused the last write for a reason of its own (down, full): the
    #: message in hand is kept and retried.
    store_down: bool = False
    started: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        """Records stored per second since the start."""
        return self.records / max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        """One line for a terminal: progress and lag."""
        lag = "?" if self.lag is None else f"{self.lag:,}"
        down = " (store down: retrying)" if self.store_down else ""
        return (
            f"{self.queue}: {self.records:,} records stored ({self.rate():,.0f}/s) from "
            f"{self.messages:,} messages, {self.duplicates:,} duplicates, "
            f"{self.dead_lettered:,} dead-lettered, lag {lag} messages{down}"
        )


class _Instruments:
    """The consumer's Prometheus series (they reach ``/metrics`` through the store)."""

    def __init__(self, queue: str) -> None:
        from jobtrace.instruments import Counter, Gauge

        job = "jobtrace-consume"
        self.records = Counter(
            "jobtrace_consumer_records", job=job, labels=["queue"],
            documentation="Records a jobtrace consume stored from a RabbitMQ queue",
        ).labels(queue=queue)  # fmt: skip
        messages = Counter(
            "jobtrace_consumer_messages", job=job, labels=["queue", "outcome"],
            documentation="Messages a jobtrace consume acknowledged, by outcome",
        )  # fmt: skip
        self.outcomes = {
            outcome: messages.labels(queue=queue, outcome=outcome)
            for outcome in ("stored", "duplicate", "dead_lettered")
        }
        self.lag = Gauge(
            "jobtrace_consumer_lag_messages", job=job, labels=["queue"], mode="last",
            documentation="Messages waiting in the queue at a consumer's last look",
        ).labels(queue=queue)  # fmt: skip


class Consumer:
    """Drains the queue of ``url`` (``?queue=`` or ``queue``) into the store at ``store_url``."""

    def __init__(
        self,
        url: str,
        store_url: str,
        *,
        queue: str | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        on_tick: Callable[[ConsumerStats], None] | None = None,
        instruments: bool = False,
    ) -> None:
        self.target = amqp.parse_url(url, queue)
        self.queue = self.target.queue
        self.dead_letter_queue = amqp.dead_letter_queue(self.queue)
        self.store_url = store_url
        self.prefetch = prefetch
        self.on_tick = on_tick
        self.stats = ConsumerStats(self.queue)
        self._instruments = _Instruments(self.queue) if instruments else None
        self._stopping = threading.Event()
        self._store: Store | None = None
        self._next_look = 0.0
        self._pika = amqp.import_pika()

    def stop(self) -> None:
        """Finish the message in hand, acknowledge it and return from :meth:`run` (safe
        from a signal handler or another thread)."""
        self._stopping.set()

    # -- the loop ------------------------------------------------------------------------------

    def run(self, *, until_empty: bool = False) -> ConsumerStats:
        """Consume until :meth:`stop` (or, ``until_empty``, until the queue has nothing
        ready); returns the stats. Broker and store outages are waited out, not raised."""
        with amqp.quiet_pika():  # failures are logged here, once per outage
            return self._run(until_empty)

    def _run(self, until_empty: bool) -> ConsumerStats:
        errors = self._pika.exceptions
        delay, down = 0.5, False
        try:
            while not self._stopping.is_set():
                try:
                    connection, channel = amqp.open_channel(
                        self.target.parameters,
                        (self.queue, self.dead_letter_queue),
                        name=f"jobtrace-consume pid={os.getpid()}",
                    )
                except (errors.AMQPError, OSError) as exc:
                    if not down:
                        down = True
                        log.warning(
                            "jobtrace consume: cannot reach RabbitMQ at %s (%s); retrying",
                            self.target.safe_url,
                            amqp.describe(exc),
                        )
                    self._pause(None, delay)
                    delay = min(delay * 2, MAX_RETRY_DELAY)
                    continue
                if down:
                    log.warning("jobtrace consume: RabbitMQ at %s is back", self.target.safe_url)
                delay, down = 0.5, False
                try:
                    channel.basic_qos(prefetch_count=self.prefetch)
                    finished = self._consume(channel, until_empty)
                    # Messages prefetched but not handled go back to the queue at once.
                    channel.cancel()
                except (errors.AMQPError, OSError) as exc:
                    # Whatever was not acknowledged is redelivered: stored batches then
                    # come back as duplicates, the rest is stored.
                    log.warning(
                        "jobtrace consume: lost the connection to RabbitMQ (%s); reconnecting",
                        amqp.describe(exc),
                    )
                    down = True
                    finished = False
                amqp.close_quietly(connection)
                if finished:
                    break
        finally:
            self._close_store()
        self._tick()
        return self.stats

    def _consume(self, channel: Any, until_empty: bool) -> bool:
        """Handle messages until stopped (True) or, ``until_empty``, the queue is empty."""
        for method, properties, body in channel.consume(self.queue, inactivity_timeout=IDLE_TICK):
            if method is not None and not self._handle(channel, method, properties, body):
                return True  # stopped while the store was down: the message stays queued
            if self._stopping.is_set():
                return True
            if method is None or time.monotonic() >= self._next_look:
                self._look(channel)
                if until_empty and method is None and self.stats.lag == 0:
                    return True
        return False

    def _look(self, channel: Any) -> None:
        """Read the queue's depth (a passive declare answers it, whatever the queue's
        arguments; a queue deleted meanwhile closes the channel: declared again on
        reconnecting)."""
        self._next_look = time.monotonic() + LOOK_INTERVAL
        declared = channel.queue_declare(queue=self.queue, passive=True)
        self.stats.lag = declared.method.message_count
        self._tick()

    def _tick(self) -> None:
        if self._instruments is not None and self.stats.lag is not None:
            self._instruments.lag.set(self.stats.lag)
        if self.on_tick is not None:
            try:
                self.on_tick(self.stats)
            except Exception:
                log.exception("jobtrace consume: the progress callback failed")

    # -- one message ---------------------------------------------------------------------------

    def _handle(self, channel: Any, method: Any, properties: Any, body: bytes) -> bool:
        """Store one message (or dead-letter it) and acknowledge it; False if stopped
        while the store was down (not acknowledged: the broker keeps it)."""
        from jobtrace.server.errors import APIError
        from jobtrace.server.routes.batches import ingest

        delay = 0.5
        down = False
        while True:
            try:
                result = ingest(self._open_store(), body, lenient=True)
            except APIError as exc:
                self._dead_letter(channel, properties, body, f"not a batch: {exc.message}")
                self._count("dead_lettered")
                break
            except StoreError as exc:
                # The store is down (or refuses every write): keep the message and retry.
                self._close_store()
                self.stats.store_down = True
                self._tick()
                if not down:
                    down = True
                    log.warning(
                        "jobtrace consume: cannot write to the store (%s); keeping the "
                        "message and retrying",
                        amqp.describe(exc),
                    )
                if not self._pause(channel.connection, delay):
                    return False
                delay = min(delay * 2, MAX_RETRY_DELAY)
                continue
            except Exception as exc:  # a bug on a strange message: it must not block the queue
                log.exception("jobtrace consume: storing a message failed; dead-lettering it")
                self._dead_letter(channel, properties, body, f"{type(exc).__name__}: {exc}")
                self._count("dead_lettered")
                break
            if down:
                self.stats.store_down = False
                log.warning("jobtrace consume: the store is back")
            rejected = result.get("rejected") or []
            stored = result["records"] - len(rejected)
            if result["duplicate"]:
                self.stats.duplicates += 1
                self._count("duplicate")
            else:
                self.stats.records += stored
                if self._instruments is not None:
                    self._instruments.records.inc(stored)
                self._count("stored")
                if rejected:
                    self._dead_letter_records(channel, properties, body, result["id"], rejected)
            break
        channel.basic_ack(delivery_tag=method.delivery_tag)
        self.stats.messages += 1
        return True

    def _count(self, outcome: str) -> None:
        if outcome == "dead_lettered":
            self.stats.dead_lettered += 1
        if self._instruments is not None:
            self._instruments.outcomes[outcome].inc()

    def _dead_letter(self, channel: Any, properties: Any, body: bytes, reason: str) -> None:
        """Publish ``body`` to the dead-letter queue (confirmed) with ``reason``."""
        pika = self._pika
        headers = dict(properties.headers or {})
        headers[ERROR_HEADER] = reason[:1000]
        headers["x-jobtrace-queue"] = self.queue
        # mandatory: a dead-letter queue deleted meanwhile raises (the connection is then
        # reopened, the queue declared again and the message redelivered) instead of the
        # broker dropping the message quietly.
        channel.basic_publish(
            exchange="",
            routing_key=self.dead_letter_queue,
            mandatory=True,
            body=body,
            properties=pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                content_type=properties.content_type,
                message_id=properties.message_id,
                headers=headers,
            ),
        )
        log.warning(
            "jobtrace consume: message %s from %s dead-lettered to %s: %s",
            properties.message_id or "(no id)",
            self.queue,
            self.dead_letter_queue,
            reason[:300],
        )

    def _dead_letter_records(
        self,
        channel: Any,
        properties: Any,
        body: bytes,
        batch_id: str,
        rejected: list[dict[str, Any]],
    ) -> None:
        """The records the store left out of a batch, as a batch of their own."""
        items = orjson.loads(body)["records"]
        records = [items[entry["index"]] for entry in rejected]
        reasons = "; ".join(f"record {e['index']}: {e['message']}" for e in rejected[:10])
        more = f"; and {len(rejected) - 10} more" if len(rejected) > 10 else ""
        dead_id = f"{batch_id}/rejected"
        dead_body = orjson.dumps({"id": dead_id, "records": records})
        self._dead_letter(
            channel,
            self._pika.BasicProperties(
                content_type="application/json", message_id=dead_id, headers=properties.headers
            ),
            dead_body,
            f"{len(rejected)} record(s) refused: {reasons}{more}",
        )
        self.stats.dead_lettered += 1
        self.stats.rejected_records += len(rejected)

    # -- the store -----------------------------------------------------------------------------

    def _open_store(self) -> Store:
        if self._store is None:
            from jobtrace.store import Store

            self._store = Store(self.store_url)
        return self._store

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception:
                log.debug("jobtrace consume: closing the store failed", exc_info=True)

    def _pause(self, connection: Any, seconds: float) -> bool:
        """Wait ``seconds`` (servicing ``connection``'s heartbeats); False if stopped."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if connection is not None:
                connection.sleep(min(left, IDLE_TICK))
            else:
                self._stopping.wait(min(left, IDLE_TICK))
        return False
