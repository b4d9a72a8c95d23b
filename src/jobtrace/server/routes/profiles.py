"""``/jobs/{id}/profile`` (a job's folded profiles) and ``/reports`` (encrypted bundles).

A profile is read back from its many records and folded per request: wall and CPU time
stacks, peak-memory stacks, the timeline and the peak per process, in the shape of
:func:`jobtrace.report.profile_data.profile_to_json`.

Report bundles are ciphertext a client sealed at its job's end (see
:mod:`jobtrace.report.bundle`): the server checks the upload's size and ownership, stores
it under its download key, and hands it back to whoever knows that key (and may read).
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import Field

from jobtrace.report.profile_data import profile_to_json
from jobtrace.server.auth import Guard, IdentityDep, forbidden_jobs
from jobtrace.server.deps import StoreDep
from jobtrace.server.errors import APIError
from jobtrace.server.params import APIModel
from jobtrace.server.wire import JSONBody

__all__ = ["BundleUpload", "router"]

router = APIRouter(tags=["profiles"])

JobId = Annotated[str, Path(min_length=1, max_length=128, description="The job's id.")]
DownloadKey = Annotated[
    str,
    Path(pattern=r"^[A-Za-z0-9_-]{16,64}$", description="The bundle's download key."),
]
#: Largest sealed bundle accepted (the request body limit applies as well).
MAX_BUNDLE_BYTES = 48 * 1024 * 1024


@router.get("/jobs/{job_id}/profile", summary="A job's folded profiles and timeline")
def get_profile(job_id: JobId, store: StoreDep) -> JSONBody:
    profile = store.job_profile(job_id)
    return JSONBody({"jobId": job_id, "empty": profile.empty, **profile_to_json(profile)})


class BundleUpload(APIModel):
    """A sealed report bundle: its download key, its job and the ciphertext (base64)."""

    key: str = Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")
    job_id: str | None = Field(None, min_length=1, max_length=128)
    data: str = Field(min_length=1)


@router.post("/reports", status_code=201, summary="Keep an encrypted report bundle")
def upload_bundle(
    body: BundleUpload, store: StoreDep, request: Request, identity: IdentityDep
) -> JSONBody:
    # A bundle names its job, so only the job's own token (or an admin) may add one.
    guard: Guard = request.app.state.auth
    if body.job_id is not None and guard.check_jobs(identity, {body.job_id}):
        assert identity is not None
        raise forbidden_jobs(identity, {body.job_id})
    try:
        data = base64.b64decode(body.data, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(422, "data must be base64", detail={"field": "data"}) from None
    if len(data) > MAX_BUNDLE_BYTES:
        raise APIError(413, f"a report bundle may hold at most {MAX_BUNDLE_BYTES} bytes")
    if not store.put_bundle(body.key, body.job_id, data, time.time()):
        raise APIError(409, "a bundle with this download key exists", detail={"key": body.key})
    return JSONBody({"key": body.key, "jobId": body.job_id, "size": len(data)}, status_code=201)


@router.get("/reports/{key}", summary="An encrypted report bundle, by download key")
def download_bundle(key: DownloadKey, store: StoreDep) -> JSONBody:
    found = store.get_bundle(key)
    return JSONBody(
        {
            "key": found["key"],
            "jobId": found["job_id"],
            "createdAt": found["created_at"],
            "data": base64.b64encode(found["data"]).decode("ascii"),
        }
    )
