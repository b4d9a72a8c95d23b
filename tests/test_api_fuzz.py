"""A property-based fuzz of the REST API: whatever a client sends, the answer is never a
5xx, and nothing a write accepts breaks a later read.

Every route of ``/openapi.json`` is called with path and query parameters drawn from
hostile values (huge and negative integers, NUL, lone surrogates, huge strings, numbers
that overflow a double), and every write route with hostile bodies, both free-form JSON
and well-shaped records whose fields are hostile. After each write, the reads of what it
wrote (the job's metrics, its history, traces, ``/metrics``) must answer too.

Bounded for CI: ``derandomize=True`` (the same examples on every run) and 60 examples per
test (``FUZZ_EXAMPLES=5000 pytest tests/test_api_fuzz.py`` for a long run), plus two
deterministic sweeps of every parameter and every body value at the edges; the real app on
SQLite through FastAPI's TestClient.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobtrace import model
from jobtrace.server import create_app
from jobtrace.server.scrape import ScrapeSettings

API = "/api/v1"

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_HUGE_INTS = [2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, -1, 0]
_NASTY_TEXT = ["", " ", "\x00", "a\x00b", "\udc80", "x" * 5000, "../..", "%00", "é" * 300]
_NUMBER_TEXT = ["1e400", "-1e400", "NaN", "Infinity", "1e308", "18446744073709551616"]

ints = st.one_of(st.sampled_from(_HUGE_INTS), st.integers())
floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e300, -1e300, 1e-320, 253402128000.5, -62135510401.0]),
)
texts = st.one_of(st.sampled_from(_NASTY_TEXT), st.text(max_size=40))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts, st.sampled_from(["nan", "inf"]))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)
#: Values at the edges every parameter is tried with (see the sweep below).
EDGES = [str(2**63), str(2**64), str(-(2**63) - 1), "-1", "1e400", "NaN", "\x00", "x" * 5000]
#: A query or path parameter: what a URL can carry.
params = st.one_of(
    st.sampled_from(EDGES), texts, ints.map(str), floats.map(repr), st.sampled_from(_NUMBER_TEXT)
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    app = create_app(f"sqlite:///{path}", scrape=ScrapeSettings(retire_interval=0))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.post(f"{API}/experiments", json={"name": "e"})
        test_client.post(f"{API}/jobs", json={"id": "j", "experiment": "e"})
        yield test_client


def _routes(client: TestClient) -> list[tuple[str, str, list[str], list[str]]]:
    """(method, path template, path parameters, query parameters) of every route."""
    spec = client.get("/openapi.json").json()
    out = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = {"path": [], "query": []}  # type: dict[str, list[str]]
            for param in operation.get("parameters", []):
                where.setdefault(param["in"], []).append(param["name"])
            out.append((method.upper(), path, where["path"], where["query"]))
    return sorted(out)


#: Rewrites of a body's JSON text that json.dumps cannot produce itself: the first value
#: (after a key or in an array) becomes a number a double cannot hold, or a document nested
#: past every limit (but within what the JSON parser takes, and past it).
MUTATIONS = {
    "none": None,
    "overflow": "1e400",
    "big int": str(2**64),
    "deep": '{"a": ' * 1000 + "1" + "}" * 1000,
    "too deep": "[" * 5000 + "]" * 5000,
}
mutations = st.tuples(st.sampled_from(sorted(MUTATIONS)), st.integers(0, 20))


_VALUE = re.compile(r"(?<=[:\[] )[^,\]\}\[\{]+|(?<=\[)[^,\]\[\{]+")


def _raw(body: Any, mutation: str = "none", at: int = 0) -> bytes:
    """``body`` as JSON, its ``at``-th value (modulo their number) rewritten by ``mutation``."""
    text = json.dumps(body, ensure_ascii=True)
    replacement = MUTATIONS[mutation]
    spots = list(_VALUE.finditer(text))
    if replacement is not None and spots:
        spot = spots[at % len(spots)]
        text = text[: spot.start()] + replacement + text[spot.end() :]
    return text.encode()


def _url_part(value: str) -> str:
    """``value`` percent-encoded; a lone surrogate goes as the bytes it stands for (a URL
    can carry bytes that are not UTF-8)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def _check(response: Any, what: str) -> None:
    assert response.status_code < 500, f"{what} → {response.status_code}: {response.text[:500]}"


