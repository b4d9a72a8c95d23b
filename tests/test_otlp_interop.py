"""Interoperability: the official OpenTelemetry SDK exporter and jobtrace's exporter send the
same trace (same ids, names, timings, attributes, status, events, resource) to one OTLP/HTTP
receiver, and the decoded messages are compared field by field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace as otel
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

import jobtrace
from jobtrace import _config
from tests.otlp_receiver import OTLPReceiver, any_value, attributes, otlp_receiver


class GivenIds(IdGenerator):
    """Hands the SDK the ids jobtrace chose, so both sides send the same trace."""

    def __init__(self, trace_id: int, span_ids: list[int]) -> None:
        self.trace_id = trace_id
        self.span_ids = iter(span_ids)

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return next(self.span_ids)


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with otlp_receiver() as r:
        yield r
    _config.configure(url="memory://default", export="", install_signal_handlers=False)


def jobtrace_trace(receiver: OTLPReceiver) -> list[tuple[dict[str, Any], Any]]:
    """A job's trace (nested spans, attributes, an error) exported by jobtrace."""
    _config.configure(url="memory://interop", export=receiver.url, install_signal_handlers=False)
    load = {"path": "/data/a.csv", "rows": 120, "ok": True}
    with (
        jobtrace.job("interop", experiment="x", report=False, profile=False),
        jobtrace.Trace("load", info=load),
    ):
        with jobtrace.Trace("parse", info={"ratio": 0.25, "tags": ["a", "b"]}):
            pass
        with jobtrace.Trace("validate"):
            try:
                with jobtrace.Trace("row", info={"index": 7}):
                    raise ValueError("bad row 7")
            except ValueError:
                pass
    assert jobtrace.flush(timeout=30)
    spans = receiver.spans()
    receiver.received.clear()
    return sorted(spans, key=lambda pair: pair[1].start_time_unix_nano)


def sdk_trace(receiver: OTLPReceiver, ours: list[tuple[dict[str, Any], Any]]) -> None:
    """The same spans made with the SDK (ids, times, attributes given) and its exporter."""
    resource = ours[0][0]
    ids = GivenIds(
        int.from_bytes(ours[0][1].trace_id, "big"),
        [int.from_bytes(span.span_id, "big") for _, span in ours],
    )
    provider = TracerProvider(resource=Resource(resource), id_generator=ids)
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{receiver.port}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("jobtrace", jobtrace.__version__)
    for _, span in ours:
        context = None
        if span.parent_span_id:
            parent = SpanContext(
                span.trace_id and int.from_bytes(span.trace_id, "big"),
                int.from_bytes(span.parent_span_id, "big"),
                is_remote=False,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            context = otel.set_span_in_context(otel.NonRecordingSpan(parent))
        sdk_span = tracer.start_span(
            span.name,
            context=context,
            kind=SpanKind.INTERNAL,
            attributes={kv.key: any_value(kv.value) for kv in span.attributes},
            start_time=span.start_time_unix_nano,
        )
        if span.status.code == 2:
            sdk_span.set_status(Status(StatusCode.ERROR, span.status.message))
            for event in span.events:
                sdk_span.add_event(
                    event.name, attributes(event.attributes), timestamp=event.time_unix_nano
                )
        sdk_span.end(end_time=span.end_time_unix_nano)
    provider.shutdown()


def test_the_sdk_exporter_and_jobtraces_send_the_same_trace(receiver: OTLPReceiver) -> None:
    ours = jobtrace_trace(receiver)
    assert len(ours) == 4
    sdk_trace(receiver, ours)
    theirs = {span.span_id: (resource, span) for resource, span in receiver.spans()}
    requests = receiver.messages("/v1/traces")
    assert {rs.scope_spans[0].scope.name for r in requests for rs in r.resource_spans} == {
        "jobtrace"
    }
    assert len(theirs) == len(ours)
    for resource, span in ours:
        sdk_resource, sdk_span = theirs[span.span_id]
        assert sdk_resource == resource
        for name in (
            "trace_id",
            "span_id",
            "parent_span_id",
            "name",
            "kind",
            "start_time_unix_nano",
            "end_time_unix_nano",
            "dropped_attributes_count",
        ):
            assert getattr(sdk_span, name) == getattr(span, name), name
        assert list(sdk_span.attributes) == list(span.attributes)
        assert (sdk_span.status.code, sdk_span.status.message) == (
            span.status.code,
            span.status.message,
        )
        assert list(sdk_span.events) == list(span.events)
    errors = [span for _, span in ours if span.status.code == 2]
    assert [span.name for span in errors] == ["row"]
