"""OTLP export: jobtrace's records as OTLP spans and gauges, sent to an in-process OTLP/HTTP
receiver (tests/otlp_receiver.py) that decodes them with opentelemetry-proto, beside the
store or as the only sink, and OTLP's retry rules under faults."""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

import jobtrace
from jobtrace import _config, model
from jobtrace.errors import ConfigurationError, StoreError
from jobtrace.recorder import get_recorder
from jobtrace.sinks import http as http_sink
from jobtrace.sinks import refused_records
from jobtrace.sinks.memory import MemorySink
from jobtrace.sinks.otlp import OTLPSink
from jobtrace.sinks.otlp_encoding import (
    KIND_CLIENT,
    KIND_INTERNAL,
    KIND_SERVER,
    MAX_ARRAY,
    MAX_ATTRIBUTES,
    MAX_VALUE_CHARS,
    RecordEncoder,
    span_kind,
)
from tests.cli_helpers import jobtrace_cli
from tests.otlp_receiver import Answer, OTLPReceiver, any_value, attributes, otlp_receiver


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with otlp_receiver() as r:
        yield r
    # No export left behind for the next test.
    _config.configure(url="memory://default", export="", install_signal_handlers=False)


def span(n: int, name: str = "step", info: Any = None, **fields: Any) -> model.Record:
    values = {
        "trace_id": f"{1:032x}",
        "span_id": f"{n:016x}",
        "parent_id": None,
        "name": name,
        "start_ns": 1_700_000_000_000_000_000 + n,
        "duration_ns": 1_000,
        "info": info,
        "error_type": None,
        "error_message": None,
        "job_id": None,
        "host": "h1",
        "pid": 42,
        "thread": "MainThread",
        **fields,
    }
    # By name: a field added to spans later (a service) is None here.
    return (model.SPAN, *(values.get(f) for f in model.FIELDS[model.SPAN]))


def export_to(receiver: OTLPReceiver, query: str = "", **kwargs: Any) -> MemorySink:
    """Record into a memory store with an export to ``receiver``; the store's sink."""
    _config.configure(
        url="memory://otlp-store",
        export=receiver.url + query,
        install_signal_handlers=False,
        **kwargs,
    )
    return MemorySink.named("otlp-store")


# -- mapping -----------------------------------------------------------------------------


def test_a_jobs_trace_arrives_with_its_ids_links_timings_and_identity(
    receiver: OTLPReceiver,
) -> None:
    store = export_to(receiver)
    info = {"db": {"rows": 3, "table": "t"}, "path": "/x"}
    with (
        jobtrace.job("train", experiment="nightly", report=False, profile=False) as job,
        jobtrace.Trace("outer", info=info),
        jobtrace.Trace("inner"),
    ):
        pass
    assert jobtrace.flush(timeout=30)

    stored = {r[2]: r for r in store.of_kind(model.SPAN)}
    received = {span.span_id.hex(): (resource, span) for resource, span in receiver.spans()}
    assert set(received) == {model.to_dict(r)["span_id"] for r in stored.values()}
    for record in stored.values():
        d = model.to_dict(record)
        resource, sent = received[d["span_id"]]
        assert sent.trace_id.hex() == d["trace_id"]
        assert sent.parent_span_id.hex() == (d["parent_id"] or "")
        assert sent.name == d["name"]
        assert sent.start_time_unix_nano == d["start_ns"]
        assert sent.end_time_unix_nano == d["start_ns"] + d["duration_ns"]
        assert sent.kind == KIND_INTERNAL
        assert resource["service.name"] == "train"
        assert resource["jobtrace.job.id"] == job.id
        assert resource["jobtrace.job.name"] == "train"
        assert resource["jobtrace.experiment"] == "nightly"
        assert resource["host.name"] == d["host"]
        assert resource["process.pid"] == d["pid"]
    outer = received[model.to_dict(next(r for r in stored.values() if r[4] == "outer"))["span_id"]]
    assert attributes(outer[1].attributes) == {
        "db.rows": 3,
        "db.table": "t",
        "path": "/x",
        "thread.name": "MainThread",
    }
    inner = next(s for _, s in received.values() if s.name == "inner")
    assert inner.parent_span_id == outer[1].span_id
    request = receiver.messages("/v1/traces")[0]
    scope = request.resource_spans[0].scope_spans[0].scope
    assert (scope.name, scope.version) == ("jobtrace", jobtrace.__version__)