def _reads_still_answer(client: TestClient, job_id: str = "j") -> None:
    job = _url_part(job_id)
    for path in (
        f"{API}/jobs/{job}",
        f"{API}/jobs/{job}/metrics",
        f"{API}/jobs",
        f"{API}/experiments/e/metrics",
        f"{API}/traces",
        "/metrics",
    ):
        _check(client.get(path), f"GET {path} after a write")


@FUZZ
@given(data=st.data())
def test_no_route_answers_5xx_to_hostile_parameters(client: TestClient, data: Any) -> None:
    method, template, path_names, query_names = data.draw(st.sampled_from(_routes(client)))
    path = template
    for name in path_names:
        value = data.draw(st.one_of(st.just("j"), params), label=name)
        path = path.replace("{" + name + "}", _url_part(value) or "x")
    query = data.draw(st.dictionaries(st.sampled_from(query_names or ["x"]), params), label="query")
    path += "?" + "&".join(f"{k}={_url_part(v)}" for k, v in query.items())
    body = None
    if method in {"POST", "PUT", "PATCH"}:
        body = _raw(data.draw(documents, label="body"), *data.draw(mutations))
    response = client.request(
        method, path, content=body, headers={"Content-Type": "application/json"}
    )
    _check(response, f"{method} {path} {query}")


def test_every_parameter_of_every_route_survives_the_edge_values(client: TestClient) -> None:
    """A deterministic sweep (random examples may miss one parameter of one route): each
    parameter of each route alone at each edge value, the others left at their defaults."""
    for method, template, path_names, query_names in _routes(client):
        base = template
        for name in path_names:
            base = base.replace("{" + name + "}", "j" if "job" in name else "e")
        for value in EDGES:
            for name in path_names:
                path = template.replace("{" + name + "}", _url_part(value))
                for other in path_names:
                    path = path.replace("{" + other + "}", "j" if "job" in other else "e")
                _check(client.request(method, path), f"{method} {path}")
            for name in query_names:
                path = f"{base}?{name}={_url_part(value)}"
                _check(client.request(method, path), f"{method} {path}")


metric_bodies = st.fixed_dictionaries(
    {},
    optional={
        "name": texts,
        "value": st.one_of(floats, ints, texts),
        "step": ints,
        "timestamp": st.one_of(floats, ints, texts),
    },
)
job_bodies = st.fixed_dictionaries(
    {},
    optional={
        "id": texts,
        "name": texts,
        "experiment": texts,
        "status": texts,
        "startTime": st.one_of(floats, texts),
        "endTime": st.one_of(floats, texts),
        "heartbeatInterval": floats,
        "host": texts,
        "tags": documents,
        "params": documents,
    },
)


@FUZZ
@given(body=metric_bodies, mutation=mutations)
def test_logging_a_metric_never_5xx_and_never_breaks_a_read(
    client: TestClient, body: dict[str, Any], mutation: tuple[str, int]
) -> None:
    response = client.post(
        f"{API}/jobs/j/metrics",
        content=_raw(body, *mutation),
        headers={"Content-Type": "application/json"},
    )
    _check(response, f"POST metric {body}")
    if response.is_success:
        name = _url_part(response.json()["name"])
        _check(client.get(f"{API}/jobs/j/metrics/{name}/snapshots"), "history")
    _reads_still_answer(client)


@FUZZ
@given(body=job_bodies, mutation=mutations)
def test_creating_a_job_never_5xx_and_never_breaks_a_read(
    client: TestClient, body: dict[str, Any], mutation: tuple[str, int]
) -> None:
    response = client.post(
        f"{API}/jobs", content=_raw(body, *mutation), headers={"Content-Type": "application/json"}
    )
    _check(response, f"POST job {body}")
    if response.is_success:
        _reads_still_answer(client, response.json()["id"])


