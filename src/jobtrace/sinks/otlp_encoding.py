"""jobtrace's records as OTLP messages (``opentelemetry-proto``), built straight from the
record tuples: no SDK span objects (an SDK span costs several times the encoding itself).

Spans. ``trace_id`` (32 hex digits) and ``span_id``/``parent_id`` (16) become OTLP's 16- and
8-byte ids, so a trace's links survive as they are; ``start_ns``/``duration_ns`` give the
start and end in unix nanoseconds. A span with an error gets ``STATUS_CODE_ERROR`` with its
message and an ``exception`` event (``exception.type``, ``exception.message``) at its end.
``info`` becomes attributes: nested dicts flattened with dotted keys (``{"db": {"rows": 3}}``
is ``db.rows``), values as OTLP's AnyValue types (lists as arrays; ``None`` left out; any
other object as its ``repr``), bounded: :data:`MAX_ATTRIBUTES` per span (the rest counted in
``dropped_attributes_count``), :data:`MAX_VALUE_CHARS` characters per string,
:data:`MAX_ARRAY` items per array. The thread becomes ``thread.name``. Kind: ``SERVER`` for
a web middleware's span (it has ``http.request.method`` and no ``url.full``), ``CLIENT`` for
an outgoing request's (``url.full``), ``INTERNAL`` otherwise.

Resources. Spans are grouped per (service, host, pid, job): one ``ResourceSpans`` each, with
``service.name`` (the span's ``service`` when the record has one, else its job's name, else
this process's script name, as a job with no name is named), ``host.name``,
``process.pid``, ``jobtrace.job.id``, ``jobtrace.job.name`` and ``jobtrace.experiment``
(name and experiment come from the job records the sink has seen), and one ``ScopeSpans``
of scope ``jobtrace`` at its version. The job is part of the key because one process may
run many jobs one after another.

Metrics. A :func:`jobtrace.log_metric` point becomes a data point of an OTLP ``Gauge``
named as the metric, at the point's timestamp, with its job's resource. The step is not an
attribute: every step would then be a series of its own in the backend (a 10k-step run, 10k
series), where a gauge over time is what a dashboard plots; the step stays in jobtrace's
store, keyed by it.

JSON. :func:`to_json` gives OTLP/JSON: lowerCamelCase keys, ids as hex (not base64),
enums as integers, 64-bit integers as strings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from jobtrace import __version__
from jobtrace.model import FIELDS, JOB, METRIC, SPAN, Record

if TYPE_CHECKING:
    from google.protobuf.message import Message

__all__ = [
    "MAX_ARRAY",
    "MAX_ATTRIBUTES",
    "MAX_VALUE_CHARS",
    "RecordEncoder",
    "span_kind",
    "to_json",
]

#: Most attributes per span (OpenTelemetry's default limit); the rest are counted.
MAX_ATTRIBUTES: Final = 128
#: Most characters of one string value.
MAX_VALUE_CHARS: Final = 4096
#: Most items of one array value.
MAX_ARRAY: Final = 128
#: Deepest nesting of ``info`` flattened into dotted keys; deeper dicts become text.
_MAX_DEPTH: Final = 8
#: Jobs whose name and experiment are remembered for the resources of later batches.
_JOBS_KEPT: Final = 4096
_INT64: Final = 1 << 63
_SCALAR_FIELDS: Final = {bool: "bool_value", float: "double_value"}

# Span kinds and status codes as OTLP numbers (trace.proto), so encoding needs no lookups.
KIND_INTERNAL: Final = 1
KIND_SERVER: Final = 2
KIND_CLIENT: Final = 3
_STATUS_ERROR: Final = 2

_S = {name: i + 1 for i, name in enumerate(FIELDS[SPAN])}
_J = {name: i + 1 for i, name in enumerate(FIELDS[JOB])}
_M = {name: i + 1 for i, name in enumerate(FIELDS[METRIC])}
# Another field may join the span record (a service name); used when it is there.
_SERVICE: Final = _S.get("service")


def span_kind(info: Mapping[str, Any] | None) -> int:
    """OTLP's span kind for a span with this ``info`` (see the module's docs)."""
    if not info or "http.request.method" not in info:
        return KIND_INTERNAL
    return KIND_CLIENT if "url.full" in info else KIND_SERVER


def _script_service() -> str:
    """This process's fallback ``service.name``: its script's name without the suffix, as
    a job started with no name is named (so a job's processes agree on it)."""
    name = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else ""
    return name if name and name != "-c" else "unknown_service:python"


def _id_bytes(value: Any, size: int) -> bytes:
    """A span or trace id (an int on the hot path, hex elsewhere) as OTLP's bytes."""
    if value is None:
        return b""
    if type(value) is int:
        return value.to_bytes(size, "big")
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        return b""
    return raw if len(raw) == size else b""


def _any_value(value: Any, depth: int = 0) -> dict[str, Any] | None:
    """``value`` as an AnyValue initialiser (a dict the message takes), or None to leave out."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"string_value": value[:MAX_VALUE_CHARS]}
    if isinstance(value, bytes | bytearray):
        return {"bytes_value": bytes(value[:MAX_VALUE_CHARS])}
    if isinstance(value, bool | float) or (isinstance(value, int) and -_INT64 <= value < _INT64):
        field = _SCALAR_FIELDS.get(type(value), "int_value")  # int subclasses: int_value
        return {field: value}
    if depth < _MAX_DEPTH and isinstance(value, list | tuple | Mapping):
        return _composite(value, depth)
    try:  # a big int, a custom object: its text
        text = str(value) if isinstance(value, int) else repr(value)
    except Exception:  # a user's __repr__ may raise; never into the writer
        text = f"<{type(value).__name__}>"
    return {"string_value": text[:MAX_VALUE_CHARS]}


def _composite(value: Any, depth: int) -> dict[str, Any]:
    """A list as an ``array_value``, a mapping (inside a list) as a ``kvlist_value``."""
    if isinstance(value, Mapping):
        pairs = list(value.items())[:MAX_ATTRIBUTES]
        return {"kvlist_value": {"values": _key_values(pairs, depth + 1)}}
    items = (_any_value(v, depth + 1) for v in value[:MAX_ARRAY])
    return {"array_value": {"values": [v for v in items if v is not None]}}


def _key_values(pairs: Iterable[tuple[Any, Any]], depth: int) -> list[dict[str, Any]]:
    out = []
    for key, value in pairs:
        any_value = _any_value(value, depth)
        if any_value is not None:
            out.append({"key": str(key), "value": any_value})
    return out


def _is_mapping(value: Any) -> bool:
    # A plain dict answers at C speed; the ABC check (slow) only for anything else.
    return type(value) is dict or (
        not isinstance(value, str | int | float | list | tuple) and isinstance(value, Mapping)
    )


def _flatten(info: Mapping[Any, Any], prefix: str, out: dict[str, Any], depth: int) -> None:
    """``info``'s leaves into ``out`` under dotted keys (``{"a": {"b": 1}}`` -> ``a.b``)."""
    for key, value in info.items():
        if value is None:
            continue
        name = key if not prefix and type(key) is str else f"{prefix}{key}"
        if _is_mapping(value) and value and depth < _MAX_DEPTH:
            _flatten(value, name + ".", out, depth + 1)
        else:
            out[name] = value


def _add_attributes(add: Any, items: Iterable[tuple[str, Any]]) -> None:
    """Append ``items`` to a repeated ``KeyValue`` field (its ``add``): the common scalar
    types set in place (the cheapest way into a message), the rest via :func:`_any_value`."""
    for key, value in items:
        kind = type(value)
        if kind is str:
            add(key=key).value.string_value = value[:MAX_VALUE_CHARS]
        elif kind is int and -_INT64 <= value < _INT64:
            add(key=key).value.int_value = value
        elif kind is float:
            add(key=key).value.double_value = value
        elif kind is bool:
            add(key=key).value.bool_value = value
        else:
            any_value = _any_value(value)
            if any_value is not None:
                add(key=key, value=any_value)


class RecordEncoder:
    """Builds OTLP export requests from record batches; remembers the jobs it has seen
    (name, experiment, host, pid) to name the resources of their spans and metrics."""

    def __init__(self) -> None:
        self._jobs: dict[str, tuple[str | None, str | None, str | None, int | None]] = {}
        self.fallback_service = _script_service()
        self._host = os.uname().nodename
        self._pid = os.getpid()

    def note_jobs(self, records: Sequence[Record]) -> None:
        """Remember the identity of the jobs among ``records``."""
        jobs = self._jobs
        for record in records:
            if record[0] == JOB:
                job_id = record[_J["id"]]
                jobs.pop(job_id, None)
                jobs[job_id] = (
                    record[_J["name"]],
                    record[_J["experiment"]],
                    record[_J["host"]],
                    record[_J["pid"]],
                )
                if len(jobs) > _JOBS_KEPT:
                    del jobs[next(iter(jobs))]

    def _resource(
        self, service: str | None, host: Any, pid: Any, job_id: str | None
    ) -> list[dict[str, Any]]:
        job = self._jobs.get(job_id) if job_id else None
        name = job[0] if job else None
        attributes: dict[str, Any] = {
            "service.name": service or name or self.fallback_service,
            "telemetry.sdk.name": "jobtrace",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.version": __version__,
        }
        if host is not None:
            attributes["host.name"] = str(host)
        if type(pid) is int:
            attributes["process.pid"] = pid
        if job_id:
            attributes["jobtrace.job.id"] = str(job_id)
        if name:
            attributes["jobtrace.job.name"] = str(name)
        if job and job[1]:
            attributes["jobtrace.experiment"] = str(job[1])
        return _key_values(attributes.items(), 0)

    # -- traces ------------------------------------------------------------------------

    def traces(self, spans: Sequence[Record]) -> Message:
        """An ``ExportTraceServiceRequest`` holding ``spans`` (span records)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest()
        groups: dict[tuple[Any, ...], Any] = {}
        s = _S
        for record in spans:
            service = record[_SERVICE] if _SERVICE is not None else None
            key = (service, record[s["host"]], record[s["pid"]], record[s["job_id"]])
            scope = groups.get(key)
            if scope is None:
                resource_spans = request.resource_spans.add()
                for kv in self._resource(*key):
                    resource_spans.resource.attributes.add(**kv)
                scope = resource_spans.scope_spans.add()
                scope.scope.name = "jobtrace"
                scope.scope.version = __version__
                groups[key] = scope
            _add_span(scope.spans.add, record)
        return request

    # -- metrics -----------------------------------------------------------------------

    def metrics(self, points: Sequence[Record]) -> Message:
        """An ``ExportMetricsServiceRequest`` holding ``points`` (metric records) as gauges."""
        import time

        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
        )

        request = ExportMetricsServiceRequest()
        scopes: dict[Any, Any] = {}
        gauges: dict[tuple[Any, str], Any] = {}
        m = _M
        now = time.time()
        for record in points:
            job_id = record[m["job_id"]]
            scope = scopes.get(job_id)
            if scope is None:
                job = self._jobs.get(job_id) if job_id else None
                host, pid = (job[2], job[3]) if job else (None, None)
                resource_metrics = request.resource_metrics.add()
                for kv in self._resource(None, host, pid, job_id):
                    resource_metrics.resource.attributes.add(**kv)
                scope = scopes[job_id] = resource_metrics.scope_metrics.add()
                scope.scope.name = "jobtrace"
                scope.scope.version = __version__
            name = str(record[m["name"]])
            gauge = gauges.get((job_id, name))
            if gauge is None:
                metric = scope.metrics.add(name=name)
                gauge = gauges[job_id, name] = metric.gauge.data_points
            timestamp = record[m["timestamp"]]
            seconds = float(timestamp) if isinstance(timestamp, int | float) else now
            value = record[m["value"]]
            gauge.add(
                time_unix_nano=int(seconds * 1e9),
                as_double=float(value) if isinstance(value, int | float) else float("nan"),
            )
        return request


def _add_span(add: Any, record: Record) -> None:
    """Append one span record to a ``ScopeSpans.spans`` (its ``add``)."""
    s = _S
    start = record[s["start_ns"]]
    info = record[s["info"]]
    if info is not None and not _is_mapping(info):
        info = None
    attributes: dict[str, Any] = {}
    if info:
        _flatten(info, "", attributes, 0)
    thread = record[s["thread"]]
    if thread is not None:
        attributes.setdefault("thread.name", thread)
    items = list(attributes.items())
    trace_id, span_id, parent_id = (
        record[s["trace_id"]],
        record[s["span_id"]],
        record[s["parent_id"]],
    )
    span = add(
        # Ints from the hot path (the common case) converted inline; hex via _id_bytes.
        trace_id=trace_id.to_bytes(16, "big") if type(trace_id) is int else _id_bytes(trace_id, 16),
        span_id=span_id.to_bytes(8, "big") if type(span_id) is int else _id_bytes(span_id, 8),
        parent_span_id=(
            parent_id.to_bytes(8, "big") if type(parent_id) is int else _id_bytes(parent_id, 8)
        ),
        name=str(record[s["name"]]),
        kind=span_kind(info),
        start_time_unix_nano=start,
        end_time_unix_nano=start + (record[s["duration_ns"]] or 0),
        dropped_attributes_count=max(0, len(items) - MAX_ATTRIBUTES),
    )
    _add_attributes(span.attributes.add, items[:MAX_ATTRIBUTES])
    error_type = record[s["error_type"]]
    error_message = record[s["error_message"]]
    if error_type is not None or error_message is not None:
        span.status.code = _STATUS_ERROR
        span.status.message = str(error_message or error_type)[:MAX_VALUE_CHARS]
        event = span.events.add(name="exception", time_unix_nano=span.end_time_unix_nano)
        if error_type is not None:
            event.attributes.add(key="exception.type").value.string_value = str(error_type)
        if error_message is not None:
            event.attributes.add(key="exception.message").value.string_value = str(error_message)[
                :MAX_VALUE_CHARS
            ]


#: Fields of OTLP/JSON that hold ids: hex there, where protobuf's JSON mapping has base64.
_ID_KEYS: Final = ("traceId", "spanId", "parentSpanId")


def to_json(message: Message) -> bytes:
    """``message`` as OTLP/JSON: lowerCamelCase keys, hex ids, enums as integers, 64-bit
    integers as strings (protobuf's JSON mapping, with OTLP's rule for ids)."""
    import base64

    import orjson
    from google.protobuf.json_format import MessageToDict

    doc = MessageToDict(message, use_integers_for_enums=True)
    for resource_spans in doc.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                for holder in (span, *span.get("links", ())):
                    for key in _ID_KEYS:
                        if key in holder:
                            holder[key] = base64.b64decode(holder[key]).hex()
    return orjson.dumps(doc)
