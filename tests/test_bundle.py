"""Sealed report bundles: what opens, and everything that must not."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobtrace.report.bundle import BUNDLE_FILES, BundleError, open_bundle, pack, seal, unpack


@settings(max_examples=25)
@given(st.binary(max_size=4096))
def test_a_sealed_bundle_opens_with_its_keys(plain: bytes) -> None:
    sealed = seal(plain)
    assert open_bundle(sealed.data, sealed.download_key, sealed.decryption_key) == plain
    assert len(sealed.decryption_key) == 43 and sealed.download_key != sealed.decryption_key


def test_every_bundle_gets_fresh_keys() -> None:
    first, second = seal(b"same"), seal(b"same")
    assert first.download_key != second.download_key
    assert first.decryption_key != second.decryption_key and first.data != second.data


def test_a_wrong_key_a_flipped_byte_or_another_download_key_is_refused() -> None:
    sealed = seal(b"the report")
    other = seal(b"x")
    flipped = bytearray(sealed.data)
    flipped[-5] ^= 0x40
    for data, download_key, key in [
        (sealed.data, sealed.download_key, other.decryption_key),
        (bytes(flipped), sealed.download_key, sealed.decryption_key),
        (sealed.data, other.download_key, sealed.decryption_key),  # moved to another key
    ]:
        with pytest.raises(BundleError, match="wrong decryption key, or the bundle was tampered"):
            open_bundle(data, download_key, key)


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        (b"JTB1" + b"\0" * 40, "!!!not base64!!!", "not valid"),
        (b"JTB1" + b"\0" * 40, "c2hvcnQ", "43 characters"),
        (b"PK\3\4 a zip, not a bundle" * 3, "A" * 43, "not a jobtrace report bundle"),
    ],
)
def test_malformed_keys_and_downloads_get_one_clear_error(
    data: bytes, key: str, message: str
) -> None:
    with pytest.raises(BundleError, match=message):
        open_bundle(data, "d" * 24, key)


def test_pack_and_unpack_carry_the_report_files_only(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in BUNDLE_FILES:
        (source / name).write_text(f"content of {name}")
    (source / "notes.txt").write_text("not part of a report")
    written = unpack(pack(source), tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(BUNDLE_FILES)
    for name in BUNDLE_FILES:
        assert (tmp_path / "out" / name).read_text() == f"content of {name}"


@pytest.mark.parametrize("name", ["../escape.html", "/etc/report.html", "extra.json"])
def test_unpacking_refuses_any_other_file_name(tmp_path: Path, name: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("report.json", "{}")
        archive.writestr(name, "x")
    with pytest.raises(BundleError, match="unexpected files"):
        unpack(buffer.getvalue(), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.html").exists()


def test_unpacking_something_that_is_not_a_zip_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a report archive"):
        unpack(b"plain text", tmp_path / "out")