def _record(kind: str) -> st.SearchStrategy[list[Any]]:
    """A record of ``kind`` in the sink's positional form, each field sane or hostile."""
    sane: dict[str, Any] = {
        "trace_id": st.just("0" * 31 + "1"),
        "span_id": st.sampled_from(["0" * 15 + "1", "0" * 15 + "2"]),
        "job_id": st.just("j"),
        "status": st.sampled_from(["running", "succeeded", "success"]),
        "id": st.sampled_from(["j", "r1", "r2"]),
        "name": st.sampled_from(["n", "loss"]),
        "type": st.sampled_from(["counter", "gauge"]),
        "seq": st.integers(0, 10),
    }
    fields = []
    for name in model.FIELDS[kind]:
        hostile = (
            st.one_of(scalars, documents) if name in ("info", "tags", "params", "data") else scalars
        )
        fields.append(st.one_of(sane.get(name, floats), hostile))
    return st.tuples(st.just(kind), *fields).map(list)


records = st.sampled_from(sorted(model.FIELDS)).flatmap(_record)


@FUZZ
@given(
    batch=st.lists(records, min_size=1, max_size=4),
    n=st.integers(0, 10**9),
    mutation=mutations,
)
def test_ingesting_records_never_5xx_and_never_breaks_a_read(
    client: TestClient, batch: list[list[Any]], n: int, mutation: tuple[str, int]
) -> None:
    body = _raw({"id": f"fuzz-{n}-{len(batch)}", "records": batch}, *mutation)
    response = client.post(
        f"{API}/batches", content=body, headers={"Content-Type": "application/json"}
    )
    _check(response, f"POST batch {batch}")
    _reads_still_answer(client)
    _check(client.get(f"{API}/traces/{'0' * 31 + '1'}"), "the trace")


def _sample_records() -> list[list[Any]]:
    """One well-formed record of every kind, in the sink's positional form."""
    now = 1_700_000_000.0
    values: dict[str, Any] = {
        "job": ["j", 1, "n", "e", "running", now, None, None, 1, 0.1, 0.1, None, None, None,
                "h", 1, ["a"], {"t": 1}, {"p": [1, 2]}, now, 5.0, None],
        "metric": ["j", "m", 0, 1.5, now],
        "span": ["0" * 31 + "1", "0" * 15 + "1", None, "s", 1, 2, {"i": {"j": 1}}, None, None,
                 "j", "h", 1, "t"],
        "item": ["i", "j", "f", now, 0.5, 1, 2, 3, "success", None, None, 1.0, {"k": 1}],
        "series": ["src", "j", "c", "counter", None, '{"a":"1"}', 1.0, {"d": 1}, now],
        "profile": ["p", "j", "cpu", "folded", "a;b 1", now],
        "experiment": ["e", "d", {"t": 1}, now],
    }  # fmt: skip
    return [[kind, *fields] for kind, fields in sorted(values.items())]


def test_every_value_of_every_write_body_survives_each_mutation(client: TestClient) -> None:
    """Deterministic: each value of a well-formed body of each write route, in turn, becomes
    each of :data:`MUTATIONS` (a number past a double, past 64 bits, nesting 1,000 and
    5,000 deep); no answer is a 5xx, and the reads still answer afterwards."""
    bodies = {
        f"{API}/jobs/j/metrics": {"name": "m", "value": 1.5, "step": 1, "timestamp": 1.0e9},
        f"{API}/jobs": {"name": "n", "tags": {"a": [1]}, "params": {"p": 1}, "host": "h"},
        f"{API}/experiments": {"name": "x", "description": "d", "tags": {"a": 1}},
        f"{API}/batches": {"id": "b", "records": _sample_records()},
    }
    for number, (path, body) in enumerate(bodies.items()):
        spots = len(_VALUE.findall(json.dumps(body)))
        for mutation in sorted(MUTATIONS):
            for at in range(spots):
                sent = body
                if path.endswith("batches"):
                    sent = {**body, "id": f"sweep-{number}-{mutation}-{at}"}
                content = _raw(sent, mutation, at)
                response = client.post(
                    path, content=content, headers={"Content-Type": "application/json"}
                )
                _check(response, f"POST {path} {content[:300]!r}")
    _reads_still_answer(client)
    _check(client.get(f"{API}/traces/{'0' * 31 + '1'}"), "the trace")
