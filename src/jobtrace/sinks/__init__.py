"""Sinks: where the recorder delivers record batches, chosen by the URL's scheme.

A sink is a small protocol — ``write(records)`` and ``close()`` — and each scheme maps to a
module imported only when that scheme is used, so ``psycopg`` loads only for
``postgresql://`` and nothing heavy loads for ``memory://``.

A sink that deduplicates batches (a server) sets ``accepts_batch_id = True`` and takes
``write(records, batch_id=…)`` (:class:`BatchIdSink`): the recorder gives every batch an id
that it keeps through spooling and replay.

A record the destination refuses for good (the store's database, or a server, says this
record can never be stored) is dropped alone by the sink, which reports it with
:func:`count_refused`; :func:`refused_records` gives the process's counts by record kind.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from jobtrace import _losses
from jobtrace.errors import ConfigurationError
from jobtrace.model import Record

__all__ = [
    "BatchIdSink",
    "Sink",
    "count_refused",
    "kinds_taken",
    "known_schemes",
    "open_sink",
    "refused_records",
    "register_sink",
    "scheme_of",
    "sink_class",
]


class Sink(Protocol):
    """Receives batches of records from the recorder's writer thread."""

    def write(self, records: Sequence[Record]) -> None:
        """Persist ``records`` or raise; the recorder spools a batch that raised."""

    def close(self) -> None:
        """Release connections and files."""


class BatchIdSink(Sink, Protocol):
    """A sink that stores each batch id once: a retried or replayed batch is not stored twice."""

    accepts_batch_id: bool

    def write(self, records: Sequence[Record], batch_id: str | None = None) -> None:
        """Persist ``records`` as batch ``batch_id`` (if not already stored) or raise."""


_REGISTRY: dict[str, str] = {
    "sqlite": "jobtrace.sinks.store:StoreSink",
    "postgresql": "jobtrace.sinks.store:StoreSink",
    "postgres": "jobtrace.sinks.store:StoreSink",
    "postgresql+psycopg": "jobtrace.sinks.store:StoreSink",
    "file": "jobtrace.sinks.file:FileSink",
    "memory": "jobtrace.sinks.memory:MemorySink",
    "http": "jobtrace.sinks.http:HTTPSink",
    "https": "jobtrace.sinks.http:HTTPSink",
    "amqp": "jobtrace.sinks.amqp:AMQPSink",
    "amqps": "jobtrace.sinks.amqp:AMQPSink",
    "otlp+http": "jobtrace.sinks.otlp:OTLPSink",
    "otlp+https": "jobtrace.sinks.otlp:OTLPSink",
}


def known_schemes() -> list[str]:
    return sorted(_REGISTRY)


def register_sink(scheme: str, target: str) -> None:
    """Map ``scheme`` to a sink class given as ``"package.module:ClassName"``."""
    _REGISTRY[scheme.lower()] = target


def scheme_of(url: str) -> str:
    """The URL's scheme, checked against the registry."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"store URL {url!r} has no scheme; expected one of: "
            + ", ".join(f"{s}://" for s in known_schemes())
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _REGISTRY:
        raise ConfigurationError(
            f"unknown store URL scheme {scheme!r} in {url!r}; known schemes: "
            + ", ".join(known_schemes())
        )
    return scheme


def sink_module(url: str) -> str:
    """The name of the module that implements ``url``'s sink (imported by :func:`open_sink`)."""
    return _REGISTRY[scheme_of(url)].partition(":")[0]


def sink_class(url: str) -> Callable[[str], Sink]:
    """Import the scheme's module; the class that implements ``url``'s sink."""
    module_name, _, class_name = _REGISTRY[scheme_of(url)].partition(":")
    found: Callable[[str], Sink] = getattr(importlib.import_module(module_name), class_name)
    return found


def open_sink(url: str) -> Sink:
    """Import the scheme's module and open a sink for ``url``."""
    sink: Sink = sink_class(url)(url)
    return sink


def kinds_taken(url: str) -> frozenset[str] | None:
    """The record kinds ``url``'s sink uses (its ``kinds`` attribute), or None: every kind.
    An export queues only these (an OTLP collector has no use for profiles)."""
    kinds: frozenset[str] | None = getattr(sink_class(url), "kinds", None)
    return kinds


_refused: dict[str, int] = {}
_refused_lock = threading.Lock()


def count_refused(record: Record) -> int:
    """Count ``record`` as dropped because its destination refused it for good, for the
    process and on its job (:func:`jobtrace._losses.refused`: its ``records_dropped``);
    returns how many of that kind were dropped so far (sinks log the first ones)."""
    _losses.refused(record)
    kind = record[0]
    with _refused_lock:
        count = _refused[kind] = _refused.get(kind, 0) + 1
    return count


def refused_records() -> dict[str, int]:
    """Records dropped in this process because the store or server refused them, by kind."""
    with _refused_lock:
        return dict(_refused)


def write_batch(sink: Sink, records: Sequence[Record], batch_id: str | None) -> None:
    """Write one batch, handing its id to a sink that deduplicates by it."""
    if getattr(sink, "accepts_batch_id", False):
        cast(BatchIdSink, sink).write(records, batch_id=batch_id)
    else:
        sink.write(records)