def test_spans_are_grouped_per_service_host_pid_and_job() -> None:
    encoder = RecordEncoder()
    records = [
        span(1, host="a", pid=1),
        span(2, host="a", pid=1),
        span(3, host="b", pid=1),
        span(4, host="a", pid=2),
        span(5, host="a", pid=1, job_id="j"),
    ]
    request: Any = encoder.traces(records)
    groups = [
        (attributes(rs.resource.attributes), [s.name for ss in rs.scope_spans for s in ss.spans])
        for rs in request.resource_spans
    ]
    assert len(groups) == 4
    assert [len(names) for _, names in groups] == [2, 1, 1, 1]
    assert groups[0][0]["service.name"] == encoder.fallback_service
    assert groups[3][0]["jobtrace.job.id"] == "j"


def test_an_error_span_has_an_error_status_and_an_exception_event() -> None:
    request: Any = RecordEncoder().traces(
        [span(1, error_type="ValueError", error_message="bad row 7")]
    )
    sent = request.resource_spans[0].scope_spans[0].spans[0]
    assert sent.status.code == 2  # STATUS_CODE_ERROR
    assert sent.status.message == "bad row 7"
    (event,) = sent.events
    assert event.name == "exception"
    assert event.time_unix_nano == sent.end_time_unix_nano
    assert attributes(event.attributes) == {
        "exception.type": "ValueError",
        "exception.message": "bad row 7",
    }


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def test_attributes_take_otlp_types_flattened_and_bounded() -> None:
    info = {
        "s": "x" * (MAX_VALUE_CHARS + 10),
        "i": 7,
        "big": 1 << 70,
        "f": 0.5,
        "b": True,
        "raw": b"\x00\x01",
        "none": None,
        "list": list(range(MAX_ARRAY + 5)),
        "mixed": [1, "a", [2]],
        "nested": {"a": {"b": {"c": 1}}},
        "obj": Opaque(),
    }
    request: Any = RecordEncoder().traces([span(1, info=info)])
    sent = attributes(request.resource_spans[0].scope_spans[0].spans[0].attributes)
    assert sent["s"] == "x" * MAX_VALUE_CHARS
    assert sent["i"] == 7 and sent["f"] == 0.5 and sent["b"] is True
    assert sent["big"] == str(1 << 70)
    assert sent["raw"] == b"\x00\x01"
    assert "none" not in sent
    assert sent["list"] == list(range(MAX_ARRAY))
    assert sent["mixed"] == [1, "a", [2]]
    assert sent["nested.a.b.c"] == 1
    assert sent["obj"] == "<opaque>"

    many = {f"k{i}": i for i in range(MAX_ATTRIBUTES + 50)}
    request = RecordEncoder().traces([span(1, info=many)])
    sent_span = request.resource_spans[0].scope_spans[0].spans[0]
    assert len(sent_span.attributes) == MAX_ATTRIBUTES
    assert sent_span.dropped_attributes_count == 51  # 50 more keys and thread.name


def test_span_kind_is_server_for_middleware_client_for_outgoing_calls() -> None:
    assert span_kind({"http.request.method": "GET", "url.path": "/x"}) == KIND_SERVER
    assert span_kind({"http.request.method": "GET", "url.full": "http://a/x"}) == KIND_CLIENT
    assert span_kind({"path": "/x"}) == KIND_INTERNAL
    assert span_kind(None) == KIND_INTERNAL


def test_int_ids_from_the_hot_path_and_hex_ids_encode_alike() -> None:
    as_int = span(5, trace_id=0xABC, span_id=5, parent_id=4)
    as_hex = span(5, trace_id=f"{0xABC:032x}", span_id=f"{5:016x}", parent_id=f"{4:016x}")
    one: Any = RecordEncoder().traces([as_int])
    other: Any = RecordEncoder().traces([as_hex])
    assert one.SerializeToString() == other.SerializeToString()
    sent = one.resource_spans[0].scope_spans[0].spans[0]
    assert sent.trace_id.hex() == f"{0xABC:032x}" and sent.parent_span_id.hex() == f"{4:016x}"


def test_metrics_arrive_as_gauges_at_their_time_without_a_step_attribute(
    receiver: OTLPReceiver,
) -> None:
    export_to(receiver)
    with jobtrace.job("fit", report=False, profile=False) as job:
        for step in range(3):
            jobtrace.log_metric("loss", 1.0 / (step + 1), step=step, timestamp=1_700_000_000 + step)
        jobtrace.log_metric("acc", float("nan"), timestamp=1_700_000_000)
    assert jobtrace.flush(timeout=30)
    points = receiver.points()
    loss = [(p.time_unix_nano, p.as_double) for _, name, p in points if name == "loss"]
    assert loss == [((1_700_000_000 + s) * 10**9, 1.0 / (s + 1)) for s in range(3)]
    (acc,) = [p for _, name, p in points if name == "acc"]
    assert acc.as_double != acc.as_double  # NaN arrives as NaN
    for resource, _, point in points:
        assert resource["jobtrace.job.id"] == job.id
        assert resource["service.name"] == "fit"
        assert list(point.attributes) == []


