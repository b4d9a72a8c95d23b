"""Who may read and write through the server: tokens, job ownership and browser checks.

One dependency, :func:`authorize`, guards every route under ``/api/v1`` except ``/health``,
and ``/metrics`` (the dashboard's pages check the same tokens, see
:mod:`jobtrace.dashboard.pages`):

- **Browsers.** A write (any method but GET, HEAD, OPTIONS) must be ``Content-Type:
  application/json`` (else 415) — a web page can send ``text/plain`` or a form to any
  address without a CORS preflight, but not JSON — and a request with an ``Origin`` header
  must come from an allowed origin (else 403): the server's own origin when the ``Host``
  it was reached by is ``localhost`` or an IP address (a DNS-rebound name is not), or one
  of :attr:`AuthSettings.allowed_origins`. Programs send no ``Origin`` and are unaffected.
  These checks hold with or without tokens: a laptop server has none, and is exactly what
  a page in the developer's browser could reach.
- **Tokens.** While the store has never had a token the server is open, as before tokens
  existed. Once one exists (revoked ones count: revoking a leaked last token must not open
  the server), every write needs ``Authorization: Bearer <token>`` and so does
  every read unless :attr:`AuthSettings.auth_reads` is off: 401 without a token or with an
  unknown or revoked one. A read may carry the token in the dashboard's sign-in cookie
  (:data:`SESSION_COOKIE`) instead of the header; a write never.
- **Owners.** A job's records (snapshots, metrics, spans, items, series, profiles naming
  it) may be written only with a token of the name that first wrote the job, or an admin
  token: 403 otherwise, naming the records (see :meth:`Guard.check_records`).

Verification costs no query per request: each process keeps the live tokens (key, digest,
name, admin) in memory and reloads them when a request finds them older than
:attr:`AuthSettings.refresh_seconds` (2 s), so a revoked token is refused by every worker
within a couple of seconds without any coordination between workers. A request then costs
one SHA-256 of its token (well under a microsecond's worth of work next to parsing it) and a
dict lookup. Owners never change once claimed, so each process remembers them (bounded),
and a job's later batches need no query either.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, NamedTuple
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from jobtrace import _config, model
from jobtrace.server.errors import APIError
from jobtrace.store import tokens
from jobtrace.store.core import Store

__all__ = [
    "SESSION_COOKIE",
    "AuthSettings",
    "Guard",
    "Identity",
    "IdentityDep",
    "authorize",
    "is_loopback",
]

log = logging.getLogger("jobtrace.server")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The dashboard's sign-in cookie (HttpOnly, SameSite=Strict): a token a browser sends for
#: reads only. Writes need the Authorization header, so no page elsewhere can make a
#: signed-in browser write (and SameSite=Strict keeps the cookie off other sites' requests).
SESSION_COOKIE = "jobtrace_token"
#: Seconds between writes of ``last_used_at`` (a write per request would cost ingest).
USED_WRITE_INTERVAL = 60.0
#: Job owners remembered per process.
OWNER_CACHE_SIZE = 100_000
_TOKEN_HINT = (
    "send 'Authorization: Bearer <token>' (the http sink and jobtrace.client read "
    f"{_config.ENV_TOKEN}; make a token with: jobtrace token create NAME --store URL)"
)

#: Record kind → position of the job id it belongs to.
_JOB_FIELD: dict[str, int] = {
    kind: (1 if kind == model.JOB else fields.index("job_id") + 1)
    for kind, fields in model.FIELDS.items()
    if kind == model.JOB or "job_id" in fields
}


class Identity(NamedTuple):
    """The token a request came with: its name (owner of the jobs it creates) and rights."""

    name: str
    admin: bool
    key: str


def _truthy(raw: str) -> bool:
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _origins(raw: str | Sequence[str]) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    return tuple(o.strip().rstrip("/").lower() for o in items if o.strip())


@dataclass(frozen=True)
class AuthSettings:
    """How a server guards itself (``jobtrace serve`` options, or environment variables)."""

    #: Once a token exists, reads need one too (``--auth-reads``, the default) or not
    #: (``--open-reads``; writes always do).
    auth_reads: bool = True
    #: Browser origins (``scheme://host[:port]``) allowed to write besides the server's own.
    allowed_origins: tuple[str, ...] = ()
    #: Seconds a process trusts its copy of the live tokens (revocation takes this long).
    refresh_seconds: float = 2.0
    _normalised: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_normalised", _origins(self.allowed_origins))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> AuthSettings:
        """Settings from ``JOBTRACE_AUTH_READS`` and ``JOBTRACE_ALLOWED_ORIGINS``; keyword
        arguments that are not None win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        reads = env.get(_config.ENV_AUTH_READS, "").strip()
        if reads:
            values["auth_reads"] = _truthy(reads)
        origins = env.get(_config.ENV_ALLOWED_ORIGINS, "")
        if origins.strip():
            values["allowed_origins"] = _origins(origins)
        refresh = env.get(_config.ENV_AUTH_REFRESH, "").strip()
        if refresh:
            values["refresh_seconds"] = _config._number(
                _config.ENV_AUTH_REFRESH, refresh, float, -1e-9, 3600.0
            )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment variables that give a worker process these settings."""
        return {
            _config.ENV_AUTH_READS: "1" if self.auth_reads else "0",
            _config.ENV_ALLOWED_ORIGINS: ",".join(self._normalised),
            _config.ENV_AUTH_REFRESH: repr(self.refresh_seconds),
        }


def is_loopback(host: str) -> bool:
    """Whether a listening address or host name is this machine only."""
    if host.strip("[]").lower() in {"localhost", "ip6-localhost"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip_or_localhost(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


class TokenVerifier:
    """The store's live tokens, as of at most ``refresh_seconds`` ago."""

    def __init__(self, store: Store, refresh_seconds: float) -> None:
        self._store = store
        self._refresh = refresh_seconds
        self._by_key: dict[str, tokens.TokenInfo] = {}
        self._enabled = False
        self._loaded_at: float | None = None
        self._lock = threading.Lock()
        self._used: dict[str, float] = {}
        self._used_written = time.monotonic()

    @property
    def stale(self) -> bool:
        loaded = self._loaded_at
        return loaded is None or time.monotonic() - loaded >= self._refresh

    @property
    def enabled(self) -> bool:
        """Whether the store has ever had a token (else the server is open). Revoked ones
        count: revoking a leaked last token must not open the server to everyone."""
        return self._enabled

    def refresh(self) -> None:
        """Reload the live tokens (one query); on a store error keep the last copy, or
        raise if there is none (answered as a 503)."""
        first = self._loaded_at is None
        # One thread reloads; the others go on with the copy they have (if any).
        if not self._lock.acquire(blocking=first):
            return
        try:
            if not self.stale:
                return
            try:
                found = self._store._read(tokens.all_tokens)
                self._write_used()
            except Exception as exc:
                if first:
                    raise
                log.warning("jobtrace server: cannot reload API tokens (%s); using the last", exc)
                self._loaded_at = time.monotonic()
                return
            self._by_key = {t.key: t for t in found if t.revoked_at is None}
            self._enabled = bool(found)
            self._loaded_at = time.monotonic()
        finally:
            self._lock.release()

    def _write_used(self) -> None:
        now = time.monotonic()
        if not self._used or now - self._used_written < USED_WRITE_INTERVAL:
            return
        used, self._used = self._used, {}
        self._used_written = now
        # A copy (atomic under the GIL): the event loop may still add to the old dict.
        self._store._transact(tokens.mark_used, dict(used))

    def identify(self, token: str) -> Identity | None:
        """The identity of a live token, or None."""
        key = tokens.split_token(token)
        info = self._by_key.get(key) if key is not None else None
        if info is None or not tokens.matches(token, info.digest):
            return None
        self._used[info.key] = time.time()
        return Identity(info.name, info.admin, info.key)


