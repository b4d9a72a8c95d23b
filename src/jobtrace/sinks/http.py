"""``http://`` and ``https://``: send record batches to a ``jobtrace serve`` server.

Each batch is one ``POST {url}/api/v1/batches`` carrying the recorder's batch id, so the
server stores it once however often it arrives: a retry after a lost response, a replay
from the spool. The sink runs on the recorder's writer thread only (the host program never
waits on the network) and uses the standard library's ``http.client`` over one keep-alive
connection, so a recorded job loads no HTTP package.

- Connection errors, 5xx and 429: retried a few times with a short exponential backoff,
  then :class:`~jobtrace.errors.StoreError` is raised and the recorder spools the batch
  and retries the server with its own, longer backoff.
- 413 (the body is over the server's limit): the batch is halved, each half sent under an
  id derived from the batch's, until it fits; a single record too large by itself is
  dropped (counted and logged, as below).
- 400/422 naming a bad record: that record is dropped (counted and logged, as a store
  sink drops a record its database refuses) and the rest is sent again; a batch that would
  never be accepted must not block the spool behind it.
- 401/403 (no token, a revoked one, or records of a job another token created): raised,
  so the batch is spooled, with one line saying to set ``JOBTRACE_TOKEN``; it is delivered
  once a process with an accepted token replays the spool.
- Any other 4xx (wrong URL, a proxy refusing): raised, so the batch is kept in the spool.

The token is ``JOBTRACE_TOKEN``, read when the sink is opened and sent as
``Authorization: Bearer …``.
"""

from __future__ import annotations

import http.client
import logging
import os
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from jobtrace import __version__
from jobtrace._config import ENV_TOKEN, mask_url
from jobtrace._ids import time_ordered_id
from jobtrace.errors import ConfigurationError, StoreError
from jobtrace.model import Record, clean, to_list
from jobtrace.sinks.file import json_loads

__all__ = ["BATCHES_PATH", "HTTPSink", "encode_batch"]

log = logging.getLogger("jobtrace.sinks.http")

#: Where batches go, under the server URL's path.
BATCHES_PATH = "/api/v1/batches"
#: Attempts per request before the batch is handed back to the recorder for spooling.
ATTEMPTS = 4
#: First pause between attempts (doubled after each); the whole sequence stays under a second
#: so an exit flush is not held up long by a server that is down.
FIRST_DELAY = 0.1
CONNECT_TIMEOUT = 5.0
#: A large batch into a busy PostgreSQL store can take a while to commit.
READ_TIMEOUT = 120.0
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_REJECT_LOG_LIMIT = 20


def encode_batch(batch_id: str, records: Sequence[Record]) -> bytes:
    """The request body: ``{"id": …, "records": [[kind, field, …], …]}`` (the model's
    positional codec, :func:`jobtrace.model.to_list`)."""
    import orjson

    body = {"id": batch_id, "records": [to_list(r) for r in records]}
    option = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    try:
        return orjson.dumps(body, default=repr, option=option)
    except (TypeError, ValueError):
        # Rare: a string orjson refuses (a lone surrogate from a non-UTF-8 file name).
        return orjson.dumps(clean(body), default=repr, option=option)


class HTTPSink:
    """Posts batches to a jobtrace server over one keep-alive connection."""

    accepts_batch_id: ClassVar[bool] = True

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigurationError(f"server URL {url!r} needs a host, e.g. http://127.0.0.1:8000")
        if parts.query or parts.fragment:
            raise ConfigurationError(f"server URL {mask_url(url)!r} must not have a query")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + BATCHES_PATH
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"jobtrace/{__version__}",
        }
        token = os.environ.get(ENV_TOKEN, "").strip()
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None
        self.rejected = 0

    def write(self, records: Sequence[Record], batch_id: str | None = None) -> None:
        if records:
            self._send(list(records), batch_id or time_ordered_id())

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def after_fork(self) -> None:
        """Forget the parent's connection (closing our copy of its socket is harmless,
        but the child must not speak on it)."""
        self._conn = None

    # -- one batch -------------------------------------------------------------------------

    def _send(self, records: list[Record], batch_id: str) -> None:
        while records:
            status, body = self._post(encode_batch(batch_id, records))
            if status < 300:
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
            error = _error_body(body)
            if status in {401, 403}:
                # Never a reason to drop records: the token is wrong, not the data.
                raise StoreError(_auth_problem(self, status, error))
            index = _bad_record_index(error, len(records)) if status in {400, 422} else None
            if index is None:
                raise StoreError(
                    f"{mask_url(self.url)} refused a batch: HTTP {status} "
                    f"{error.get('message') or body[:200]!r}"
                )
            self._reject(records.pop(index), error)
            # The server stored nothing of the refused batch, so its id is still free.

    def _reject(self, record: Record, error: dict[str, Any]) -> None:
        self.rejected += 1
        if self.rejected <= _REJECT_LOG_LIMIT:
            log.warning(
                "jobtrace: dropped a %s record the server refused (%s)%s",
                record[0],
                error.get("message"),
                "; further ones are counted only" if self.rejected == _REJECT_LOG_LIMIT else "",
            )

    def _post(self, body: bytes) -> tuple[int, bytes]:
        """One request, retried on connection errors and transient statuses."""
        delay = FIRST_DELAY
        problem = ""
        attempt = 0
        while attempt < ATTEMPTS:
            reused = self._conn is not None
            try:
                conn = self._connection()
                conn.request("POST", self._path, body, self._headers)
                response = conn.getresponse()
                data = response.read()
                if response.status not in _RETRY_STATUSES:
                    if response.will_close:
                        self.close()
                    return response.status, data
                problem = f"HTTP {response.status}"
                self.close()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                problem = str(exc) or type(exc).__name__
                if reused and attempt == 0:
                    # The server closed an idle keep-alive connection: reconnect at once.
                    # Resending is safe: the batch id makes the request idempotent.
                    reused = False
                    attempt += 1
                    continue
            attempt += 1
            if attempt < ATTEMPTS:
                time.sleep(delay)
                delay *= 2
        raise StoreError(f"cannot reach {mask_url(self.url)}: {problem}")

    def _connection(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is None:
            if self._https:
                import ssl

                conn = http.client.HTTPSConnection(
                    self._host,
                    self._port,
                    timeout=CONNECT_TIMEOUT,
                    context=ssl.create_default_context(),
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=CONNECT_TIMEOUT)
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(READ_TIMEOUT)
            self._conn = conn
        return conn


def _error_body(body: bytes) -> dict[str, Any]:
    try:
        data = json_loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


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
    """The index of the record a 4xx names (the server's ``detail.index``), if valid."""
    detail = error.get("detail")
    index = detail.get("index") if isinstance(detail, dict) else None
    if type(index) is int and 0 <= index < count:
        return index
    return None
