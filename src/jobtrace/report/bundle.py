"""Encrypted report bundles: a job's report directory, sealed on the client and kept by a
jobtrace server as ciphertext it cannot read (Sciagraph's download keys).

At the end of a job recording to a server, the report directory's files (``report.html``,
``report.json``, ``profile.json``) are zipped, encrypted with AES-256-GCM under a fresh
random key, and uploaded under a random *download key*. The *decryption key* is only ever
in the job's log message and :class:`~jobtrace.report.result.ReportResult`, so the server,
its database and their backups hold nothing readable.

``jobtrace report download DOWNLOAD_KEY DECRYPTION_KEY`` fetches the ciphertext and opens
it. GCM authenticates the whole bundle and, as associated data, the download key it was
stored under: a wrong key, a flipped byte or a bundle moved to another key all fail to
open with one clear error, never a partly written directory.

Wire format of a sealed bundle: ``b"JTB1"``, a 12-byte nonce, then the GCM ciphertext and
tag. Keys travel as unpadded URL-safe base64 (the decryption key: 32 bytes, 43 characters).
"""

from __future__ import annotations

import base64
import binascii
import io
import secrets
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from jobtrace.errors import JobtraceError

__all__ = [
    "BUNDLE_FILES",
    "BundleError",
    "SealedBundle",
    "download_bundle",
    "open_bundle",
    "pack",
    "seal",
    "unpack",
    "upload_bundle",
    "upload_report",
]

#: The files of a report directory that travel in a bundle (and the only ones unpacked).
BUNDLE_FILES = ("report.html", "report.json", "profile.json")
#: Where bundles go under a server's URL.
BUNDLES_PATH = "/api/v1/reports"
_MAGIC = b"JTB1"
_NONCE = 12
#: Largest bundle accepted when unpacking (a zip bomb stops here, not at the disk's end).
MAX_UNPACKED_BYTES = 512 * 1024 * 1024


class BundleError(JobtraceError):
    """A bundle cannot be opened: wrong key, tampered or not a jobtrace bundle."""


class SealedBundle(NamedTuple):
    download_key: str
    decryption_key: str
    data: bytes


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pack(directory: Path, names: Iterable[str] = BUNDLE_FILES) -> bytes:
    """A zip of the report files present in ``directory``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            path = directory / name
            if path.is_file():
                archive.write(path, name)
    return buffer.getvalue()


def seal(plain: bytes) -> SealedBundle:
    """Encrypt ``plain`` under a new random key, bound to a new random download key."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = AESGCM.generate_key(bit_length=256)
    download_key = _b64(secrets.token_bytes(18))
    nonce = secrets.token_bytes(_NONCE)
    cipher = AESGCM(key).encrypt(nonce, plain, download_key.encode("ascii"))
    return SealedBundle(download_key, _b64(key), _MAGIC + nonce + cipher)


def open_bundle(data: bytes, download_key: str, decryption_key: str) -> bytes:
    """Decrypt a sealed bundle; :class:`BundleError` if the key or the bundle is wrong."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        key = _unb64(decryption_key)
    except (binascii.Error, ValueError) as exc:
        raise BundleError("the decryption key is not valid (not URL-safe base64)") from exc
    if len(key) != 32:
        raise BundleError("the decryption key is not valid (it must be 43 characters)")
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + _NONCE + 16:
        raise BundleError("the download is not a jobtrace report bundle")
    nonce = data[len(_MAGIC) : len(_MAGIC) + _NONCE]
    try:
        return AESGCM(key).decrypt(
            nonce, data[len(_MAGIC) + _NONCE :], download_key.encode("ascii")
        )
    except InvalidTag:
        raise BundleError(
            "cannot decrypt the report bundle: wrong decryption key, or the bundle was "
            "tampered with"
        ) from None


def unpack(plain: bytes, out: Path) -> list[Path]:
    """Write the report files of a decrypted bundle into ``out``; return their paths.

    Only the known file names are written (a name with a path in it is refused), so a
    bundle cannot write outside ``out``."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(plain))
    except zipfile.BadZipFile as exc:
        raise BundleError("the decrypted bundle is not a report archive") from exc
    with archive:
        infos = archive.infolist()
        unknown = [i.filename for i in infos if i.filename not in BUNDLE_FILES]
        if unknown:
            raise BundleError(f"the bundle holds unexpected files: {', '.join(unknown[:3])}")
        if sum(i.file_size for i in infos) > MAX_UNPACKED_BYTES:
            raise BundleError("the bundle is too large to unpack")
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for info in infos:
            path = out / info.filename
            path.write_bytes(archive.read(info))
            written.append(path)
    return written


def upload_bundle(
    base_url: str, job_id: str | None, sealed: SealedBundle, timeout: float = 30.0
) -> None:
    """Store ``sealed`` (ciphertext and download key only) on the server at ``base_url``."""
    from jobtrace.report.job_report import http_request

    http_request(
        base_url.rstrip("/") + BUNDLES_PATH,
        method="POST",
        body={
            "key": sealed.download_key,
            "jobId": job_id,
            "data": base64.b64encode(sealed.data).decode("ascii"),
        },
        timeout=timeout,
    )


def download_bundle(base_url: str, download_key: str) -> bytes:
    """The ciphertext stored under ``download_key`` on the server at ``base_url``."""
    from urllib.parse import quote

    from jobtrace.errors import NotFoundError
    from jobtrace.report.job_report import http_request

    try:
        url = f"{base_url.rstrip('/')}{BUNDLES_PATH}/{quote(download_key, safe='')}"
        doc: Any = http_request(url)
    except NotFoundError:
        raise BundleError(
            f"no report bundle with download key {download_key!r} on this server"
        ) from None
    try:
        return base64.b64decode(doc["data"], validate=True)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise BundleError("the server's answer holds no report bundle") from exc


def upload_report(
    base_url: str, job_id: str | None, directory: Path, timeout: float = 30.0
) -> SealedBundle:
    """Pack, seal and upload the report directory ``directory``; the keys to get it back."""
    sealed = seal(pack(directory))
    upload_bundle(base_url, job_id, sealed, timeout)
    return sealed