class JobOwners:
    """Owners of jobs (immutable once claimed), remembered per process."""

    def __init__(self, store: Store, size: int = OWNER_CACHE_SIZE) -> None:
        self._store = store
        self._size = size
        self._known: dict[str, str | None] = {}

    def refused(self, identity: Identity, job_ids: set[str]) -> set[str]:
        """The jobs of ``job_ids`` that ``identity`` may not write; new ones are claimed
        for it first (one query for the batch's unknown ids, none when all are known)."""
        known = self._known
        unknown = [j for j in job_ids if j not in known]
        owners = {j: known[j] for j in job_ids if j in known}
        if unknown:
            found = tokens.claim_jobs(self._store, unknown, identity.name)
            owners.update(found)
            if len(known) + len(found) > self._size:
                known.clear()  # rare and harmless: owners are re-read from the store
            known.update(found)
        if identity.admin:
            return set()
        return {j for j, owner in owners.items() if owner != identity.name}


class Guard:
    """A server's token verifier, job owners and settings (``app.state.auth``)."""

    def __init__(self, store: Store, settings: AuthSettings) -> None:
        self.settings = settings
        self.tokens = TokenVerifier(store, settings.refresh_seconds)
        self.owners = JobOwners(store)

    # -- browsers ---------------------------------------------------------------------------

    def check_browser(self, request: Request) -> None:
        """415 for a write that is not JSON, 403 for a foreign ``Origin``."""
        content_type = request.headers.get("content-type", "")
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise APIError(
                415,
                "writes must be sent as 'Content-Type: application/json'"
                + (f", not {content_type[:100]!r}" if content_type else ""),
                detail={"contentType": content_type[:100] or None},
            )
        origin = request.headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, request):
            raise APIError(
                403,
                f"cross-origin write refused: Origin {origin[:200]!r} is not this server's; "
                "list it with jobtrace serve --allow-origin if a page there may write",
                detail={"origin": origin[:200]},
            )

    def _origin_allowed(self, origin: str, request: Request) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if origin in self.settings._normalised:
            return True
        host = request.headers.get("host", "").lower()
        if not host or origin != f"{request.url.scheme}://{host}":
            return False
        # Same origin by name only counts for addresses: a page on attacker.example whose
        # name was rebound to this machine also reaches it as its "own" origin.
        return _is_ip_or_localhost(urlsplit(origin).hostname or "")

    # -- tokens -----------------------------------------------------------------------------

    async def identify(self, authorization: str | None, *, write: bool) -> Identity | None:
        """The caller's identity; None when no token is needed (no tokens exist, or an
        open read). 401 when one is needed and missing or not valid."""
        verifier = self.tokens
        if verifier.stale:
            await run_in_threadpool(verifier.refresh)
        if not verifier.enabled or (not write and not self.settings.auth_reads):
            return None
        scheme, _, token = (authorization or "").strip().partition(" ")
        if not authorization:
            raise _unauthorized(f"this server needs an API token: {_TOKEN_HINT}")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized(f"the Authorization header must be 'Bearer <token>'; {_TOKEN_HINT}")
        identity = verifier.identify(token.strip())
        if identity is None:
            raise _unauthorized(
                "the API token is not valid (unknown or revoked); set "
                f"{_config.ENV_TOKEN} to a live token (jobtrace token list --store URL)"
            )
        return identity

    # -- owners -----------------------------------------------------------------------------

    def check_jobs(self, identity: Identity | None, job_ids: set[str]) -> set[str]:
        """The jobs of ``job_ids`` the caller may not write (none in an open server)."""
        if identity is None or not job_ids:
            return set()
        return self.owners.refused(identity, job_ids)

    def check_records(
        self,
        identity: Identity | None,
        records: Sequence[model.Record],
        sent: Sequence[int] | None = None,
    ) -> None:
        """Raise a 403 naming the records of ``records`` that belong to jobs ``identity``
        may not write; nothing of the batch is stored then (the sink spools it).

        The body: ``{"error": "forbidden", "message": …, "status": 403, "detail":
        {"token": name, "jobIds": [refused job ids, at most 20], "recordIndexes":
        [indexes into the batch as sent, at most 100], "refusedCount": n}}``. ``sent``
        maps each of ``records`` to its index in the batch as sent, when the server left
        some out (lenient handling); by default they are the same.
        """
        if identity is None:
            return
        positions = _JOB_FIELD
        job_ids: set[str] = set()
        for record in records:
            position = positions.get(record[0])
            if position is not None:
                job_id = record[position]
                if job_id is not None:
                    job_ids.add(job_id)
        refused = self.check_jobs(identity, job_ids)
        if not refused:
            return
        indexes = [
            i if sent is None else sent[i]
            for i, record in enumerate(records)
            if (p := positions.get(record[0])) is not None and record[p] in refused
        ]
        raise forbidden_jobs(identity, refused, indexes)


