"""Authentication of `jobtrace serve`, against the real command in a subprocess on SQLite and
PostgreSQL: tokens made and revoked with the CLI, writes and reads guarded by them, jobs
writable only by their owner's token (or an admin's), browser writes refused, and jobs
recording through the server with JOBTRACE_TOKEN — a wrong token spools, nothing is lost."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from jobtrace import _config, model
from jobtrace.client import Client, ClientError
from jobtrace.store import Store, tokens
from tests.cli_helpers import cli_env, jobtrace_cli
from tests.server_helpers import ServeProcess, assert_error

TOKEN = re.compile(r"jt_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
JSON = {"content-type": "application/json"}


def make_token(store_url: str, name: str, cwd: Path, *options: str) -> str:
    """A token made by the real CLI, as an operator does."""
    result = jobtrace_cli("token", "create", name, *options, "--store", store_url, cwd=cwd)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert TOKEN.fullmatch(token), result.stdout
    return token


@contextmanager
def serving(store_url: str, directory: Path, *args: str) -> Iterator[ServeProcess]:
    # Refresh 0: the server reads its tokens on every request, so a token made or revoked
    # by the CLI counts at once (2 s by default), and no test needs to wait.
    server = ServeProcess(store_url, directory, args, env={_config.ENV_AUTH_REFRESH: "0"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Iterator[ServeProcess]:
    with serving(store_url, tmp_path / "server") as s:
        yield s


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", **JSON}


def job_record(job_id: str, seq: int, status: str = "running") -> list[Any]:
    fields: dict[str, Any] = dict.fromkeys(model.FIELDS[model.JOB])
    fields.update(id=job_id, seq=seq, status=status, start_time=time.time())
    return model.to_list((model.JOB, *fields.values()))


def metric_record(job_id: str, step: int) -> list[Any]:
    return model.to_list((model.METRIC, job_id, "loss", step, 0.5, time.time()))


def post_batch(url: str, batch_id: str, records: list[Any], token: str | None) -> httpx.Response:
    headers = bearer(token) if token else JSON
    body = orjson.dumps({"id": batch_id, "records": records})
    return httpx.post(f"{url}/api/v1/batches", content=body, headers=headers)


def count(store_url: str, sql: str, **params: Any) -> int:
    with Store(store_url) as store, store.engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


def job_status(store_url: str, job_id: str) -> str | None:
    with Store(store_url) as store:
        job = store.get_job(job_id)
    return None if job is None else str(job["status"])


# -- the CLI ---------------------------------------------------------------------------------


def test_tokens_are_created_listed_and_revoked_with_the_cli(store_url: str, tmp_path: Path) -> None:
    secret = make_token(store_url, "alice", tmp_path)
    make_token(store_url, "ops", tmp_path, "--admin")

    again = jobtrace_cli("token", "create", "alice", "--store", store_url, cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        "jobtrace: error: a token named 'alice' exists; revoke it first "
        "(jobtrace token revoke alice) or choose another name"
    ]

    listed = jobtrace_cli("token", "list", "--store", store_url, cwd=tmp_path, check=True)
    assert "alice" in listed.stdout and secret[:16] in listed.stdout
    assert secret not in listed.stdout and secret[16:] not in listed.stdout
    with Store(store_url) as store, store.engine.connect() as conn:
        stored = " ".join(
            str(v) for row in conn.execute(sa.text("SELECT * FROM tokens")) for v in row
        )
    assert secret not in stored and secret[16:] not in stored  # only its digest is kept

    jobtrace_cli("token", "revoke", "alice", "--store", store_url, cwd=tmp_path, check=True)
    as_json = jobtrace_cli(
        "token", "list", "--json", "--store", store_url, cwd=tmp_path, check=True
    )
    rows = {
        (t["name"], t["admin"], t["revokedAt"] is not None) for t in orjson.loads(as_json.stdout)
    }
    assert rows == {("alice", False, True), ("ops", True, False)}

    twice = jobtrace_cli("token", "revoke", "alice", "--store", store_url, cwd=tmp_path)
    assert twice.returncode == 1
    assert "no live token named 'alice'" in twice.stderr
    # After a revoke the name is free again: a new token for the same owner.
    assert make_token(store_url, "alice", tmp_path) != secret


def test_token_commands_refuse_a_server_url_and_bad_names_in_one_line(tmp_path: Path) -> None:
    result = jobtrace_cli("token", "list", cwd=tmp_path, JOBTRACE_URL="http://127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "jobtrace: error: jobtrace token list needs a database store "
        "(--store sqlite:///… or postgresql://…), not 'http://127.0.0.1:9'"
    ]
    bad = jobtrace_cli("token", "create", "no spaces", cwd=tmp_path)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "token name 'no spaces' is not valid" in bad.stderr


def test_the_readme_token_commands_run_verbatim(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Authentication", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    env = cli_env(tmp_path / ".jobtrace")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    with Store(f"sqlite:///{tmp_path / 'jobs.db'}") as store:
        found = {(t.name, t.admin, t.revoked_at is not None) for t in tokens.list_tokens(store)}
    assert found == {("ops", True, False), ("alice", False, True)}


# -- the server ------------------------------------------------------------------------------


def test_without_tokens_the_server_is_open_and_a_first_token_closes_it(
    server: ServeProcess, store_url: str, tmp_path: Path
) -> None:
    assert post_batch(server.url, "b1", [job_record("open-job", 1)], None).status_code == 201
    assert httpx.get(f"{server.url}/api/v1/jobs/open-job").status_code == 200

    token = make_token(store_url, "alice", tmp_path)
    refused = post_batch(server.url, "b2", [job_record("later", 1)], None)
    body = assert_error(refused, 401, "unauthorized")
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "JOBTRACE_TOKEN" in body["message"]
    assert post_batch(server.url, "b2", [job_record("later", 1)], token).status_code == 201
    # A job written while the server was open belongs to no token: only an admin writes it.
    assert_error(post_batch(server.url, "b3", [job_record("open-job", 2)], token), 403)


def test_writes_need_a_live_token(server: ServeProcess, store_url: str, tmp_path: Path) -> None:
    token = make_token(store_url, "alice", tmp_path)
    url = server.url
    assert_error(post_batch(url, "b", [job_record("j", 1)], None), 401, "unauthorized")
    for wrong in ("jt_000000000000_" + "A" * 43, token[:-1] + "x", "not-a-token"):
        assert_error(post_batch(url, "b", [job_record("j", 1)], wrong), 401, "unauthorized")
    basic = httpx.post(f"{url}/api/v1/jobs", json={}, headers={"authorization": "Basic eDp5"})
    assert_error(basic, 401, "unauthorized")
    assert count(store_url, "SELECT count(*) FROM jobs") == 0

    assert post_batch(url, "b", [job_record("j", 1)], token).status_code == 201
    jobtrace_cli("token", "revoke", "alice", "--store", store_url, cwd=tmp_path, check=True)
    assert_error(post_batch(url, "b2", [job_record("j", 2)], token), 401, "unauthorized")
    with Client(url, token=token) as client, pytest.raises(ClientError) as info:
        client.jobs.create(name="after revoke")
    assert info.value.status == 401


def test_a_token_cannot_touch_another_tokens_job_but_an_admin_can(
    server: ServeProcess, store_url: str, tmp_path: Path
) -> None:
    alice = make_token(store_url, "alice", tmp_path)
    bob = make_token(store_url, "bob", tmp_path)
    admin = make_token(store_url, "ops", tmp_path, "--admin")
    url = server.url
    assert (
        post_batch(
            url, "a1", [job_record("alices", 1), metric_record("alices", 0)], alice
        ).status_code
        == 201
    )

    # The attack of the issue: a snapshot with a huge seq would mark the job failed for good.
    attack = post_batch(
        url, "x1", [job_record("bobs", 1), job_record("alices", 2**62, "failed")], bob
    )
    body = assert_error(attack, 403, "forbidden")
    assert body["detail"]["recordIndexes"] == [1]
    assert body["detail"]["jobIds"] == ["alices"]
    assert body["detail"]["token"] == "bob"
    assert "'alices'" in body["message"]
    # Lenient handling leaves a bad record out first: indexes still count in the batch sent.
    mixed = [metric_record("bobs", 0), ["metric", "bobs"], metric_record("alices", 3)]
    lenient = httpx.post(
        f"{url}/api/v1/batches",
        content=orjson.dumps({"id": "x1b", "records": mixed}),
        headers={**bearer(bob), "Prefer": "handling=lenient"},
    )
    detail = assert_error(lenient, 403, "forbidden")["detail"]
    assert detail["recordIndexes"] == [2]
    assert job_status(store_url, "alices") == "running"
    assert job_status(store_url, "bobs") is None  # nothing of a refused batch is stored
    assert_error(post_batch(url, "x2", [metric_record("alices", 1)], bob), 403, "forbidden")
    with Client(url, token=bob) as client:
        with pytest.raises(ClientError) as info:
            client.jobs.append_metric_by_id("alices", "loss", 9.0, metric_step=5)
        assert info.value.status == 403
        with pytest.raises(ClientError) as taken:
            client.jobs.create(job_id="alices")  # the id is alice's
        assert taken.value.status == 403
        created = client.jobs.create(name="bob's own")
        client.jobs.append_metric_by_id(created["id"], "loss", 1.0)
    assert count(store_url, "SELECT count(*) FROM metrics WHERE job_id = 'alices'") == 1

    # Alice goes on writing her job; an admin token may write anyone's.
    assert post_batch(url, "a2", [metric_record("alices", 1)], alice).status_code == 201
    fix = post_batch(url, "o1", [job_record("alices", 2**62, "succeeded")], admin)
    assert fix.status_code == 201
    assert job_status(store_url, "alices") == "succeeded"
    owners = count(store_url, "SELECT count(*) FROM job_owners WHERE owner = 'alice'")
    assert owners == 1


def test_reads_need_a_token_unless_the_server_opens_them(store_url: str, tmp_path: Path) -> None:
    token = make_token(store_url, "alice", tmp_path)
    with serving(store_url, tmp_path / "closed") as closed:
        assert_error(httpx.get(f"{closed.url}/api/v1/jobs"), 401, "unauthorized")
        assert_error(httpx.get(f"{closed.url}/metrics"), 401, "unauthorized")
        assert httpx.get(f"{closed.url}/api/v1/health").status_code == 200
        with Client(closed.url, token=token) as client:
            assert list(client.jobs.iter_all()) == []
    with serving(store_url, tmp_path / "open", "--open-reads") as opened:
        assert httpx.get(f"{opened.url}/api/v1/jobs").status_code == 200
        assert httpx.get(f"{opened.url}/metrics").status_code == 200
        assert_error(post_batch(opened.url, "b", [job_record("j", 1)], None), 401)


# -- browsers --------------------------------------------------------------------------------


def test_a_write_that_is_not_json_is_refused_even_by_an_open_server(
    server: ServeProcess, store_url: str
) -> None:
    body = orjson.dumps({"id": "b", "records": [job_record("csrf", 1)]})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = httpx.post(
            f"{server.url}/api/v1/batches", content=body, headers={"content-type": content_type}
        )
        assert_error(response, 415, "unsupported_media_type")
    no_type = httpx.post(f"{server.url}/api/v1/jobs", content=b'{"id": "csrf"}')
    assert_error(no_type, 415, "unsupported_media_type")
    assert job_status(store_url, "csrf") is None


def test_a_browser_write_from_another_origin_is_refused(store_url: str, tmp_path: Path) -> None:
    args = ("--allow-origin", "https://dash.example:3000")
    with serving(store_url, tmp_path / "server", *args) as server:
        jobs = f"{server.url}/api/v1/jobs"
        evil = httpx.post(jobs, json={"id": "evil"}, headers={"origin": "http://evil.example"})
        assert_error(evil, 403, "forbidden")
        # DNS rebinding: the page's own name resolved to this machine still is not its origin.
        host = f"evil.example:{server.port}"
        rebound = httpx.post(
            jobs, json={"id": "rebound"}, headers={"origin": f"http://{host}", "host": host}
        )
        assert_error(rebound, 403, "forbidden")
        assert_error(httpx.post(jobs, json={"id": "null"}, headers={"origin": "null"}), 403)
        own = httpx.post(jobs, json={"id": "own"}, headers={"origin": server.url})
        assert own.status_code == 201, own.text
        allowed = {"origin": "https://dash.example:3000"}
        assert httpx.post(jobs, json={"id": "dash"}, headers=allowed).status_code == 201
        assert httpx.post(jobs, json={"id": "program"}).status_code == 201  # no Origin
    assert [job_status(store_url, j) for j in ("evil", "rebound", "null")] == [None] * 3


# -- jobs recording through the server ------------------------------------------------------

POINTS, SPANS, ITEMS = 20_000, 5_000, 3_000
SCRIPT = f"""
import jobtrace
for step in range({POINTS}):
    jobtrace.log_metric("loss", 1.0 / (step + 1), step=step)
