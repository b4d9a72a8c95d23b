"""Phanos's handlers and RabbitMQ publishers."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from abc import ABC, abstractmethod
from typing import Any

import jobtrace.compat.phanos as _api  # what a test may replace there is looked up there
from jobtrace.compat.phanos._base import Record, _log
from jobtrace.instruments.handlers import format_record


class OutputFormatter:
    """Phanos's one line per record."""

    @staticmethod
    def record_to_str(name: str, record: Record) -> str:
        return format_record(name, dict(record))


class BaseHandler(ABC):  # noqa: B024 - Phanos's BaseHandler is instantiable
    """A named receiver of records."""

    def __init__(self, handler_name: str) -> None:
        self.handler_name = handler_name


class SyncBaseHandler(BaseHandler, ABC):
    @abstractmethod
    def handle(self, records: list[Record], profiler_name: str = "profiler") -> None:
        """Receive the records of one metric (``profiler_name`` is the metric's name)."""


class AsyncBaseHandler(BaseHandler, ABC):
    @classmethod
    @abstractmethod
    async def create(cls, handler_name: str, *args: Any, **kwargs: Any) -> AsyncBaseHandler:
        """Build the handler on the running event loop."""

    @abstractmethod
    async def handle(self, records: list[Record], profiler_name: str = "profiler") -> None:
        """Receive the records of one metric on the event loop."""


class StreamHandler(SyncBaseHandler):
    """Writes one line per record to ``output`` (default ``sys.stdout``)."""

    def __init__(self, handler_name: str, output: Any = None) -> None:
        super().__init__(handler_name)
        self.output = output if output is not None else sys.stdout
        self.formatter = OutputFormatter()
        self._lock = threading.Lock()

    def handle(self, records: list[Record], profiler_name: str = "profiler") -> None:
        text = "".join(self.formatter.record_to_str(profiler_name, r) + "\n" for r in records)
        with self._lock:
            self.output.write(text)
            self.output.flush()


_phanos_logger_lock = threading.Lock()


def _phanos_logger() -> logging.Logger:
    """Phanos's default ``PHANOS`` logger, printing to stdout (one stream handler, however
    many LoggerHandlers are made)."""
    logger = logging.getLogger("PHANOS")
    with _phanos_logger_lock:
        if not any(getattr(h, "_jobtrace_phanos", False) for h in logger.handlers):
            logger.setLevel(logging.DEBUG)
            out = logging.StreamHandler(sys.stdout)
            out._jobtrace_phanos = True  # type: ignore[attr-defined]
            logger.addHandler(out)
    return logger


class LoggerHandler(SyncBaseHandler):
    """Logs a metric's records as one message at ``level`` (default DEBUG)."""

    def __init__(self, handler_name: str, logger: Any = None, level: int = logging.DEBUG) -> None:
        super().__init__(handler_name)
        self.logger = logger if logger is not None else _phanos_logger()
        self.level = level
        self.formatter = OutputFormatter()

    def handle(self, records: list[Record], profiler_name: str = "profiler") -> None:
        lines = [self.formatter.record_to_str(profiler_name, r) for r in records]
        self.logger.log(self.level, "\n".join(lines))


class NamedLoggerHandler(LoggerHandler):
    """A :class:`LoggerHandler` of ``logging.getLogger(logger_name)``."""

    def __init__(self, handler_name: str, logger_name: str, level: int = logging.DEBUG) -> None:
        super().__init__(handler_name, logging.getLogger(logger_name), level)


def log_error_profiling(name: str, formatter: Any, logger: Any, records: list[Record]) -> None:
    """Log the records at DEBUG when one of them carries ``error_raised`` true."""
    if not records or (records[0].get("labels") or {}).get("error_raised") is None:
        return
    if any(str((r.get("labels") or {}).get("error_raised")) == "True" for r in records):
        logger.debug("\n".join(formatter.record_to_str(name, r) for r in records))


NETWORK_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, OSError)


def _network_errors() -> tuple[type[BaseException], ...]:
    try:
        import pika.exceptions
        from pika.adapters.utils.connection_workflow import AMQPConnectorException
    except ImportError:  # pragma: no cover - the rabbitmq extra is not installed
        return _api.NETWORK_ERRORS
    return (pika.exceptions.AMQPError, AMQPConnectorException, *_api.NETWORK_ERRORS)


def _lazy(name: str) -> Any:
    """``BlockingConnection`` and ``aio_pika``, looked up on the package when used (a test
    may have replaced them there) and imported only then: pika is an optional extra."""
    return getattr(_api, name)