# -- encodings and headers ------------------------------------------------------------------


def test_http_json_has_hex_ids_camel_case_keys_and_int64_as_strings(
    receiver: OTLPReceiver,
) -> None:
    sink = OTLPSink(receiver.url + "?protocol=http/json")
    records = [span(1, parent_id=f"{9:016x}", info={"n": 5})]
    sink.write(records)
    (received,) = receiver.received
    assert received.headers["content-type"] == "application/json"
    doc = orjson.loads(received.body)
    sent = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert sent["traceId"] == f"{1:032x}"
    assert sent["spanId"] == f"{1:016x}" and sent["parentSpanId"] == f"{9:016x}"
    assert sent["startTimeUnixNano"] == str(1_700_000_000_000_000_001)
    assert sent["attributes"][0] == {"key": "n", "value": {"intValue": "5"}}
    assert sent["kind"] == KIND_INTERNAL
    # The receiver decoded it into the same message the protobuf encoding sends.
    assert received.message == RecordEncoder().traces(records)


def test_gzip_compresses_the_body_and_headers_come_from_the_otel_variable(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-scope-orgid=team%20a,authorization=k")
    sink = OTLPSink(receiver.url + "?compression=gzip")
    sink.write([span(n) for n in range(1, 300)])
    (received,) = receiver.received
    assert received.headers["content-encoding"] == "gzip"
    assert received.headers["x-scope-orgid"] == "team a"
    assert received.headers["authorization"] == "k"
    assert len(gzip.decompress(received.body)) > len(received.body)
    assert len(receiver.spans()) == 299


@pytest.mark.parametrize(
    "url",
    [
        "otlp+http://",
        "otlp+http://host:4318?protocol=grpc",
        "otlp+http://host:4318?compression=zstd",
        "otlp+http://host:4318?timeout=3",
    ],
)
def test_a_bad_otlp_url_is_refused_when_configured(url: str) -> None:
    with pytest.raises(ConfigurationError, match="OTLP URL"):
        _config.configure(url="memory://x", export=url, install_signal_handlers=False)


def test_an_export_equal_to_the_store_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="is the store URL itself"):
        _config.configure(url="memory://x", export="memory://x", install_signal_handlers=False)


# -- OTLP's retry rules ------------------------------------------------------------------


