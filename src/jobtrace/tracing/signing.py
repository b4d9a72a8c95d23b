"""Signed trace headers: OSProfiler's ``X-Trace-Info`` / ``X-Trace-HMAC``, with an expiry.

``X-Trace-Info`` is URL-safe base64 of a compact JSON object::

    {"base_id": "<32 hex trace id>", "parent_id": "<16 hex span id>",
     "sampled": true, "exp": <epoch seconds>}

(OSProfiler's names: ``base_id`` is the trace, ``parent_id`` the caller's span.)
``X-Trace-HMAC`` is the hex HMAC-SHA256 of exactly the transmitted ``X-Trace-Info`` bytes,
so nothing is decoded before it is authenticated. ``exp`` is the signing time plus the
signer's TTL: a captured header stops working after it.

:class:`TraceSigner` holds one or more keys. The first signs; every one verifies, so keys
rotate without a flag day: add the new key second everywhere, then move it first, then
drop the old one. There is no default key.

>>> signer = TraceSigner(["new secret", "old secret"], ttl=60)
>>> info, mac = signer.sign(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True)
>>> parent = signer.verify(info, mac)
>>> f"{parent.trace_id:032x}", parent.sampled
('4bf92f3577b34da6a3ce929d0e0e4736', True)
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from jobtrace.errors import ConfigurationError, JobtraceError
from jobtrace.tracing.spans import RemoteParent

__all__ = [
    "DEFAULT_TTL",
    "TRACEPARENT",
    "X_TRACE_HMAC",
    "X_TRACE_INFO",
    "TraceHeaderError",
    "TraceSigner",
]

#: Header with the signed trace context (OSProfiler's name).
X_TRACE_INFO = "X-Trace-Info"
#: Header with the HMAC-SHA256 (hex) of ``X-Trace-Info``'s value.
X_TRACE_HMAC = "X-Trace-HMAC"
#: The W3C Trace Context header, sent alongside for tools that read it.
TRACEPARENT = "traceparent"
#: Seconds a signed header stays valid: transit time plus clock skew between hosts.
DEFAULT_TTL = 60.0

# A real X-Trace-Info is about 160 characters; a longer one is not hashed at all.
MAX_INFO_LENGTH = 512
_MAC_LENGTH = 64
_HEX = frozenset("0123456789abcdef")

Keys = str | bytes | Iterable[str | bytes]


class TraceHeaderError(JobtraceError):
    """An incoming trace header that is not trusted; ``reason`` says why, in one word:

    ``malformed`` (not the shape of a header we sign), ``bad_signature`` (tampered, forged,
    or signed with a key not configured here) or ``expired``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _key_bytes(keys: Keys) -> tuple[bytes, ...]:
    items: Iterable[str | bytes] = [keys] if isinstance(keys, str | bytes) else keys
    out = []
    for key in items:
        raw = key.encode() if isinstance(key, str) else key
        if not isinstance(raw, bytes) or not raw:
            raise ConfigurationError(
                f"trace header key {key!r} is not a non-empty str or bytes; "
                "use a long random secret shared by the services, e.g. secrets.token_hex(32)"
            )
        out.append(raw)
    if not out:
        raise ConfigurationError(
            "TraceSigner needs at least one key (there is no default key); pass keys=None "
            "to the middleware instead to trust no signed header at all"
        )
    return tuple(out)


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and _HEX.issuperset(text)


class TraceSigner:
    """Signs outgoing trace context and verifies incoming headers.

    ``keys``: one key or a sequence, newest first (the first signs, all verify).
    ``ttl``: seconds an issued header stays valid. ``clock``: epoch seconds (for tests).
    """

    __slots__ = ("_clock", "_macs", "ttl")

    def __init__(
        self,
        keys: Keys,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= 86_400:
            raise ConfigurationError(f"ttl={ttl!r} must be a number of seconds in (0, 86400]")
        # Keyed once: per header, copying a keyed HMAC costs less than keying a new one.
        self._macs = tuple(hmac.new(key, digestmod="sha256") for key in _key_bytes(keys))
        self.ttl = float(ttl)
        self._clock = clock

    def __repr__(self) -> str:  # never the keys
        return f"<TraceSigner keys={len(self._macs)} ttl={self.ttl:g}s>"

    def sign(self, trace_id: int, span_id: int, sampled: bool) -> tuple[str, str]:
        """``(X-Trace-Info, X-Trace-HMAC)`` values for a call made under ``span_id``."""
        exp = int(self._clock() + self.ttl)
        # Every field is a hex id, a bool or an int: formatting beats a JSON encoder here.
        payload = (
            f'{{"base_id":"{trace_id:032x}","parent_id":"{span_id:016x}",'
            f'"sampled":{"true" if sampled else "false"},"exp":{exp}}}'
        )
        info = base64.urlsafe_b64encode(payload.encode()).decode("ascii")
        mac = self._macs[0].copy()
        mac.update(info.encode("ascii"))
        return info, mac.hexdigest()

    def verify(self, info: str, mac: str) -> RemoteParent:
        """The caller's span from a signed header pair; raises :class:`TraceHeaderError`."""
        if not 0 < len(info) <= MAX_INFO_LENGTH or not info.isascii():
            raise TraceHeaderError("malformed", f"{X_TRACE_INFO} is empty, too long or not ASCII")
        mac = mac.strip().lower()
        if not _is_hex(mac, _MAC_LENGTH):
            raise TraceHeaderError("malformed", f"{X_TRACE_HMAC} is not 64 hex digits")
        data = info.encode("ascii")
        for keyed in self._macs:
            expected = keyed.copy()
            expected.update(data)
            if hmac.compare_digest(expected.hexdigest(), mac):
                break
        else:
            raise TraceHeaderError("bad_signature", f"{X_TRACE_HMAC} does not match any key")
        return self._decode(data)

    def _decode(self, data: bytes) -> RemoteParent:
        # Authenticated bytes, but still checked: a key holder can send anything.
        try:
            fields: Any = orjson.loads(base64.b64decode(data, altchars=b"-_", validate=True))
        except (binascii.Error, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise TraceHeaderError("malformed", f"{X_TRACE_INFO} is not base64 JSON") from exc
        if not isinstance(fields, dict):
            raise TraceHeaderError("malformed", f"{X_TRACE_INFO} is not a JSON object")
        base_id = fields.get("base_id")
        parent_id = fields.get("parent_id")
        sampled = fields.get("sampled", True)
        exp = fields.get("exp")
        if not (
            isinstance(base_id, str)
            and _is_hex(base_id, 32)
            and isinstance(parent_id, str)
            and _is_hex(parent_id, 16)
            and isinstance(sampled, bool)
            and isinstance(exp, int)
            and not isinstance(exp, bool)
        ):
            raise TraceHeaderError("malformed", f"{X_TRACE_INFO} has missing or mistyped fields")
        trace_id, span_id = int(base_id, 16), int(parent_id, 16)
        if not trace_id or not span_id:
            raise TraceHeaderError("malformed", f"{X_TRACE_INFO} has an all-zero id")
        if self._clock() > exp:
            raise TraceHeaderError("expired", f"{X_TRACE_INFO} expired at {exp}")
        return RemoteParent(trace_id, span_id, sampled)