class BasePublisher(ABC):
    """Publishes records as Phanos does: one JSON message per metric's records, to a
    ``fanout`` exchange (``profiling``), routed by the records' job — so an IMP_prof
    consumer reads a jobtrace service and a Phanos service alike. Nothing connects until
    :meth:`connect` or the first :meth:`publish`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5672,
        user: str | None = None,
        password: str | None = None,
        heartbeat: int = 47,
        timeout: float = 23,
        retry_delay: float = 0.137,
        retry: int = 3,
        exchange_name: str = "profiling",
        exchange_type: Any = "fanout",
        logger: Any = None,
        **kwargs: Any,
    ) -> None:
        import pika

        self.logger = logger or _log
        self.connection: Any = None
        self.channel: Any = None
        self.exchange_name = exchange_name
        self.exchange_type = str(getattr(exchange_type, "value", exchange_type))
        self.retry = max(0, retry)
        credentials = pika.PlainCredentials(username=user or "guest", password=password or "guest")
        self.connection_parameters = pika.ConnectionParameters(
            host=host, port=port, credentials=credentials,
            heartbeat=heartbeat, connection_attempts=max(1, self.retry), retry_delay=retry_delay,
            blocked_connection_timeout=timeout, **kwargs,
        )  # fmt: skip

    def __bool__(self) -> bool:
        return self.is_connected() and self._is_bound()

    def is_connected(self) -> bool:
        return not (self.connection is None or self.connection.is_closed)

    def _is_bound(self) -> bool:
        return not (self.channel is None or self.channel.is_closed)

    @abstractmethod
    def connect(self) -> Any:
        """Connect and declare the exchange."""

    @abstractmethod
    def close(self) -> Any:
        """Close the channel and the connection."""

    @abstractmethod
    def publish(self, records: list[Record]) -> Any:
        """Send one message of ``records``; whether it was sent."""


class BlockingPublisher(BasePublisher):
    """:class:`BasePublisher` over pika's ``BlockingConnection``."""

    def close(self) -> None:
        if self.is_connected():
            if self._is_bound():
                self.channel.close()
            self.connection.close()
        self.connection = self.channel = None

    def connect(self) -> None:
        self.connection = _lazy("BlockingConnection")(self.connection_parameters)
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange=self.exchange_name, exchange_type=self.exchange_type)

    def reconnect(self, silent: bool = False) -> None:
        """Close and connect again; ``silent`` logs a failure instead of raising it."""
        self.close()
        if not silent:
            self.connect()
            return
        try:
            self.connect()
        except _network_errors() as exc:
            self.logger.warning("phanos publisher: reconnecting failed: %r", exc)

    def check_or_rebound(self) -> None:
        if not self:
            self.reconnect()

    def publish(self, records: list[Record]) -> bool:
        """Up to ``1 + retry`` attempts, reconnecting after each failure (on the handler
        thread by default, so the waits never hold a request)."""
        import orjson

        if not records:
            return True
        body = orjson.dumps(records, default=repr)
        self.check_or_rebound()
        for _ in range(1 + self.retry):
            try:
                self.channel.basic_publish(
                    exchange=self.exchange_name, body=body, routing_key=records[0]["job"]
                )
                return True
            except _network_errors() as exc:
                self.logger.warning("phanos publisher: exchange %r refused a message: %r",
                                    self.exchange_name, exc)  # fmt: skip
                time.sleep(float(self.connection_parameters.retry_delay))
                self.reconnect(silent=True)
        return False


class AsyncioPublisher(BasePublisher):
    """:class:`BasePublisher` over ``aio_pika`` (imported when connecting)."""

    exchange: Any = None

    async def close(self) -> None:
        if self.is_connected():
            if self._is_bound():
                await self.channel.close()
            await self.connection.close()
        self.connection = self.channel = None

    async def connect(self) -> None:
        p = self.connection_parameters
        self.connection = await _lazy("aio_pika").connect_robust(
            host=p.host, port=p.port, login=p.credentials.username,
            password=p.credentials.password, heartbeat=p.heartbeat,
        )  # fmt: skip
        self.channel = await self.connection.channel()
        self.exchange = await self.channel.declare_exchange(
            name=self.exchange_name, type=self.exchange_type
        )

    async def reconnect(self, silent: bool = False) -> None:
        await self.close()
        if not silent:
            await self.connect()
            return
        try:
            await self.connect()
        except _network_errors() as exc:
            self.logger.warning("phanos publisher: reconnecting failed: %r", exc)

    async def check_or_rebound(self) -> None:
        if not self:
            await self.reconnect()

    async def publish(self, records: list[Record]) -> bool:
        import orjson

        if not records:
            return True
        message = _lazy("aio_pika").Message(
            body=orjson.dumps(records, default=repr), content_type="application/json"
        )
        await self.check_or_rebound()
        for _ in range(1 + self.retry):
            try:
                await self.exchange.publish(message=message, routing_key=records[0]["job"])
                return True
            except _network_errors() as exc:
                self.logger.warning("phanos publisher: exchange %r refused a message: %r",
                                    self.exchange_name, exc)  # fmt: skip
                await asyncio.sleep(float(self.connection_parameters.retry_delay))
                await self.reconnect(silent=True)
        return False