for _ in range({SPANS}):
    with jobtrace.Trace("work"):
        pass
metrics = jobtrace.BatchMetrics("auth-batch")
metrics.start()
for i in range({ITEMS}):
    metrics.record_file(f"f{{i}}.csv", duration=0.001)
metrics.finish()
"""


def stored(store_url: str, job_id: str) -> tuple[int, int, int]:
    return (
        count(store_url, "SELECT count(*) FROM metrics WHERE job_id = :j", j=job_id),
        count(store_url, "SELECT count(*) FROM spans WHERE job_id = :j", j=job_id),
        count(store_url, "SELECT count(*) FROM items WHERE job_id = 'auth-batch'"),
    )


def run_job(
    script: Path, job_id: str, url: str, token: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    return jobtrace_cli(
        "run", "--job-id", job_id, str(script), cwd=cwd, JOBTRACE_URL=url, JOBTRACE_TOKEN=token
    )


def test_a_job_with_its_token_stores_everything_through_the_server(
    server: ServeProcess, store_url: str, tmp_path: Path
) -> None:
    token = make_token(store_url, "alice", tmp_path)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    result = run_job(script, "with-token", server.url, token, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "JOBTRACE_TOKEN" not in result.stderr
    assert stored(store_url, "with-token") == (POINTS, SPANS, ITEMS)
    assert job_status(store_url, "with-token") == "succeeded"
    assert count(store_url, "SELECT count(*) FROM job_owners WHERE owner = 'alice'") == 2


def test_a_job_with_a_wrong_token_spools_and_is_delivered_once_the_token_is_fixed(
    server: ServeProcess, store_url: str, tmp_path: Path
) -> None:
    token = make_token(store_url, "alice", tmp_path)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    wrong = "jt_000000000000_" + "A" * 43
    result = run_job(script, "wrong-token", server.url, wrong, tmp_path)
    assert result.returncode == 0, result.stderr  # the program never notices
    hints = [line for line in result.stderr.splitlines() if "set JOBTRACE_TOKEN" in line]
    assert len(hints) == 1, result.stderr
    assert "HTTP 401" in hints[0]
    assert stored(store_url, "wrong-token") == (0, 0, 0)
    assert list((tmp_path / ".jobtrace" / "spool").iterdir())

    # Any later process of this directory with a good token delivers the spool.
    replay = subprocess.run(
        [sys.executable, "-c", "import jobtrace; jobtrace.flush()"],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace", JOBTRACE_URL=server.url, JOBTRACE_TOKEN=token),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    assert stored(store_url, "wrong-token") == (POINTS, SPANS, ITEMS)
    assert job_status(store_url, "wrong-token") == "succeeded"


# -- the warning -----------------------------------------------------------------------------


def test_serving_beyond_loopback_without_tokens_warns_loudly(
    store_url: str, tmp_path: Path
) -> None:
    def startup_log(directory: Path, *args: str) -> str:
        with serving(store_url, directory, *args):
            pass
        return (directory / "serve.log").read_text()

    warned = startup_log(tmp_path / "a", "--host", "0.0.0.0")
    assert "WARNING: serving on 0.0.0.0 with NO API TOKENS" in warned
    assert "jobtrace token create NAME --admin" in warned
    assert "WARNING" not in startup_log(tmp_path / "b")  # 127.0.0.1
    make_token(store_url, "ops", tmp_path, "--admin")
    assert "WARNING" not in startup_log(tmp_path / "c", "--host", "0.0.0.0")


def test_auth_settings_come_from_the_environment() -> None:
    from jobtrace.server.auth import AuthSettings

    env = {
        _config.ENV_AUTH_READS: "0",
        _config.ENV_ALLOWED_ORIGINS: "https://A.example:3000/, http://b.example",
        _config.ENV_AUTH_REFRESH: "0.5",
    }
    settings = AuthSettings.from_env(env)
    assert settings.auth_reads is False and settings.refresh_seconds == 0.5
    assert AuthSettings.from_env(settings.to_env()) == settings
    assert AuthSettings.from_env(env, auth_reads=True).auth_reads is True
    with pytest.raises(Exception, match=_config.ENV_AUTH_REFRESH):
        AuthSettings.from_env({_config.ENV_AUTH_REFRESH: "soon"})


# -- the sink, in process ----------------------------------------------------------------------


def test_the_http_sink_keeps_records_a_server_refuses_for_their_token(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobtrace.errors import StoreError
    from jobtrace.sinks.http import HTTPSink
    from tests.server_helpers import thread_server

    with Store(store_url) as store:
        alice = tokens.create(store, "alice")
        bob = tokens.create(store, "bob")
    with thread_server(store_url) as url:

        def sink(token: str | None) -> HTTPSink:
            monkeypatch.delenv(_config.ENV_TOKEN, raising=False)
            if token is not None:
                monkeypatch.setenv(_config.ENV_TOKEN, token)
            return HTTPSink(url)

        first = [tuple(job_record("alices", 1)), tuple(metric_record("alices", 0))]
        sink(alice).write(first, batch_id="a1")
        batch = [tuple(metric_record("alices", step)) for step in range(1, 50)]
        for token, status, sent in ((None, 401, "no token"), (bob, 403, "a token it refused")):
            refusing = sink(token)
            with pytest.raises(StoreError) as info:  # raised: the recorder spools the batch
                refusing.write(batch, batch_id="b1")
            assert refusing.rejected == 0  # and nothing was dropped as a bad record
            assert f"HTTP {status}" in str(info.value) and sent in str(info.value)
            assert "set JOBTRACE_TOKEN" in str(info.value)
        sink(alice).write(batch, batch_id="b1")
    assert count(store_url, "SELECT count(*) FROM metrics WHERE job_id = 'alices'") == 50


def test_every_record_kind_naming_a_job_is_checked_against_its_owner(store_url: str) -> None:
    from jobtrace.server.auth import AuthSettings, Guard, Identity

    def record(kind: str, job_id: str) -> model.Record:
        fields: dict[str, Any] = dict.fromkeys(model.FIELDS[kind])
        fields["id" if kind == model.JOB else "job_id"] = job_id
        return (kind, *fields.values())

    with Store(store_url) as store:
        guard = Guard(store, AuthSettings())
        alice, bob = Identity("alice", False, "k1"), Identity("bob", False, "k2")
        guard.check_records(alice, [record(model.JOB, "alices")])
        kinds = [k for k in model.FIELDS if k != model.EXPERIMENT]
        batch = [record(kind, "alices") for kind in kinds]
        batch.insert(2, record(model.SPAN, None))  # type: ignore[arg-type]  # no job: anyone's
        batch.insert(3, (model.EXPERIMENT, "shared", None, None, 1.0))
        with pytest.raises(Exception) as info:
            guard.check_records(bob, batch)
        detail = info.value.error_detail  # type: ignore[attr-defined]
        assert detail["recordIndexes"] == [i for i, r in enumerate(batch) if "alices" in r]
        assert len(detail["recordIndexes"]) == len(kinds) == 6
        guard.check_records(alice, batch)  # the owner may
        guard.check_records(Identity("ops", True, "k3"), batch)  # so may an admin
        guard.check_records(None, batch)  # and anyone while the server has no tokens


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("db-host", False),
    ],
)
def test_only_loopback_addresses_count_as_private(host: str, loopback: bool) -> None:
    from jobtrace.server.auth import is_loopback

    assert is_loopback(host) is loopback


def test_a_servers_verifier_records_when_tokens_were_last_used(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobtrace.server import auth

    monkeypatch.setattr(auth, "USED_WRITE_INTERVAL", 0.0)
    with Store(store_url) as store:
        secret = tokens.create(store, "alice")
        tokens.create(store, "bob")
        verifier = auth.TokenVerifier(store, refresh_seconds=0.0)
        verifier.refresh()
        identity = verifier.identify(secret)
        assert identity is not None and identity.name == "alice" and not identity.admin
        assert verifier.identify(secret + "x") is None
        verifier.refresh()  # writes the use it saw
        used = {t.name: t.last_used_at for t in tokens.list_tokens(store)}
    assert used["alice"] is not None and used["bob"] is None
