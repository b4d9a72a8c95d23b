"""``otlp+http://`` and ``otlp+https://``: spans and metrics to an OpenTelemetry collector
(Jaeger, Tempo, Grafana Alloy, any OTLP/HTTP receiver), usually as an export beside the
store (``JOBTRACE_EXPORT=otlp+http://collector:4318``), or as the only sink.

``otlp+http://host:4318[/prefix][?protocol=http/json&compression=gzip]`` posts spans to
``{prefix}/v1/traces`` and :func:`jobtrace.log_metric` points to ``{prefix}/v1/metrics``,
encoded straight from the records (:mod:`jobtrace.sinks.otlp_encoding`; needs the ``otlp``
extra, ``pip install 'jobtrace[otlp]'``). ``protocol`` is ``http/protobuf`` (default) or
``http/json``; ``compression`` is ``none`` (default) or ``gzip``. Headers for the collector
(a tenant, a token) come from ``OTEL_EXPORTER_OTLP_HEADERS`` (``key=value,key2=value2``, as
the OpenTelemetry SDKs read it). Other record kinds (profiles, items, series) are not sent.

OTLP's rules, on the transport the ``http://`` sink uses (:class:`~jobtrace.sinks.http.HTTPPoster`):

- 429, 502, 503, 504 and connection errors: retried with a capped exponential backoff, or
  after the collector's ``Retry-After`` when that is longer, within one write's time
  (``JOBTRACE_HTTP_TIMEOUT``); then the batch goes to the recorder's disk spool and is
  retried later (no sooner than ``Retry-After``), so a collector that stays down loses
  nothing up to the spool's cap, and the job never waits on it.
- 2xx with a partial success (``rejected_spans``, ``rejected_data_points``): logged and the
  rejected records counted (:func:`jobtrace.sinks.refused_records`).
- 401, 403, 404, 405: the sink is set up wrong (a token, a path), not the data: raised, so
  the batch is spooled, with one line saying what to fix.
- Any other status (400, 413 after halving down to one record, 500…): not retryable under
  OTLP; the records are dropped, counted, and logged (first ones of each status).

Each request holds at most :data:`REQUEST_SPANS` spans or points. A batch retried after
its spans were delivered but its metrics were not does not send its spans again.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit, urlunsplit

from jobtrace import __version__, _config
from jobtrace._config import mask_url
from jobtrace._ids import time_ordered_id
from jobtrace.errors import ConfigurationError, StoreError
from jobtrace.model import JOB, METRIC, SPAN, Record
from jobtrace.sinks import count_refused
from jobtrace.sinks.http import HTTPPoster, _Deadline, deadline_error

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from jobtrace.sinks.otlp_encoding import RecordEncoder

__all__ = ["ENV_OTLP_HEADERS", "REQUEST_SPANS", "RETRY_STATUSES", "OTLPSink", "check_url"]

log = logging.getLogger("jobtrace.sinks.otlp")

#: The OpenTelemetry SDKs' variable for the collector's headers, read here too.
ENV_OTLP_HEADERS: Final = "OTEL_EXPORTER_OTLP_HEADERS"
#: The statuses OTLP/HTTP says to retry.
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
#: Statuses that say the sink is set up wrong (kept in the spool, not dropped).
_SETUP_STATUSES: Final = frozenset({401, 403, 404, 405})
#: Most spans (or metric points) per request: a few hundred kB, far under any collector's
#: default body limit.
REQUEST_SPANS: Final = 2_000
_PROTOCOLS: Final = ("http/protobuf", "http/json")
_COMPRESSIONS: Final = ("none", "gzip")
#: Batch parts already delivered, remembered so a retried batch does not send them again.
_DELIVERED_KEPT: Final = 1024
_DROP_LOG_LIMIT: Final = 20


class OTLPSink:
    """Sends span and metric records to an OTLP/HTTP collector."""

    accepts_batch_id: ClassVar[bool] = True
    #: The record kinds used (job records name the resources); an export queues only these.
    kinds: ClassVar[frozenset[str]] = frozenset({SPAN, METRIC, JOB})

    def __init__(self, url: str, *, timeout: float | None = None) -> None:
        parts, options = check_url(url)
        self.protocol = options.get("protocol", "http/protobuf")
        self.compression = options.get("compression", "none")
        self.url = url
        #: Most seconds one write() may take (the ``http_timeout`` setting unless given).
        self.timeout = _config.current().http_timeout if timeout is None else timeout
        scheme = parts.scheme.removeprefix("otlp+")
        base = urlunsplit((scheme, parts.netloc, "", "", ""))
        self._poster = HTTPPoster(base, retry_statuses=RETRY_STATUSES)
        prefix = parts.path.rstrip("/")
        self._paths = {SPAN: f"{prefix}/v1/traces", METRIC: f"{prefix}/v1/metrics"}
        content_type = (
            "application/json" if self.protocol == "http/json" else ("application/x-protobuf")
        )
        self._headers = {
            **_otlp_headers(os.environ.get(ENV_OTLP_HEADERS, "")),
            "Content-Type": content_type,
            "User-Agent": f"jobtrace/{__version__}",
        }
        if self.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._encoder: RecordEncoder | None = None
        self._delivered: deque[tuple[str, str, int]] = deque(maxlen=_DELIVERED_KEPT)
        #: Records the collector refused (dropped, counted), all kinds together.
        self.rejected = 0
        self._logged = 0

    def write(self, records: Sequence[Record], batch_id: str | None = None) -> None:
        """Send the batch's spans and metric points within :attr:`timeout` seconds; raise
        :class:`~jobtrace.errors.StoreError` if the collector cannot take them now."""
        encoder = self._encoder
        if encoder is None:
            from jobtrace.sinks.otlp_encoding import RecordEncoder

            encoder = self._encoder = RecordEncoder()
        encoder.note_jobs(records)
        spans = [r for r in records if r[0] == SPAN]
        points = [r for r in records if r[0] == METRIC]
        if not spans and not points:
            return
        batch_id = batch_id or time_ordered_id()
        self._poster.begin(self.timeout)
        try:
            for kind, chosen, build in (
                (SPAN, spans, encoder.traces),
                (METRIC, points, encoder.metrics),
            ):
                for part, start in enumerate(range(0, len(chosen), REQUEST_SPANS)):
                    key = (batch_id, kind, part)
                    if key in self._delivered:
                        continue
                    self._send(kind, chosen[start : start + REQUEST_SPANS], build)
                    self._delivered.append(key)
        except _Deadline as exc:
            raise deadline_error(self.url, self.timeout, exc) from None

    def close(self) -> None:
        self._poster.close()

    def after_fork(self) -> None:
        """Forget the parent's connection (the child must not speak on it)."""
        self._poster.after_fork()

    # -- one request -------------------------------------------------------------------

    def _send(
        self, kind: str, records: list[Record], build: Callable[[list[Record]], Message]
    ) -> None:
        body = self._encode(build(records))
        answer = self._poster.post(self._paths[kind], body, self._headers)
        status = answer.status
        if 200 <= status < 300:
            self._partial_success(kind, records, answer.body)
            return
        if status in _SETUP_STATUSES:
            raise StoreError(
                f"{mask_url(self.url)} answered HTTP {status} to {self._paths[kind]}: check "
                f"the URL's path and the headers in {ENV_OTLP_HEADERS} (a token, a tenant); "
                f"records are spooled meanwhile [{answer.body[:200]!r}]"
            )
        if status == 413 and len(records) > 1:
            middle = len(records) // 2
            self._send(kind, records[:middle], build)
            self._send(kind, records[middle:], build)
            return
        # OTLP: any other status will not change by sending the same data again.
        self._drop(records, f"HTTP {status} {answer.body[:200]!r}")

    def _encode(self, message: Message) -> bytes:
        if self.protocol == "http/json":
            from jobtrace.sinks.otlp_encoding import to_json

            body = to_json(message)
        else:
            body = message.SerializeToString()
        if self.compression == "gzip":
            # Level 5: most of level 9's ratio on span batches at a fraction of its time.
            body = gzip.compress(body, compresslevel=5)
        return body

    def _partial_success(self, kind: str, records: list[Record], body: bytes) -> None:
        """Log and count what a 2xx answer says the collector rejected."""
        if not body:
            return
        rejected, message = _rejected(kind, body, self.protocol)
        if rejected or message:
            what = f"rejected {rejected} of {len(records)}" if rejected else "accepted with"
            self._log(f"{mask_url(self.url)} {what} {kind} record(s): {message or '-'}")
        for record in records[: min(rejected, len(records))]:
            self.rejected += 1
            count_refused(record)

    def _drop(self, records: list[Record], problem: str) -> None:
        self.rejected += len(records)
        for record in records:
            count_refused(record)
        self._log(
            f"jobtrace: dropped {len(records)} {records[0][0]} record(s) that "
            f"{mask_url(self.url)} refused ({problem}); OTLP says not to retry them"
        )

    def _log(self, line: str) -> None:
        # The first ones only: a collector refusing everything must not flood the host's log.
        self._logged += 1
        if self._logged <= _DROP_LOG_LIMIT:
            log.warning(
                "%s%s",
                line,
                "; further ones are counted only" if self._logged == _DROP_LOG_LIMIT else "",
            )


