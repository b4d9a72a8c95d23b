"""Cost of OTLP export per span: jobtrace's direct encoding vs SDK span objects + the SDK
exporter's encoding, in the same run, as a ratio.

Both sides turn the same spans into the bytes of one ``ExportTraceServiceRequest`` body
(http/protobuf), nothing sent:

- jobtrace: the span records as the recorder hands them to the ``otlp+http://`` sink,
  encoded by :class:`jobtrace.sinks.otlp_encoding.RecordEncoder` and serialized;
- OpenTelemetry: what an SDK user pays to get the same body: each span made as an SDK span
  (``tracer.start_span`` with the same ids, times and attributes, ``end``), collected by a
  span processor, then encoded by the OTLP exporter's own encoder
  (``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans``) and serialized.

The spans: a job's trace of ``--spans`` spans (default 5,000), each a child of the one
before it at depth 10, with three attributes (a string, an int, a nested dict, flattened),
one in ten with an error. Budget: jobtrace at least 3x cheaper per span (the issue quotes
~6 us against ~55 us); absolute times are printed for context only.

    python bench/bench_otlp.py [--quick] [--strict] [--spans N]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from typing import Any

from _common import Verdicts, banner, format_table, interleave, load_note, median, parse_args
from jobtrace import model

#: jobtrace must be at least this many times cheaper per span than the SDK path.
MIN_RATIO = 3.0


def make_records(n: int) -> list[model.Record]:
    host, pid = os.uname().nodename, os.getpid()
    fields = model.FIELDS[model.SPAN]
    records = []
    for i in range(n):
        error = i % 10 == 9
        values = {
            "trace_id": 0xABCDEF,
            "span_id": i + 1,
            "parent_id": i if i % 10 else None,
            "name": f"step-{i % 7}",
            "start_ns": 1_700_000_000_000_000_000 + i * 1_000,
            "duration_ns": 900,
            "info": {"path": f"/data/{i}.csv", "rows": i, "db": {"table": "t"}},
            "error_type": "ValueError" if error else None,
            "error_message": "bad row" if error else None,
            "job_id": "job-1",
            "host": host,
            "pid": pid,
            "thread": "MainThread",
        }
        records.append((model.SPAN, *(values.get(name) for name in fields)))
    return records


def jobtrace_case(records: list[model.Record]) -> float:
    from jobtrace.sinks.otlp_encoding import RecordEncoder

    encoder = RecordEncoder()
    gc.collect()
    start = time.perf_counter()
    body = encoder.traces(records).SerializeToString()
    elapsed = time.perf_counter() - start
    assert body
    return elapsed / len(records) * 1e9


def sdk_case(records: list[model.Record]) -> float:
    from opentelemetry import trace as otel
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

    class Given(IdGenerator):
        def __init__(self) -> None:
            self.next_span = 0

        def generate_trace_id(self) -> int:
            return 0xABCDEF

        def generate_span_id(self) -> int:
            return self.next_span

    class Collect(SpanProcessor):
        def __init__(self) -> None:
            self.spans: list[ReadableSpan] = []

        def on_end(self, span: ReadableSpan) -> None:
            self.spans.append(span)

    ids = Given()
    collected = Collect()
    resource = Resource({"service.name": "bench", "host.name": os.uname().nodename})
    provider = TracerProvider(resource=resource, id_generator=ids)
    provider.add_span_processor(collected)
    tracer = provider.get_tracer("jobtrace", "0")
    sampled = TraceFlags(TraceFlags.SAMPLED)
    # The fields are taken out of the records before the clock starts: only the SDK's work
    # is timed on its side.
    at = {name: i + 1 for i, name in enumerate(model.FIELDS[model.SPAN])}
    wanted = ("trace_id", "span_id", "parent_id", "name", "start_ns", "duration_ns", "info",
              "error_type", "error_message", "thread")  # fmt: skip
    rows = [tuple(record[at[name]] for name in wanted) for record in records]
    gc.collect()
    start = time.perf_counter()
    for row in rows:
        (trace_id, span_id, parent_id, name, start_ns, duration, info, error_type, error_message,
         thread) = row  # fmt: skip
        context: Any = None
        if parent_id:
            parent = SpanContext(trace_id, parent_id, is_remote=False, trace_flags=sampled)
            context = otel.set_span_in_context(otel.NonRecordingSpan(parent))
        ids.next_span = span_id
        attributes = {"path": info["path"], "rows": info["rows"], "db.table": "t",
                      "thread.name": thread}  # fmt: skip
        span = tracer.start_span(name, context=context, attributes=attributes, start_time=start_ns)
        if error_type is not None:
            span.set_status(Status(StatusCode.ERROR, error_message))
            span.add_event(
                "exception",
                {"exception.type": error_type, "exception.message": error_message},
                timestamp=start_ns + duration,
            )
        span.end(end_time=start_ns + duration)
    body = encode_spans(collected.spans).SerializeToString()
    elapsed = time.perf_counter() - start
    assert body and len(collected.spans) == len(records)
    provider.shutdown()
    return elapsed / len(records) * 1e9


def main(argv: list[str] | None = None) -> int:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--spans", type=int, default=5_000, help="spans per round")

    args = parse_args(__doc__.splitlines()[0], argv, extra=extra)
    rounds = 3 if args.quick else 9
    n = min(args.spans, 1_000) if args.quick else args.spans
    banner("OTLP export: encoding cost per span", args.quick, [load_note()])
    records = make_records(n)
    results = interleave(
        {"jobtrace": lambda: jobtrace_case(records), "opentelemetry": lambda: sdk_case(records)},
        rounds,
    )
    ours, theirs = median(results["jobtrace"]), median(results["opentelemetry"])
    ratio = theirs / ours
    verdicts = Verdicts("bench_otlp.py")
    word = verdicts.check(
        "OTLP encoding vs SDK spans + SDK encoding",
        ratio >= MIN_RATIO,
        f"{ratio:.1f}x cheaper per span (budget >= {MIN_RATIO:g}x)",
    )
    print(
        format_table(
            ["case", "ns/span (median)", "rounds min..max", "verdict"],
            [
                [
                    "jobtrace RecordEncoder",
                    f"{ours:,.0f}",
                    f"{min(results['jobtrace']):,.0f}..{max(results['jobtrace']):,.0f}",
                    "",
                ],
                [
                    "SDK spans + encode_spans",
                    f"{theirs:,.0f}",
                    f"{min(results['opentelemetry']):,.0f}..{max(results['opentelemetry']):,.0f}",
                    "",
                ],
                [f"ratio (SDK / jobtrace), {n} spans", f"{ratio:.1f}x", "", word],
            ],
        )
    )
    return verdicts.report(args.strict)


if __name__ == "__main__":
    raise SystemExit(main())