def test_503_with_retry_after_is_retried_after_it_and_nothing_is_lost(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(http_sink.time, "sleep", pauses.append)
    receiver.script.append(Answer(503, {"Retry-After": "1.5"}))
    receiver.script.append(Answer(429))
    OTLPSink(receiver.url, timeout=30).write([span(n) for n in range(1, 101)])
    assert len(receiver.spans()) == 100
    assert pauses[0] == 1.5  # the collector's Retry-After, over the 0.1 s backoff
    assert pauses[1] == 2 * http_sink.FIRST_DELAY  # then the backoff goes on doubling


def test_a_retry_after_past_the_writes_time_reaches_the_recorder(receiver: OTLPReceiver) -> None:
    receiver.script.extend([Answer(503, {"Retry-After": "120"})] * 2)
    with pytest.raises(StoreError) as caught:
        OTLPSink(receiver.url, timeout=1).write([span(1)])
    assert caught.value.retry_after == 120
    assert receiver.received == []


def test_400_is_dropped_counted_and_logged_once_not_retried(
    receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    before = refused_records().get(model.SPAN, 0)
    receiver.script.append(Answer(400, body=b"bad span"))
    sink = OTLPSink(receiver.url)
    with caplog.at_level(logging.WARNING, logger="jobtrace.sinks.otlp"):
        sink.write([span(n) for n in range(1, 11)])  # returns: nothing to retry
    assert refused_records()[model.SPAN] - before == 10
    assert sink.rejected == 10
    assert receiver.script == type(receiver.script)()  # exactly one request was made
    assert receiver.received == []
    (line,) = [r.getMessage() for r in caplog.records]
    assert "dropped 10 span record(s)" in line and "HTTP 400" in line
    sink.write([span(11)])  # the next batch goes through
    assert len(receiver.spans()) == 1


def test_partial_success_is_logged_and_its_rejected_spans_counted(
    receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    answer = ExportTraceServiceResponse()
    answer.partial_success.rejected_spans = 2
    answer.partial_success.error_message = "spans too old"
    receiver.script.append(Answer(200, body=answer.SerializeToString()))
    sink = OTLPSink(receiver.url)
    with caplog.at_level(logging.WARNING, logger="jobtrace.sinks.otlp"):
        sink.write([span(n) for n in range(1, 6)])
    assert sink.rejected == 2
    assert any("rejected 2 of 5" in r.getMessage() and "spans too old" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_401_keeps_the_batch_for_later_and_says_what_to_fix(receiver: OTLPReceiver) -> None:
    receiver.script.append(Answer(401))
    with pytest.raises(StoreError, match="OTEL_EXPORTER_OTLP_HEADERS"):
        OTLPSink(receiver.url).write([span(1)])


def test_a_retried_batch_does_not_send_its_delivered_spans_again(receiver: OTLPReceiver) -> None:
    sink = OTLPSink(receiver.url, timeout=2)
    records = [span(1), (model.METRIC, "j", "loss", 0, 1.0, 1_700_000_000.0)]
    receiver.script.extend([Answer(200), *[Answer(503)] * 8])  # spans in, metrics refused
    with pytest.raises(StoreError):
        sink.write(records, batch_id="b1")
    receiver.script.clear()
    sink.write(records, batch_id="b1")  # the recorder's retry of the same batch
    assert len(receiver.spans()) == 1
    assert len(receiver.points()) == 1


def test_a_collector_down_then_up_gets_every_span_from_the_spool(
    receiver: OTLPReceiver,
) -> None:
    batch = 500
    total = 10 * batch
    port = receiver.port
    receiver.stop()
    store = export_to(receiver, http_timeout=0.5)
    export = get_recorder().export
    assert export is not None
    get_recorder()._batch_size = export._batch_size = batch  # the flush batch: 10x is sent
    with jobtrace.job("etl", report=False, profile=False):
        for i in range(total):
            with jobtrace.Trace("row", info={"i": i}):
                pass
    jobtrace.flush(timeout=30)  # the store takes them; the export spools them
    assert len(store.of_kind(model.SPAN)) == total  # the store never waited on it
    spooled = [f for f in export.spool.files() if f.state != "quarantined"]
    assert sum(f.records or 0 for f in spooled) >= total  # the spans, and the job's snapshots

    receiver.port = port
    receiver.start()
    assert jobtrace.flush(timeout=60)
    ids = [s.span_id for _, s in receiver.spans()]
    assert len(ids) == total and len(set(ids)) == total
    assert export.spool.files() == []
    sent = sorted(any_value(a.value) for _, s in receiver.spans() for a in s.attributes
                  if a.key == "i")  # fmt: skip
    assert sent == list(range(total))


def test_otlp_as_the_only_sink_sends_spans_and_ignores_other_records(
    receiver: OTLPReceiver,
) -> None:
    _config.configure(url=receiver.url, install_signal_handlers=False)
    with jobtrace.job("solo", report=False, profile=False), jobtrace.Trace("only"):
        pass
    assert jobtrace.flush(timeout=30)
    ((resource, sent),) = receiver.spans()
    assert sent.name == "only" and resource["service.name"] == "solo"


# -- the command line and the recorder ------------------------------------------------------


def test_jobtrace_run_export_sends_the_scripts_spans_before_it_exits(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    script = tmp_path / "work.py"
    script.write_text(
        "import jobtrace\n"
        "for i in range(3):\n"
        "    with jobtrace.Trace('item', info={'i': i}):\n"
        "        pass\n"
    )
    jobtrace_cli("run", "--export", receiver.url, str(script), cwd=tmp_path, check=True)
    spans = receiver.spans()
    assert sorted(s.name for _, s in spans) == ["item"] * 3
    assert {resource["service.name"] for resource, _ in spans} == {"work"}
    assert {resource["jobtrace.job.name"] for resource, _ in spans} == {"work"}


def test_a_bad_export_url_is_a_one_line_error(tmp_path: Path) -> None:
    script = tmp_path / "ok.py"
    script.write_text("print('ran')\n")
    bad = "otlp+http://collector:4318?protocol=grpc"
    result = jobtrace_cli("run", "--export", bad, str(script), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "protocol must be one of" in result.stderr


def test_the_recorder_waits_for_a_retry_after_before_trying_again() -> None:
    recorder = get_recorder()
    error = StoreError("busy")
    error.retry_after = 90.0
    before = time.monotonic()
    recorder._on_sink_failure(error)
    assert recorder._retry_at >= before + 90.0
    recorder._on_sink_failure(StoreError("down"))  # no Retry-After: the backoff alone
    assert recorder._retry_at < before + 90.0


def test_reconfiguring_replaces_the_export_and_turning_it_off_stops_it(
    receiver: OTLPReceiver,
) -> None:
    export_to(receiver)
    first = get_recorder().export
    assert first is not None
    export_to(receiver)  # the same settings: the same export
    assert get_recorder().export is first
    _config.configure(url="memory://otlp-store", export="", install_signal_handlers=False)
    assert get_recorder().export is None
    with jobtrace.Trace("after"):
        pass
    assert jobtrace.flush(timeout=30)
    assert receiver.spans() == []
