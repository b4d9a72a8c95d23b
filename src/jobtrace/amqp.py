"""RabbitMQ plumbing shared by every jobtrace piece that speaks AMQP (pika, the ``rabbitmq``
extra, imported only here and only when called): the ``amqp://`` sink, ``jobtrace consume``
and the instruments' :class:`~jobtrace.instruments.rabbitmq.RabbitMQHandler`.

A jobtrace AMQP URL is pika's (``amqp://user:password@host:port/vhost?heartbeat=30``) plus
one parameter of its own, ``queue``: the durable queue batches go to (default
:data:`DEFAULT_QUEUE`). Messages that a consumer cannot store go to the queue's dead-letter
queue, named by :func:`dead_letter_queue`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from jobtrace._config import mask_url
from jobtrace.errors import ConfigurationError, one_line

__all__ = [
    "DEFAULT_QUEUE",
    "AMQPTarget",
    "close_quietly",
    "dead_letter_queue",
    "describe",
    "import_pika",
    "open_channel",
    "parse_url",
    "quiet_pika",
]

log = logging.getLogger("jobtrace.amqp")

#: The queue record batches go to when the URL names none.
DEFAULT_QUEUE: Final = "jobtrace.records"
#: Seconds between heartbeats asked of the broker: the sink services them on every flush
#: tick (1 s), the consumer between messages, so a quiet connection is never dropped.
HEARTBEAT: Final = 30
#: Most seconds to connect, and to wait on a broker that blocks publishers (memory or disk
#: alarm) before the publish fails and the batch goes to the spool instead.
SOCKET_TIMEOUT: Final = 5.0
BLOCKED_TIMEOUT: Final = 10.0


class AMQPTarget(NamedTuple):
    """Where to publish or consume: pika's connection parameters and the queue's name."""

    url: str
    parameters: Any  # pika.URLParameters
    queue: str

    @property
    def safe_url(self) -> str:
        return mask_url(self.url)


def import_pika() -> Any:
    """pika, or a :class:`ConfigurationError` saying which extra to install."""
    try:
        import pika
    except ImportError:
        raise ConfigurationError("amqp:// needs pika: pip install 'jobtrace[rabbitmq]'") from None
    if not _filtered:
        _filtered.append(True)
        for name, logger in list(logging.Logger.manager.loggerDict.items()):
            if name.startswith("pika.") and isinstance(logger, logging.Logger):
                logger.addFilter(_quiet_filter)
    return pika


# pika logs every failed connection attempt at ERROR, with tracebacks: a job retrying a
# broker that is down would fill its host program's log. jobtrace says it once per outage
# itself, so pika's own records are dropped while jobtrace is the one calling it (on that
# thread only: a program's own use of pika logs as it always did).
_quiet = threading.local()
_filtered: list[bool] = []


def _quiet_filter(record: logging.LogRecord) -> bool:
    return not getattr(_quiet, "active", False)


@contextlib.contextmanager
def quiet_pika() -> Iterator[None]:
    """pika's log records dropped on this thread for the duration (see above)."""
    previous = getattr(_quiet, "active", False)
    _quiet.active = True
    try:
        yield
    finally:
        _quiet.active = previous


def parse_url(url: str, queue: str | None = None) -> AMQPTarget:
    """Split a jobtrace AMQP URL into pika's parameters and the queue (``queue`` given here
    wins over the URL's); a bad URL raises :class:`ConfigurationError` naming it."""
    pika = import_pika()
    parts = urlsplit(url)
    if parts.scheme not in {"amqp", "amqps"} or not parts.hostname:
        raise ConfigurationError(
            f"RabbitMQ URL {mask_url(url)!r} needs a host, e.g. amqp://guest:guest@127.0.0.1:5672/"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    named = [value for key, value in query if key == "queue"]
    rest = [(key, value) for key, value in query if key != "queue"]
    name = queue if queue is not None else named[-1] if named else DEFAULT_QUEUE
    if not name or len(name) > 255:
        raise ConfigurationError(
            f"bad queue name {name!r} in {mask_url(url)!r}: 1 to 255 characters"
        )
    try:
        parameters = pika.URLParameters(urlunsplit(parts._replace(query=urlencode(rest))))
    except ValueError as exc:
        raise ConfigurationError(f"bad RabbitMQ URL {mask_url(url)!r}: {exc}") from None
    if not any(key == "heartbeat" for key, _ in rest):
        parameters.heartbeat = HEARTBEAT
    if not any(key == "socket_timeout" for key, _ in rest):
        parameters.socket_timeout = SOCKET_TIMEOUT
    parameters.blocked_connection_timeout = BLOCKED_TIMEOUT
    # One attempt: the callers retry with their own capped backoff, never blocking a job.
    parameters.connection_attempts = 1
    return AMQPTarget(url, parameters, name)


def dead_letter_queue(queue: str) -> str:
    """The durable queue where a consumer of ``queue`` puts the messages it cannot store."""
    return f"{queue}.dead"


def open_channel(
    parameters: Any, queues: tuple[str, ...], *, name: str = "", pika: Any = None
) -> tuple[Any, Any]:
    """A new connection and a channel in confirm mode, ``queues`` declared durable.

    Raises pika's errors (or OSError); a connection opened before the failure is closed
    first, or every retry would leak one. ``name`` shows in the broker's connection list.
    """
    pika = pika or import_pika()  # a test's stand-in for the module, if given
    if name:
        parameters.client_properties = {"connection_name": name}
    connection = pika.BlockingConnection(parameters)
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_declare(queue=queue, durable=True)
        channel.confirm_delivery()
    except BaseException:
        close_quietly(connection)
        raise
    return connection, channel


def close_quietly(connection: Any) -> None:
    """Close ``connection`` if it is open; a broker already gone is not an error."""
    if connection is None:
        return
    try:
        with quiet_pika():
            connection.close()
    except Exception:  # pika's "already closed", or the socket is gone
        log.debug("jobtrace: closing a RabbitMQ connection failed", exc_info=True)


def describe(exc: BaseException) -> str:
    """One line for a pika error: pika's connection errors say nothing themselves (their
    text is empty), the attempt's own error says what happened (refused, refused login)."""
    text = one_line(exc)
    if text == type(exc).__name__ and exc.args:
        return f"{text}: {repr(exc.args[0])[:300]}"
    return text