def _logger_arg(logger: Any) -> Any:
    return logging.getLogger(logger) if isinstance(logger, str) else (logger or _log)


class _RabbitMQHandler(BaseHandler):
    """What :class:`ImpProfHandler` and :class:`AsyncImpProfHandler` share: Phanos's
    RabbitMQ settings, handed to a publisher of the handler's kind. Only when the broker
    is first checked differs (on construction, or in ``await create(...)``)."""

    publisher: Any

    def __init__(
        self,
        handler_name: str,
        host: str = "127.0.0.1",
        port: int = 5672,
        user: str | None = None,
        password: str | None = None,
        heartbeat: int = 47,
        timeout: float = 23,
        retry_delay: float = 0.137,
        retry: int = 3,
        exchange_name: str = "profiling",
        exchange_type: str = "fanout",
        logger: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler_name)
        self.logger = _logger_arg(logger)
        self.publisher = self._new_publisher(
            host, port, user, password, heartbeat, timeout, retry_delay, retry, exchange_name,
            exchange_type, self.logger, **kwargs,
        )  # fmt: skip
        self._check_broker()
        self.formatter = OutputFormatter()

    def _new_publisher(self, *args: Any, **kwargs: Any) -> BasePublisher:
        raise NotImplementedError

    def _check_broker(self) -> None:
        """Connect once and close (RuntimeError if the broker cannot be reached)."""

    def _unreachable(self, handler_type: str, err: BaseException) -> RuntimeError:
        self.logger.error(f"{handler_type} cannot connect to RabbitMQ because of {err}")
        return RuntimeError("Cannot connect to RabbitMQ")


class ImpProfHandler(_RabbitMQHandler, SyncBaseHandler):
    """Publishes records to RabbitMQ as Phanos does (see :class:`BlockingPublisher`). The
    broker is checked once when the handler is made: RuntimeError if it cannot be reached."""

    def _new_publisher(self, *args: Any, **kwargs: Any) -> BasePublisher:
        return _api.BlockingPublisher(*args, **kwargs)

    def _check_broker(self) -> None:
        try:
            self.publisher.connect()
        except _network_errors() as err:
            raise self._unreachable("ImpProfHandler", err) from err
        self.publisher.close()

    def handle(self, records: list[Record], profiler_name: str = "profiler") -> None:
        self.publisher.publish(records)
        _api.log_error_profiling(profiler_name, self.formatter, self.logger, records)


class AsyncImpProfHandler(_RabbitMQHandler, AsyncBaseHandler):
    """:class:`ImpProfHandler` for asyncio services: ``await AsyncImpProfHandler.create(...)``
    (needs ``aio_pika``, imported when connecting)."""

    def _new_publisher(self, *args: Any, **kwargs: Any) -> BasePublisher:
        return _api.AsyncioPublisher(*args, **kwargs)

    @classmethod
    async def create(cls, handler_name: str, *args: Any, **kwargs: Any) -> AsyncImpProfHandler:
        instance = cls(handler_name, *args, **kwargs)
        await instance._post_init()
        return instance

    async def _post_init(self) -> None:
        # No aio_pika installed: it cannot connect either.
        errors: tuple[type[BaseException], ...] = (*_network_errors(), ImportError)
        try:
            await self.publisher.connect()
        except errors as err:
            raise self._unreachable("AsyncImpProfHandler", err) from err
        await self.publisher.close()

    async def handle(self, records: list[Record], profiler_name: str = "profiler") -> None:
        await self.publisher.publish(records)
        _api.log_error_profiling(profiler_name, self.formatter, self.logger, records)
