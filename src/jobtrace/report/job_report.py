"""The profile part of a job's report directory: ``report.html`` and ``profile.json`` next
to ``report.json``, written at the job's end or rebuilt from a store later.

At a job's end the profile is read back from where the job's records went, after a flush,
so the report shows exactly what the store holds: a SQLite file is read with the standard
library's ``sqlite3`` (a recorded job never pays SQLAlchemy's import), PostgreSQL through
the :class:`~jobtrace.store.Store`, a jobtrace server over its REST API with ``urllib``. A
sink that cannot be read back (a queue, a file) gives a report without flamegraphs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from jobtrace.profiles.folded import JobProfile, load_job_profile

__all__ = [
    "HTML_FILE",
    "PROFILE_FILE",
    "ReportKeys",
    "complete_report",
    "http_request",
    "profile_from_server",
    "read_profile",
    "write_profile_report",
]

log = logging.getLogger("jobtrace.report")

HTML_FILE = "report.html"
PROFILE_FILE = "profile.json"
#: Seconds the CLI waits for a server's answer (a job's end waits ``http_timeout``, the
#: http sink's setting, at least :data:`MIN_JOB_END_TIMEOUT`: a job must not hang on it).
HTTP_TIMEOUT = 30.0
MIN_JOB_END_TIMEOUT = 5.0


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_profile_report(out: Path, job: Mapping[str, Any], profile: JobProfile) -> None:
    """Write ``report.html`` and ``profile.json`` (the profile as the REST API serves it)
    into the report directory ``out``."""
    from jobtrace.report.profile_data import profile_to_json
    from jobtrace.report.profile_html import render_profile_html

    _write_atomic(out / PROFILE_FILE, orjson.dumps(profile_to_json(profile)))
    _write_atomic(out / HTML_FILE, render_profile_html(job, profile).encode("utf-8"))


def _sqlite_rows(url: str, job_id: str) -> list[tuple[str, str, str, float]]:
    import sqlite3

    from jobtrace.store import sqlite

    path = sqlite.path_of(url)
    if not path.exists():
        return []
    conn = sqlite.connect(path)
    try:
        cursor = conn.execute(
            "SELECT type, format, data, created_at FROM profiles WHERE job_id = ?", (job_id,)
        )
        return [(r[0], r[1], r[2], r[3]) for r in cursor]
    except sqlite3.OperationalError:  # a store from before profiles: nothing to read
        return []
    finally:
        conn.close()


def http_request(
    url: str, *, method: str = "GET", body: Any = None, timeout: float = HTTP_TIMEOUT
) -> Any:
    """One JSON request to a jobtrace server with ``JOBTRACE_TOKEN``; the decoded answer.

    Raises :class:`~jobtrace.errors.StoreError` with the server's one-line message, or
    :class:`~jobtrace.errors.NotFoundError` for a 404."""
    import urllib.error
    import urllib.request

    from jobtrace import _config
    from jobtrace.errors import NotFoundError, StoreError

    headers = {"Accept": "application/json", "User-Agent": "jobtrace"}
    data = None
    if body is not None:
        data = orjson.dumps(body)
        headers["Content-Type"] = "application/json"
    token = os.environ.get(_config.ENV_TOKEN, "").strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = str(orjson.loads(exc.read()).get("message") or exc.reason)
        except Exception:
            message = str(exc.reason)
        if exc.code == 404:
            raise NotFoundError(message) from exc
        raise StoreError(f"{_config.mask_url(url)} answered {exc.code}: {message}") from exc
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot reach {_config.mask_url(url)}: {exc}") from exc


def profile_from_server(base_url: str, job_id: str, timeout: float = HTTP_TIMEOUT) -> JobProfile:
    """The profile of ``job_id`` from the jobtrace server at ``base_url``."""
    from urllib.parse import quote

    from jobtrace.report.profile_data import profile_from_json

    url = f"{base_url.rstrip('/')}/api/v1/jobs/{quote(job_id, safe='')}/profile"
    doc = http_request(url, timeout=timeout)
    return profile_from_json(doc)


def read_profile(url: str, job_id: str, timeout: float = HTTP_TIMEOUT) -> JobProfile | None:
    """The profile of ``job_id`` from the store or server at ``url``; ``None`` when that
    kind of URL cannot be read back (``amqp://``, ``file://``, ``memory://``)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        return load_job_profile(_sqlite_rows(url, job_id))
    if scheme in {"http", "https"}:
        return profile_from_server(url, job_id, timeout)
    if scheme.startswith("postgres"):
        from jobtrace.store import Store

        # The job's writer has migrated the store already; no schema check per job end.
        with Store(url, migrate=False) as store:
            return store.job_profile(job_id)
    return None


class ReportKeys(NamedTuple):
    """Where a finished job's report can be fetched from (all ``None`` for a local store)."""

    download_key: str | None = None
    decryption_key: str | None = None
    server_url: str | None = None


def complete_report(
    out: Path, job: Mapping[str, Any], url: str, flush: Callable[[], object] | None
) -> ReportKeys:
    """At a job's end: deliver its records (``flush``), write ``report.html`` and
    ``profile.json`` into its report directory ``out``, and, when ``url`` is a jobtrace
    server, upload the directory as an encrypted bundle. Never raises: a problem is logged
    and the report stays as complete as it could be made.

    ``flush`` returns False when the records did not all reach the store (a store that is
    down, refusing or too slow; its sink has said so already, once): the store then gets
    no further requests, the report is written without the profile (``jobtrace report
    rebuild`` completes it later), and nothing is uploaded.
    """
    from jobtrace import _config

    reachable = True if flush is None else flush() is not False

    timeout = max(_config.current().http_timeout, MIN_JOB_END_TIMEOUT)
    profile = None
    if reachable:
        try:
            profile = read_profile(url, str(job["id"]), timeout)
        except Exception as exc:
            log.warning("jobtrace: cannot read the profile of job %s back: %s", job.get("id"), exc)
    try:
        write_profile_report(out, job, profile or JobProfile())
    except Exception as exc:
        log.warning("jobtrace: cannot write report.html of job %s: %s", job.get("id"), exc)
        return ReportKeys()
    if not reachable or url.split("://", 1)[0].lower() not in {"http", "https"}:
        return ReportKeys()
    try:
        from jobtrace._config import mask_url
        from jobtrace.report.bundle import upload_report

        sealed = upload_report(url, str(job["id"]), out, timeout)
    except Exception as exc:
        log.warning("jobtrace: cannot upload the report of job %s: %s", job.get("id"), exc)
        return ReportKeys()
    return ReportKeys(sealed.download_key, sealed.decryption_key, mask_url(url))
