"""``http://`` and ``https://``: send record batches to a ``jobtrace serve`` server.

Each batch is one ``POST {url}/api/v1/batches`` carrying the recorder's batch id, so the
server stores it once however often it arrives: a retry after a lost response, a replay
from the spool. The sink runs on the recorder's writer thread only (the host program never
waits on the network) and uses the standard library's ``http.client`` over one keep-alive
connection, so a recorded job loads no HTTP package.

Bad records. The sink asks for lenient handling (``Prefer: handling=lenient``, see
:mod:`jobtrace.server.routes.batches`): the server stores every record it can, the batch id
with them, and answers 201 (200 for a batch it had already) with ``rejected``: the records
it dropped, each ``{"index", "kind", "field", "message"}``. The sink counts each one
(:func:`jobtrace.sinks.refused_records`, :attr:`HTTPSink.rejected`) and logs the first of
each kind and field once. So one record the server or its store refuses never holds up its
batch, nor the spool and every batch behind it. A server that answers strictly instead (a
422 naming ``detail.index``) gets the same result one record at a time: that record is
dropped and the rest sent again.

Time. One :meth:`HTTPSink.write` takes at most :data:`WRITE_TIMEOUT` seconds (the setting
``http_timeout``, ``JOBTRACE_HTTP_TIMEOUT``), retries included; past it,
:class:`~jobtrace.errors.StoreError` is raised and the recorder spools the batch and
retries the server later with its own, longer backoff, under the same id. The server is
not given longer because a batch is large; batches are kept small instead: at most
:data:`REQUEST_RECORDS` records per request (a fraction of a second of server work), each
part under an id derived from the batch's, so a replay repeats the same parts and the
server skips those it has. A server slower than the timeout still makes progress: the part
it was committing is acknowledged as a duplicate on the replay.

- Connection errors, 5xx and 429: retried (:data:`ATTEMPTS` at most, with a short
  exponential backoff, or after the server's ``Retry-After`` when that is longer) while
  time is left (:class:`HTTPPoster`, which the ``otlp+http://`` sink uses too); a request
  that timed out is not retried here (the server may still be working on it): the
  recorder's replay does that, later, and no sooner than a ``Retry-After`` asked.
- 413 (the body is over the server's limit): the batch is halved, each half sent under an
  id derived from the batch's, until it fits; a single record too large by itself is
  dropped (counted and logged, as above).
- 401/403 (no token, a revoked one, or records of a job another token created): raised,
  so the batch is spooled, with one line saying to set ``JOBTRACE_TOKEN``; it is delivered
  once a process with an accepted token replays the spool.
- Any other 4xx (wrong URL, a proxy refusing): raised, so the batch is kept in the spool.

Several servers. ``http://a:8000,http://b:8000`` (comma-separated URLs of servers sharing
one store): the sink sends to one while it answers and, on a connection error, a 5xx or a
429, tries the next at once (then waits and goes round again, as above); after a request
that timed out, the recorder's replay goes to the next one. A batch resent to another
server is stored once: the batch id is claimed in the store they share.

The token is ``JOBTRACE_TOKEN``, read when the sink is opened and sent as
``Authorization: Bearer …``.
"""

from __future__ import annotations

import http.client
import logging
import math
import os
import socket
import time
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple
from urllib.parse import urlsplit

from jobtrace import __version__, _config
from jobtrace._config import ENV_HTTP_TIMEOUT, ENV_TOKEN, mask_url
from jobtrace._ids import time_ordered_id
from jobtrace.errors import ConfigurationError, StoreError
from jobtrace.limits import cap_record
from jobtrace.model import Record, to_list, to_lists
from jobtrace.sinks import count_refused
from jobtrace.sinks.file import json_loads

__all__ = [
    "ATTEMPTS",
    "BATCHES_PATH",
    "CONNECT_TIMEOUT",
    "MAX_DELAY",
    "MAX_RETRY_AFTER",
    "REQUEST_RECORDS",
    "WRITE_TIMEOUT",
    "Answer",
    "HTTPPoster",
    "HTTPSink",
    "deadline_error",
    "encode_batch",
    "parse_retry_after",
]

log = logging.getLogger("jobtrace.sinks.http")

