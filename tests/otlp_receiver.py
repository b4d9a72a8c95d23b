"""An OTLP/HTTP collector double for tests (no collector is installable here): a small HTTP
server on 127.0.0.1 that decodes every export with ``opentelemetry-proto`` — protobuf or
OTLP/JSON, gzip or not — keeps the decoded requests, and answers as a test scripts it."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


@dataclass
class Received:
    """One request as it arrived: its path, headers, raw body and decoded message."""

    path: str
    headers: dict[str, str]
    body: bytes
    message: Message


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: an empty export response in the request's encoding


def decode_json(kind: type[Message], body: bytes) -> Message:
    """OTLP/JSON into a message: its hex ids turned into the base64 protobuf's JSON expects."""
    doc = json.loads(body)
    for resource_spans in doc.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                for holder in (span, *span.get("links", ())):
                    for key in _ID_KEYS:
                        if holder.get(key):
                            holder[key] = base64.b64encode(bytes.fromhex(holder[key])).decode()
    message = kind()
    json_format.ParseDict(doc, message)
    return message


class OTLPReceiver:
    """Collects OTLP/HTTP exports on ``/v1/traces`` and ``/v1/metrics``."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []
        #: Answers for the next requests, in order; then 200.
        self.script: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"otlp+http://127.0.0.1:{self.port}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        headers = {k.lower(): v for k, v in handler.headers.items()}
        kinds: dict[str, tuple[type[Message], type[Message]]] = {
            "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
            "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
        }
        path = handler.path
        json_encoded = headers.get("content-type", "").startswith("application/json")
        with self._lock:
            answer = self.script.popleft() if self.script else Answer()
        if answer.status == 200 and path.rsplit("/v1/", 1)[-1] in {"traces", "metrics"}:
            request_kind, response_kind = kinds["/v1/" + path.rsplit("/v1/", 1)[-1]]
            raw = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
            if json_encoded:
                message = decode_json(request_kind, raw)
            else:
                message = request_kind.FromString(raw)
            with self._lock:
                self.received.append(Received(path, headers, body, message))
            if answer.body is None:
                response = response_kind()
                answer.body = (
                    json_format.MessageToJson(response).encode()
                    if json_encoded
                    else response.SerializeToString()
                )
        data = answer.body or b""
        handler.send_response(answer.status)
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        handler.send_header(
            "Content-Type", "application/json" if json_encoded else ("application/x-protobuf")
        )
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    # -- what arrived ----------------------------------------------------------------------

    def messages(self, path_end: str) -> list[Any]:
        with self._lock:
            return [r.message for r in self.received if r.path.endswith(path_end)]

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """Every span received, with its resource's attributes as a plain dict."""
        out = []
        for request in self.messages("/v1/traces"):
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    out.extend((resource, span) for span in scope_spans.spans)
        return out

    def points(self) -> list[tuple[dict[str, Any], str, Any]]:
        """Every gauge point received: (resource attributes, metric name, point)."""
        out = []
        for request in self.messages("/v1/metrics"):
            for resource_metrics in request.resource_metrics:
                resource = attributes(resource_metrics.resource.attributes)
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        out.extend((resource, metric.name, p) for p in metric.gauge.data_points)
        return out


def any_value(value: Any) -> Any:
    """An AnyValue as the Python value it holds."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, which) if which else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


@contextmanager
def otlp_receiver() -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver()
    try:
        yield receiver
    finally:
        receiver.stop()
