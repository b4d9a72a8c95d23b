"""A job's profile read back from SQLite, PostgreSQL and a server's REST API; encrypted
report bundles kept by the server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from jobtrace.errors import JobNotFoundError, NotFoundError
from jobtrace.report.bundle import open_bundle, seal, upload_bundle
from jobtrace.report.profile_data import profile_from_json
from jobtrace.server.auth import AuthSettings
from jobtrace.store import Store, tokens
from tests.profile_helpers import (
    LOAD,
    MAIN,
    MEMORY,
    PARSE,
    PROCESS,
    READ,
    STACKS,
    T0,
    job_record,
    profile_records,
)
from tests.server_helpers import assert_error, thread_server


def stored_store(store_url: str, job_id: str = "job-p1") -> Store:
    store = Store(store_url)
    store.write([job_record(job_id), *profile_records(job_id)])
    return store


def test_a_jobs_profile_records_fold_back_into_wall_cpu_memory_and_timeline(
    store_url: str,
) -> None:
    with stored_store(store_url) as store:
        profile = store.job_profile("job-p1")
    read_stack = (PROCESS, MAIN, LOAD, READ)
    assert profile.wall.stacks[read_stack] == 1_500_000
    assert profile.cpu.stacks[read_stack] == 100_000
    assert profile.wall.total == sum(wall for _, _, wall, _ in STACKS)
    assert profile.cpu.total == sum(cpu for _, _, _, cpu in STACKS)
    assert profile.memory.stacks[(PROCESS, MAIN, LOAD, PARSE)] == MEMORY[f"{MAIN};{LOAD};{PARSE}"]
    assert profile.peak_kb == {PROCESS: 330 * 1024}
    assert profile.memory_mode == "approximate"
    points = profile.timeline[PROCESS]
    assert len(points) == 16 and points[0][0] == T0 and points == sorted(points)


def test_an_unknown_job_has_no_profile_and_a_job_without_samples_an_empty_one(
    store_url: str,
) -> None:
    with Store(store_url) as store:
        store.write([job_record("job-bare")])
        assert store.job_profile("job-bare").empty
        with pytest.raises(JobNotFoundError):
            store.job_profile("job-missing")


def test_the_rest_api_serves_a_jobs_folded_profile(store_url: str) -> None:
    stored_store(store_url).close()
    with thread_server(store_url) as url:
        response = httpx.get(f"{url}/api/v1/jobs/job-p1/profile")
        missing = httpx.get(f"{url}/api/v1/jobs/nope/profile")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["jobId"] == "job-p1" and body["empty"] is False
    assert body["wall"]["unit"] == "us" and body["memory"]["unit"] == "bytes"
    assert [f"{PROCESS};{MAIN};{LOAD};{READ}", 1_500_000] in body["wall"]["stacks"]
    with Store(store_url) as store:
        assert profile_from_json(body) == store.job_profile("job-p1")
    assert_error(missing, 404)


def test_reading_a_profile_needs_a_token_once_the_server_has_tokens(
    store_url: str,
) -> None:
    with stored_store(store_url) as store:
        secret = tokens.create(store, "alice")
    auth = AuthSettings(auth_reads=True)
    with thread_server(store_url, auth=auth) as url:  # type: ignore[arg-type]
        anonymous = httpx.get(f"{url}/api/v1/jobs/job-p1/profile")
        allowed = httpx.get(
            f"{url}/api/v1/jobs/job-p1/profile", headers={"Authorization": f"Bearer {secret}"}
        )
    assert_error(anonymous, 401)
    assert allowed.status_code == 200


def test_the_server_keeps_only_the_ciphertext_of_a_report_bundle(
    store_url: str, tmp_path: Path
) -> None:
    plain = b"<html>the secret report of job-p1</html>" * 10
    sealed = seal(plain)
    Store(store_url).close()
    with thread_server(store_url) as url:
        upload_bundle(url, "job-p1", sealed)
        again = httpx.post(
            f"{url}/api/v1/reports",
            json={"key": sealed.download_key, "jobId": "job-p1", "data": "AAAA"},
        )
        fetched = httpx.get(f"{url}/api/v1/reports/{sealed.download_key}")
        unknown = httpx.get(f"{url}/api/v1/reports/{'x' * 24}")
    assert_error(again, 409)
    assert_error(unknown, 404)
    with Store(store_url) as store:
        kept = store.get_bundle(sealed.download_key)
        with pytest.raises(NotFoundError):
            store.get_bundle("y" * 24)
    assert kept["job_id"] == "job-p1"
    assert b"secret" not in kept["data"]
    assert open_bundle(kept["data"], sealed.download_key, sealed.decryption_key) == plain
    assert fetched.json()["jobId"] == "job-p1"


def test_uploading_a_bundle_for_another_tokens_job_is_refused(store_url: str) -> None:
    with Store(store_url) as store:
        alice = tokens.create(store, "alice")
        bob = tokens.create(store, "bob")
    sealed = seal(b"report")
    with thread_server(store_url) as url:
        # alice's job: claimed by her first write.
        httpx.post(
            f"{url}/api/v1/batches",
            json={"id": "b1", "records": [list(job_record("job-a"))]},
            headers={"Authorization": f"Bearer {alice}"},
        ).raise_for_status()
        body = {"key": sealed.download_key, "jobId": "job-a", "data": "AAAA"}
        anonymous = httpx.post(f"{url}/api/v1/reports", json=body)
        by_bob = httpx.post(
            f"{url}/api/v1/reports", json=body, headers={"Authorization": f"Bearer {bob}"}
        )
        by_alice = httpx.post(
            f"{url}/api/v1/reports", json=body, headers={"Authorization": f"Bearer {alice}"}
        )
    assert_error(anonymous, 401)
    assert_error(by_bob, 403, "forbidden")
    assert by_alice.status_code == 201, by_alice.text