def forbidden_jobs(identity: Identity, refused: set[str], indexes: Sequence[int] = ()) -> APIError:
    """The 403 for writing jobs another token owns."""
    ids = sorted(refused)
    shown = ", ".join(repr(j) for j in ids[:5]) + (
        f" and {len(ids) - 5} more" if len(ids) > 5 else ""
    )
    records = f"{len(indexes)} record(s) (first at index {indexes[0]}) " if indexes else ""
    return APIError(
        403,
        f"token {identity.name!r} may not write job(s) {shown}: {records}belong to jobs "
        "another token created; nothing was stored. Use the job's own token or an admin token",
        kind="forbidden",
        detail={
            "token": identity.name,
            "jobIds": ids[:20],
            "recordIndexes": list(indexes[:100]),
            "refusedCount": len(indexes),
        },
    )


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, headers={"WWW-Authenticate": "Bearer"})


#: Declares the scheme in the OpenAPI document (so /docs offers to send a token); the
#: header itself is read below, to answer every problem with the shared error body.
_bearer = HTTPBearer(auto_error=False, description="An API token: jobtrace token create NAME")


async def authorize(
    request: Request,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity | None:
    """The dependency guarding the API: browser checks on writes, then the token.
    Returns the caller's identity (None when the server or this read is open)."""
    guard: Guard = request.app.state.auth
    write = request.method not in SAFE_METHODS
    if write:
        guard.check_browser(request)
    header = request.headers.get("authorization")
    if header is None and not write and (cookie := request.cookies.get(SESSION_COOKIE)):
        header = f"Bearer {cookie}"  # the dashboard's pages reading the API
    return await guard.identify(header, write=write)


IdentityDep = Annotated[Identity | None, Depends(authorize)]