def check_url(url: str) -> tuple[SplitResult, dict[str, str]]:
    """The URL's parts and options; raises :class:`ConfigurationError` naming what is wrong
    (checked when settings are resolved, so a typo fails at ``configure``, not later)."""
    parts = urlsplit(url)
    if parts.scheme not in {"otlp+http", "otlp+https"} or not parts.hostname:
        raise ConfigurationError(
            f"OTLP URL {mask_url(url)!r} needs a host, e.g. otlp+http://127.0.0.1:4318"
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - {"protocol", "compression"})
    if unknown or parts.fragment:
        raise ConfigurationError(
            f"OTLP URL {mask_url(url)!r}: unknown option(s) {', '.join(unknown) or '#'}; "
            "known: protocol=http/protobuf|http/json, compression=none|gzip"
        )
    if options.get("protocol", _PROTOCOLS[0]) not in _PROTOCOLS or (
        options.get("compression", _COMPRESSIONS[0]) not in _COMPRESSIONS
    ):
        raise ConfigurationError(
            f"OTLP URL {mask_url(url)!r}: protocol must be one of {', '.join(_PROTOCOLS)} "
            f"and compression one of {', '.join(_COMPRESSIONS)}"
        )
    _otlp_headers(os.environ.get(ENV_OTLP_HEADERS, ""))
    return parts, options


def _rejected(kind: str, body: bytes, protocol: str) -> tuple[int, str]:
    """(rejected count, message) of an export response's ``partial_success``."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceResponse,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    response: Any = ExportTraceServiceResponse() if kind == SPAN else ExportMetricsServiceResponse()
    try:
        if protocol == "http/json":
            from google.protobuf.json_format import Parse, ParseError

            try:
                Parse(body, response, ignore_unknown_fields=True)
            except ParseError:
                return 0, ""
        else:
            response.ParseFromString(body)
    except (DecodeError, ValueError):
        return 0, ""  # not an OTLP answer (a proxy's page): nothing to learn from it
    partial = response.partial_success
    count = partial.rejected_spans if kind == SPAN else partial.rejected_data_points
    return int(count), str(partial.error_message)


def _otlp_headers(raw: str) -> dict[str, str]:
    """``key=value,key2=value2`` (values URL-encoded) as headers; bad entries are refused."""
    headers: dict[str, str] = {}
    for entry in raw.split(","):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(
                f"{ENV_OTLP_HEADERS} has an entry without key=value: {entry.strip()[:40]!r}"
            )
        headers[unquote(key.strip())] = unquote(value.strip())
    return headers
