"""Signed trace headers: what verifies, and that any change to the header or its MAC, an
expired header, or an unknown key does not."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobtrace import ConfigurationError
from jobtrace.tracing.signing import MAX_INFO_LENGTH, TraceHeaderError, TraceSigner

NOW = 1_800_000_000.0
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7

trace_ids = st.integers(1, 2**128 - 1)
span_ids = st.integers(1, 2**64 - 1)


def signer(keys: str | list[str] = "k1", ttl: float = 60, now: float = NOW) -> TraceSigner:
    return TraceSigner(keys, ttl=ttl, clock=lambda: now)


def mac_of(info: str, key: str = "k1") -> str:
    """The MAC a key holder would send with ``info``: reaches the checks after the MAC."""
    return hmac.new(key.encode(), info.encode(), hashlib.sha256).hexdigest()


def reason_of(s: TraceSigner, info: str, mac: str) -> str:
    with pytest.raises(TraceHeaderError) as caught:
        s.verify(info, mac)
    return caught.value.reason


@given(trace_ids, span_ids, st.booleans())
def test_a_signed_header_verifies_to_the_callers_span(
    trace_id: int, span_id: int, sampled: bool
) -> None:
    s = signer()
    parent = s.verify(*s.sign(trace_id, span_id, sampled))
    assert (parent.trace_id, parent.span_id, parent.sampled) == (trace_id, span_id, sampled)


def test_the_mac_is_hmac_sha256_of_the_transmitted_info() -> None:
    info, mac = signer("secret").sign(TRACE_ID, SPAN_ID, True)
    assert mac == hmac.new(b"secret", info.encode(), hashlib.sha256).hexdigest()
    payload = base64.urlsafe_b64decode(info)
    assert payload == (
        b'{"base_id":"4bf92f3577b34da6a3ce929d0e0e4736","parent_id":"00f067aa0ba902b7",'
        b'"sampled":true,"exp":1800000060}'
    )


@given(st.data())
def test_any_change_to_the_info_fails(data: st.DataObject) -> None:
    s = signer()
    info, mac = s.sign(TRACE_ID, SPAN_ID, True)
    index = data.draw(st.integers(0, len(info) - 1))
    replacement = data.draw(st.characters(codec="utf-8").filter(lambda c: c != info[index]))
    tampered = info[:index] + replacement + info[index + 1 :]
    assert reason_of(s, tampered, mac) in {"bad_signature", "malformed"}


@given(st.data())
def test_any_change_to_the_mac_fails(data: st.DataObject) -> None:
    s = signer()
    info, mac = s.sign(TRACE_ID, SPAN_ID, True)
    index = data.draw(st.integers(0, len(mac) - 1))
    replacement = data.draw(st.sampled_from("0123456789abcdef").filter(lambda c: c != mac[index]))
    assert reason_of(s, info, mac[:index] + replacement + mac[index + 1 :]) == "bad_signature"


@given(st.text(max_size=300), st.text(max_size=80))
def test_arbitrary_header_values_are_refused_not_raised(info: str, mac: str) -> None:
    assert reason_of(signer(), info, mac) in {"bad_signature", "malformed"}


def test_a_header_is_valid_until_its_expiry_and_not_after() -> None:
    info, mac = signer(ttl=30).sign(TRACE_ID, SPAN_ID, True)
    assert signer(now=NOW + 30).verify(info, mac).span_id == SPAN_ID
    assert reason_of(signer(now=NOW + 31), info, mac) == "expired"


@given(st.floats(0, 10_000))
def test_expiry_is_enforced_whatever_the_delay(delay: float) -> None:
    info, mac = signer(ttl=60).sign(TRACE_ID, SPAN_ID, True)
    later = signer(now=NOW + delay)
    if delay <= 60:
        assert later.verify(info, mac).trace_id == TRACE_ID
    else:
        assert reason_of(later, info, mac) == "expired"


def test_the_first_key_signs_and_every_key_verifies() -> None:
    rotated = signer(["new", "old"])
    assert rotated.verify(*signer("old").sign(TRACE_ID, SPAN_ID, True)).span_id == SPAN_ID
    assert rotated.verify(*signer("new").sign(TRACE_ID, SPAN_ID, True)).span_id == SPAN_ID
    assert signer("new").verify(*rotated.sign(TRACE_ID, SPAN_ID, True)).span_id == SPAN_ID
    assert reason_of(signer("old"), *rotated.sign(TRACE_ID, SPAN_ID, True)) == "bad_signature"


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_a_header_signed_with_another_key_is_refused(ours: str, theirs: str) -> None:
    if ours.encode() != theirs.encode():
        assert reason_of(signer(ours), *signer(theirs).sign(1, 1, True)) == "bad_signature"


def test_bytes_keys_and_str_keys_are_the_same_key() -> None:
    info, mac = signer("clé").sign(TRACE_ID, SPAN_ID, False)
    assert TraceSigner("clé".encode(), clock=lambda: NOW).verify(info, mac).sampled is False


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b'{"base_id": "4bf92f3577b34da6a3ce929d0e0e4736"}',
        b'{"base_id": 1, "parent_id": "00f067aa0ba902b7", "exp": 1900000000}',
        b'{"base_id": "4bf92f3577b34da6a3ce929d0e0e4736", "parent_id": "xyz", "exp": 1900000000}',
        b'{"base_id": "4bf92f3577b34da6a3ce929d0e0e4736", "parent_id": "00f067aa0ba902b7",'
        b' "exp": "1900000000"}',
        b'{"base_id": "4bf92f3577b34da6a3ce929d0e0e4736", "parent_id": "00f067aa0ba902b7",'
        b' "exp": true}',
        b'{"base_id": "4bf92f3577b34da6a3ce929d0e0e4736", "parent_id": "00f067aa0ba902b7",'
        b' "sampled": "yes", "exp": 1900000000}',
        b'{"base_id": "00000000000000000000000000000000", "parent_id": "00f067aa0ba902b7",'
        b' "exp": 1900000000}',
    ],
    ids=[
        "not-json",
        "not-an-object",
        "missing-fields",
        "base-id-not-a-string",
        "parent-id-not-hex",
        "exp-a-string",
        "exp-a-bool",
        "sampled-a-string",
        "all-zero-trace-id",
    ],
)
def test_a_correctly_signed_header_with_bad_contents_is_malformed(payload: bytes) -> None:
    info = base64.urlsafe_b64encode(payload).decode()
    assert reason_of(signer(), info, mac_of(info)) == "malformed"


@pytest.mark.parametrize(
    ("info", "mac"),
    [
        ("!!not base64!!", mac_of("!!not base64!!")),
        ("abc", mac_of("abc")),  # bad padding
        ("", mac_of("")),
        ("a" * (MAX_INFO_LENGTH + 1), mac_of("a" * (MAX_INFO_LENGTH + 1))),
        ("ünïcode", "0" * 64),
        ("eyJ9", "not hex"),
        ("eyJ9", "0" * 63),
    ],
    ids=["garbage", "bad-padding", "empty", "too-long", "not-ascii", "mac-not-hex", "mac-short"],
)
def test_garbage_headers_are_malformed(info: str, mac: str) -> None:
    assert reason_of(signer(), info, mac) == "malformed"


def test_a_mac_in_upper_case_or_with_spaces_still_verifies() -> None:
    info, mac = signer().sign(TRACE_ID, SPAN_ID, True)
    assert signer().verify(info, f" {mac.upper()} ").trace_id == TRACE_ID


@pytest.mark.parametrize(
    ("keys", "ttl"),
    [("", 60), ([], 60), (["ok", ""], 60), ([None], 60), ("k", 0), ("k", -1), ("k", True)],
)
def test_bad_keys_or_ttl_are_configuration_errors(keys: object, ttl: float) -> None:
    with pytest.raises(ConfigurationError, match=r"key|ttl"):
        TraceSigner(keys, ttl=ttl)  # type: ignore[arg-type]


def test_the_signer_never_shows_its_keys() -> None:
    text = repr(TraceSigner(["topsecret", "older"], ttl=5))
    assert "topsecret" not in text and text == "<TraceSigner keys=2 ttl=5s>"