#: Where batches go, under the server URL's path.
BATCHES_PATH = "/api/v1/batches"
#: Most seconds one :meth:`HTTPSink.write` may take, retries included, before the batch is
#: handed back to the recorder for spooling: the default of the ``http_timeout`` setting
#: (``JOBTRACE_HTTP_TIMEOUT``), which overrides it. Short
#: enough that an exit flush facing a hung server still has time to spool what is left;
#: long enough for a request of :data:`REQUEST_RECORDS` records to a busy server.
WRITE_TIMEOUT = _config.DEFAULT_HTTP_TIMEOUT
#: Most seconds to open a connection (a fraction of WRITE_TIMEOUT, so one retry fits).
CONNECT_TIMEOUT = 2.0
#: Most attempts per request (each also limited by the time left).
ATTEMPTS = 4
#: First pause between attempts (doubled after each, up to MAX_DELAY).
FIRST_DELAY = 0.1
#: Longest pause between two attempts of one request, unless the server's Retry-After asks
#: for longer (the write's time still bounds it: past that, the recorder retries later).
MAX_DELAY = 2.0
#: Longest Retry-After honoured: a server asking for more is retried after this many seconds.
MAX_RETRY_AFTER = 300.0
#: Most records per request. At the slowest server ingest measured (~8,000 spans/s) this is
#: well under a second of work, so a healthy server always answers within WRITE_TIMEOUT.
REQUEST_RECORDS = 5_000
#: The ``Prefer`` header asking the server to drop bad records itself and list them.
PREFER_LENIENT = "handling=lenient"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_REJECT_LOG_LIMIT = 20


def encode_batch(batch_id: str, records: Sequence[Record]) -> bytes:
    """The request body: ``{"id": …, "records": [[kind, field, …], …]}`` (the model's
    positional codec, :func:`jobtrace.model.to_list`, via :func:`~jobtrace.model.to_lists`)."""
    import orjson

    body = {"id": batch_id, "records": to_lists(records)}
    option = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    try:
        return orjson.dumps(body, default=repr, option=option)
    except (TypeError, ValueError):
        # Rare: a string orjson refuses (a lone surrogate from a non-UTF-8 file name), a
        # document nested too deep for it. Each record is then bounded as the store writer
        # would bound it (jobtrace.limits), so the server stores what a local store would.
        body["records"] = [to_list(cap_record(r)) for r in records]
        return orjson.dumps(body, default=repr, option=option)


class HTTPSink:
    """Posts batches to a jobtrace server over one keep-alive connection; given several
    servers (comma-separated URLs), fails over to the next when one does not answer."""

    accepts_batch_id: ClassVar[bool] = True

    def __init__(self, url: str, *, timeout: float | None = None) -> None:
        urls = [part.strip() for part in url.split(",")]
        for part in urls:
            parts = urlsplit(part)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ConfigurationError(
                    f"server URL {mask_url(part)!r} needs a host, e.g. http://127.0.0.1:8000 "
                    "(several servers: comma-separated URLs)"
                )
            if parts.query or parts.fragment:
                raise ConfigurationError(f"server URL {mask_url(part)!r} must not have a query")
        self.url = url
        #: Most seconds one write() may take (the ``http_timeout`` setting unless given).
        self.timeout = _config.current().http_timeout if timeout is None else timeout
        self._poster = HTTPPoster(urls)
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Prefer": PREFER_LENIENT,
            "User-Agent": f"jobtrace/{__version__}",
        }
        token = os.environ.get(ENV_TOKEN, "").strip()
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        #: Records dropped because the server refused them for good.
        self.rejected = 0
        self._logged: set[tuple[Any, Any]] = set()

    def write(self, records: Sequence[Record], batch_id: str | None = None) -> None:
        """Deliver ``records`` as batch ``batch_id`` within :attr:`timeout` seconds, minus
        the records the server refuses (counted and logged); raise
        :class:`~jobtrace.errors.StoreError` if it cannot be delivered."""
        if not records:
            return
        batch_id = batch_id or time_ordered_id()
        self._poster.begin(self.timeout)
        try:
            if len(records) <= REQUEST_RECORDS:
                self._send(list(records), batch_id)
                return
            # Parts of a fixed size under ids derived from the batch's: a replay of the
            # batch sends the same parts, and the server skips those it already stored.
            for part, start in enumerate(range(0, len(records), REQUEST_RECORDS)):
                self._send(list(records[start : start + REQUEST_RECORDS]), f"{batch_id}/{part}")
        except _Deadline as exc:
            raise deadline_error(self.url, self.timeout, exc) from None

    @property
    def servers(self) -> list[_Server]:
        """The servers, in the order given; the sink stays with one while it answers."""
        return self._poster.servers

    def close(self) -> None:
        self._poster.close()

    def after_fork(self) -> None:
        """Forget the parent's connection (the child must not speak on it)."""
        self._poster.after_fork()

    # -- one batch -------------------------------------------------------------------------

    def _send(self, records: list[Record], batch_id: str) -> None:
        while records:
            status, body = self._post(encode_batch(batch_id, records))
            if status < 300:
                for entry in _rejected_entries(_json_object(body), len(records)):
                    self._reject(records[entry["index"]], entry)
                return
            if status == 413:
                if len(records) > 1:
                    middle = len(records) // 2
                    self._send(records[:middle], f"{batch_id}.0")
                    self._send(records[middle:], f"{batch_id}.1")
                    return
                # One record alone is over the server's limit: it will never be accepted,
                # and raising would keep it at the head of the spool forever.
                self._reject(records.pop(), {"message": "the record alone is too large"})
                return
            error = _json_object(body)
            if status in {401, 403}:
                # Never a reason to drop records: the token is wrong, not the data.
                raise StoreError(_auth_problem(self, status, error))
            index = _bad_record_index(error, len(records)) if status in {400, 422} else None
            if index is None:
                raise StoreError(
                    f"{mask_url(self.url)} refused a batch: HTTP {status} "
                    f"{error.get('message') or body[:200]!r}"
                )
            # A strict server stored nothing of the refused batch, so its id is still free.
            detail = error.get("detail")
            self._reject(records.pop(index), {**(detail or {}), "message": error.get("message")})

    def _reject(self, record: Record, entry: dict[str, Any]) -> None:
        self.rejected += 1
        count_refused(record)
        # One line per kind of mistake, not per record: a loop logging the same bad value
        # must not flood the host program's log.
        key = (record[0], entry.get("field"))
        if key in self._logged or len(self._logged) >= _REJECT_LOG_LIMIT:
            return
        self._logged.add(key)
        log.warning(
            "jobtrace: dropped a %s record the server refused (%s); further ones like it are "
            "counted only",
            record[0],
            entry.get("message"),
        )

    def _post(self, body: bytes) -> tuple[int, bytes]:
        answer = self._poster.post(BATCHES_PATH, body, self._headers)
        return answer.status, answer.body


