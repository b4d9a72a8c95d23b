"""API tokens of ``jobtrace serve`` and the owners of jobs, in the store.

A token reads ``jt_<key>_<secret>``: ``key`` (12 hex digits) is public and finds the
token's row, ``secret`` is 32 random bytes. The store keeps the SHA-256 digest of the whole
token, never the token itself, and a check compares digests in constant time
(:func:`hmac.compare_digest`). A plain hash rather than a slow KDF is enough because the
secret has 256 bits of entropy: no guess list exists to try against a stolen digest, and
a fast hash lets every server process verify without a cache of raw tokens.

``jobtrace token create|revoke|list`` call :func:`create`, :func:`revoke` and
:func:`list_tokens`; a server's verifier reads :func:`all_tokens`.

Jobs: the first authenticated write naming a job id claims it for its token's name
(:func:`claim_jobs`, before the write itself); from then on only that name, or an admin
token, may write the job's records. Jobs that existed before any claim (recorded while the
server had no tokens) are owned by nobody: only an admin token may write them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from jobtrace.errors import ConflictError, NotFoundError, QueryError, StoreError
from jobtrace.store import schema

if TYPE_CHECKING:
    from jobtrace.store.core import Store

__all__ = [
    "NAME_PATTERN",
    "PREFIX",
    "TokenInfo",
    "all_tokens",
    "claim_jobs",
    "create",
    "digest",
    "list_tokens",
    "mark_used",
    "matches",
    "revoke",
    "split_token",
]

#: Every token starts with this, so secret scanners and people recognise one.
PREFIX = "jt_"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}"
_NAME = re.compile(NAME_PATTERN)
_TOKEN = re.compile(r"jt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
#: Job ids per ``IN (…)`` list: well under SQLite's and PostgreSQL's parameter limits.
_CHUNK = 500


class TokenInfo(NamedTuple):
    """One token's row, without any secret: what ``jobtrace token list`` shows."""

    key: str
    name: str
    admin: bool
    created_at: float
    revoked_at: float | None
    last_used_at: float | None
    digest: str = ""

    @property
    def prefix(self) -> str:
        """The token's public start (``jt_<key>_…``), to tell tokens apart."""
        return f"{PREFIX}{self.key}_…"


def digest(token: str) -> str:
    """The SHA-256 of a token, as stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def split_token(token: str) -> str | None:
    """The public key of a well-formed token, else None."""
    found = _TOKEN.fullmatch(token)
    return found.group(1) if found else None


def matches(token: str, stored_digest: str) -> bool:
    """Whether ``token`` hashes to ``stored_digest`` (compared in constant time)."""
    return hmac.compare_digest(digest(token), stored_digest)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise QueryError(
            f"token name {name!r} is not valid: use 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def _row(row: sa.Row[tuple[object, ...]]) -> TokenInfo:
    m = row._mapping
    return TokenInfo(
        str(m["key"]),
        str(m["name"]),
        bool(m["admin"]),
        float(m["created_at"]),
        m["revoked_at"],
        m["last_used_at"],
        str(m["digest"]),
    )


def create(store: Store, name: str, *, admin: bool = False, now: float | None = None) -> str:
    """Create a token named ``name`` and return it (the only time it is seen);
    :class:`ConflictError` if a live token has that name."""
    check_name(name)
    key = secrets.token_hex(6)
    token = f"{PREFIX}{key}_{secrets.token_urlsafe(32)}"
    values = {
        "key": key,
        "name": name,
        "digest": digest(token),
        "admin": admin,
        "created_at": time.time() if now is None else now,
    }

    def insert(conn: sa.Connection) -> None:
        try:
            conn.execute(sa.insert(schema.tokens).values(values))
        except IntegrityError:  # the unique index on live names
            raise ConflictError(
                f"a token named {name!r} exists; revoke it first "
                f"(jobtrace token revoke {name}) or choose another name"
            ) from None

    store._transact(insert)
    return token


def revoke(store: Store, name: str, *, now: float | None = None) -> None:
    """Revoke the live token named ``name`` (:class:`NotFoundError` if there is none).
    Servers refuse it within their refresh interval (a few seconds)."""
    at = time.time() if now is None else now

    def update(conn: sa.Connection) -> int:
        t = schema.tokens
        result = conn.execute(
            sa.update(t).where(t.c.name == name, t.c.revoked_at.is_(None)).values(revoked_at=at)
        )
        return int(result.rowcount)

    if store._transact(update) == 0:
        raise NotFoundError(f"no live token named {name!r} (see jobtrace token list)")


def list_tokens(store: Store) -> list[TokenInfo]:
    """Every token, live and revoked, oldest first (without digests)."""
    found = store._read(all_tokens)
    return sorted((t._replace(digest="") for t in found), key=lambda t: (t.created_at, t.key))


def all_tokens(conn: sa.Connection) -> list[TokenInfo]:
    """Every token, revoked ones included, with their digests (for a server's verifier:
    a store stays closed once it has had a token, so revoking the last one never opens it)."""
    return [_row(r) for r in conn.execute(sa.select(schema.tokens))]


def mark_used(conn: sa.Connection, used: dict[str, float]) -> None:
    """Record when tokens (by key) were last used."""
    t = schema.tokens
    for key, at in used.items():
        conn.execute(
            sa.update(t)
            .where(t.c.key == key, sa.or_(t.c.last_used_at.is_(None), t.c.last_used_at < at))
            .values(last_used_at=at)
        )


def _chunks(ids: Collection[str]) -> Iterable[list[str]]:
    items = list(ids)
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _claim_sql(mark: str) -> str:
    # A job already in the store without an owner (recorded before tokens existed) is not
    # claimed: it stays owned by nobody, writable by admin tokens only. The WHERE clause
    # also lets SQLite tell the upsert's ON from a join's; the casts give PostgreSQL one
    # type for the job id it meets twice.
    job_id = f"CAST({mark} AS VARCHAR(128))"
    return (
        "INSERT INTO job_owners (job_id, owner, claimed_at) "
        f"SELECT {job_id}, CAST({mark} AS VARCHAR(64)), CAST({mark} AS DOUBLE PRECISION) "
        f"WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = {job_id}) "
        "ON CONFLICT (job_id) DO NOTHING"
    )


def claim_jobs(store: Store, job_ids: Collection[str], owner: str) -> dict[str, str | None]:
    """The owner of each job id: claimed for ``owner`` where the job was unclaimed and new;
    None for a job that existed before any claim (owned by nobody).

    One transaction of two statements through the driver directly: this runs before the
    first batch of every job a server sees, and SQLAlchemy's per-statement overhead would
    cost more than writing a small batch. The insert comes first, so SQLite takes its write
    lock before reading; the read that follows in the same transaction tells who won a race
    for a new job (the other insert did nothing).
    """
    from jobtrace.store.core import describe_error

    ids = list(job_ids)
    mark = "?" if store.is_sqlite else "%s"
    now = time.time()
    try:
        raw = store.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.executemany(_claim_sql(mark), [(j, owner, now, j) for j in ids])
            owners: dict[str, str | None] = {}
            for chunk in _chunks(ids):
                marks = ", ".join([mark] * len(chunk))
                cursor.execute(
                    f"SELECT job_id, owner FROM job_owners WHERE job_id IN ({marks})", chunk
                )
                owners.update((str(j), str(o)) for j, o in cursor.fetchall())
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()
    except Exception as exc:
        raise StoreError(f"cannot write to {store.safe_url}: {describe_error(exc)}") from exc
    for job_id in ids:
        owners.setdefault(job_id, None)
    return owners