class Answer(NamedTuple):
    """A server's final answer to one POST (after the retries :class:`HTTPPoster` made)."""

    status: int
    body: bytes
    #: Seconds the server asked to wait (``Retry-After``), or None.
    retry_after: float | None


class _Deadline(Exception):
    """The write's time ran out (``retry_after``: what the server last asked to wait)."""

    def __init__(self, problem: str, retry_after: float | None = None) -> None:
        super().__init__(problem)
        self.retry_after = retry_after


class _Server(NamedTuple):
    """One server of a poster's list: where to connect, and the path its URL starts with."""

    url: str
    https: bool
    host: str
    port: int | None
    prefix: str

    @classmethod
    def parse(cls, url: str) -> _Server:
        parts = urlsplit(url)
        return cls(
            url,
            parts.scheme.endswith("https"),
            parts.hostname or "",
            parts.port,
            parts.path.rstrip("/"),
        )


class HTTPPoster:
    """POSTs to a server over one keep-alive connection, for a sink's writes.

    Given several servers (of one store), it stays with one while it answers and moves on
    to the next, at once, when it fails (a connection error, a retried status, no answer in
    time); the pause below comes once every server failed in turn.

    Each request is retried on connection errors and on ``retry_statuses`` while attempts
    (:data:`ATTEMPTS`) and the write's time (:meth:`begin`) are left, after a pause that
    doubles from :data:`FIRST_DELAY` up to :data:`MAX_DELAY`, or longer when the server's
    ``Retry-After`` asks for it. Past the time, :class:`_Deadline` is raised; out of attempts,
    :class:`~jobtrace.errors.StoreError` (both carry the last ``Retry-After``, so the
    recorder waits at least that long before its next try). The transport the ``http://``
    and ``otlp+http://`` sinks share; only the writer thread uses it.
    """

    def __init__(
        self, urls: str | Sequence[str], *, retry_statuses: frozenset[int] = _RETRY_STATUSES
    ) -> None:
        urls = [urls] if isinstance(urls, str) else list(urls)
        self.url = ",".join(urls)
        #: The servers, in the order given; posts go to ``servers[self.current]``.
        self.servers = [_Server.parse(url) for url in urls]
        self.current = 0
        self._retry_statuses = retry_statuses
        self._conn: http.client.HTTPConnection | None = None
        self._deadline = 0.0

    def begin(self, timeout: float) -> None:
        """Start a write that may take ``timeout`` seconds, every request and retry included."""
        self._deadline = time.monotonic() + timeout

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def after_fork(self) -> None:
        """Forget the parent's connection (closing our copy of its socket is harmless,
        but the child must not speak on it)."""
        self._conn = None

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        """One request to ``path`` (under the server URL's own path), retried on connection
        errors and transient statuses while there are attempts and time left; raises
        _Deadline when the time is up."""
        try:
            return self._post(path, body, headers)
        except _Deadline:
            # Out of time maybe mid-answer: this connection's state is unknown, drop it.
            self.close()
            raise

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        delay = FIRST_DELAY
        problem = ""
        retry_after: float | None = None
        attempt = 0
        failed = 0  # servers that failed one after the other in this round
        while attempt < ATTEMPTS:
            reused = self._conn is not None
            try:
                conn = self._connection()
                conn.request("POST", self.servers[self.current].prefix + path, body, headers)
                _set_timeout(conn, self._remaining())
                response = conn.getresponse()
                _set_timeout(conn, self._remaining())
                data = response.read()
                retry_after = parse_retry_after(response.getheader("Retry-After"))
                if response.status not in self._retry_statuses:
                    if response.will_close:
                        self.close()
                    return Answer(response.status, data, retry_after)
                problem = f"HTTP {response.status}"
                self.close()
            except TimeoutError as exc:
                # The server took the request and did not answer in time: it may still be
                # storing it. Sending it again now would only queue a second copy behind
                # the first; the recorder replays it later (to the next server, if any).
                self._fail_over()
                raise _Deadline(f"no answer: {exc or 'timed out'}") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                problem = str(exc) or type(exc).__name__
                if reused and attempt == 0:
                    # The server closed an idle keep-alive connection: reconnect at once.
                    # Resending is safe: the batch id makes the request idempotent.
                    attempt += 1
                    continue
            # A sink's batch id makes the request idempotent on any server of one store: a
            # server that died after committing it answers the resend as a duplicate.
            self._fail_over()
            failed += 1
            if failed < len(self.servers):
                continue  # the next server, at once
            failed = 0
            attempt += 1
            if attempt < ATTEMPTS:
                # The server's Retry-After wins over our backoff when it asks for longer.
                pause = max(delay, retry_after or 0.0)
                if self._remaining() <= pause:
                    raise _Deadline(problem, retry_after)
                time.sleep(pause)
                delay = min(delay * 2, MAX_DELAY)
        error = StoreError(f"cannot reach {mask_url(self.url)}: {problem}")
        error.retry_after = retry_after
        raise error

    def _fail_over(self) -> None:
        """Close the connection and move on to the next server (with one: the same)."""
        self.close()
        self.current = (self.current + 1) % len(self.servers)

    def _remaining(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _Deadline("out of time")
        return left

    def _connection(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is None:
            timeout = min(CONNECT_TIMEOUT, self._remaining())
            server = self.servers[self.current]
            if server.https:
                import ssl

                conn = http.client.HTTPSConnection(
                    server.host, server.port, timeout=timeout, context=ssl.create_default_context()
                )
            else:
                conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
            try:
                conn.connect()
            except TimeoutError:
                # Nothing was sent: an ordinary connection failure, retried while time is left.
                raise ConnectionError(f"no connection within {timeout:.3g} s") from None
            self._conn = conn
        # Sending a large body to a server that stopped reading blocks too: bounded the same.
        _set_timeout(conn, self._remaining())
        return conn


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds or an HTTP date), or None;
    never negative, at most :data:`MAX_RETRY_AFTER`."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _set_timeout(conn: http.client.HTTPConnection, seconds: float) -> None:
    sock: socket.socket | None = conn.sock
    if sock is not None:
        sock.settimeout(seconds)


def deadline_error(url: str, timeout: float, exc: _Deadline) -> StoreError:
    """The error a sink raises when a write ran out of time, carrying the server's last
    ``Retry-After`` for the recorder's next try."""
    error = StoreError(
        f"{mask_url(url)} did not take the batch within {timeout:g} s "
        f"({exc}); set {ENV_HTTP_TIMEOUT} to wait longer"
    )
    error.retry_after = exc.retry_after
    return error


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json_loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _rejected_entries(result: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The valid entries of a lenient answer's ``rejected`` list, by index."""
    entries = result.get("rejected")
    if not isinstance(entries, list):
        return []
    valid = {
        e["index"]: e
        for e in entries
        if isinstance(e, dict) and type(e.get("index")) is int and 0 <= e["index"] < count
    }
    return [valid[i] for i in sorted(valid)]


def _auth_problem(sink: HTTPSink, status: int, error: dict[str, Any]) -> str:
    """One actionable line for a server that refused the sink's token."""
    sent = "a token it refused" if "Authorization" in sink._headers else "no token"
    return (
        f"{mask_url(sink.url)} answered HTTP {status} ({error.get('error') or 'refused'}): the "
        f"job sent {sent}; set {ENV_TOKEN} to a live token of the job's owner (jobtrace token "
        f"create NAME --store URL); records are spooled meanwhile, nothing is lost "
        f"[server: {str(error.get('message'))[:300]}]"
    )


def _bad_record_index(error: dict[str, Any], count: int) -> int | None:
    """The index of the record a strict 4xx names (the server's ``detail.index``), if valid."""
    detail = error.get("detail")
    index = detail.get("index") if isinstance(detail, dict) else None
    if type(index) is int and 0 <= index < count:
        return index
    return None
