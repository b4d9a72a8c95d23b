"""The dashboard's pages and reads without a browser: every page renders with a strict
Content-Security-Policy and no inline script, user strings are escaped, bad parameters
are pages with a 4xx, the chart reads keep every bucket's extremes, and a token-guarded
server signs browsers in with a cookie that reads but never writes."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from jobtrace import model
from jobtrace.dashboard import UI_HINT
from jobtrace.dashboard.services import bucket_quantile
from jobtrace.errors import JobNotFoundError, QueryError
from jobtrace.server import create_app
from jobtrace.server.auth import SESSION_COOKIE
from jobtrace.store import Store, tokens
from tests.dashboard_helpers import (
    HOSTILE,
    HOSTILE_METRIC,
    HOSTILE_PARAM,
    SPIKE_STEP,
    SPIKE_VALUE,
    STEPS,
    TRACE_ID,
    Seeded,
    job,
    listening,
    seed,
)

#: What a browser asks for (a program asking for / gets the API's index instead).
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\b(?:src=|type=\"application/json\"))[^>]*>", re.I)


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[str, Seeded]:
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    return url, seed(url)


@pytest.fixture
def client(seeded: tuple[str, Seeded]) -> Iterator[TestClient]:
    with TestClient(create_app(seeded[0]), headers=HTML) as test_client:
        yield test_client


def pages(s: Seeded) -> list[str]:
    return [
        "/",
        "/?metric=loss&metric=accuracy&sort=metric.loss&desc=1",
        f"/jobs/{s.runs[0]}",
        f"/jobs/{s.batch}",
        f"/jobs/{s.hostile}",
        "/experiments",
        "/experiments/vision",
        f"/compare?job={s.runs[0]}&job={s.runs[1]}&job={s.hostile}",
        "/traces",
        f"/traces/{TRACE_ID}",
        "/services",
        "/login",
    ]


def test_every_page_renders_with_a_strict_policy_and_no_inline_script(
    client: TestClient, seeded: tuple[str, Seeded]
) -> None:
    for path in pages(seeded[1]):
        response = client.get(path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "default-src 'none'" in policy, path
        assert "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert INLINE_SCRIPT.search(response.text) is None, path
        assert "http://" not in response.text and "https://" not in response.text, path


def test_markup_in_names_params_tags_and_metric_names_renders_as_text(
    client: TestClient, seeded: tuple[str, Seeded]
) -> None:
    s = seeded[1]
    for path in (
        "/",
        f"/jobs/{s.hostile}",
        f"/compare?job={s.hostile}&job={s.runs[0]}",
        f"/?metric={HOSTILE_METRIC}",
    ):
        text = client.get(path).text
        for raw in (HOSTILE, HOSTILE_PARAM, HOSTILE_METRIC):
            assert raw not in text, (path, raw)
    jobs = client.get("/").text
    assert "&lt;img src=x onerror=alert(1)&gt;" in jobs
    page = client.get(f"/jobs/{s.hostile}").text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page  # the param, shown as text
    # The data the page's scripts read is JSON with <, > and & escaped.
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in page


def test_jobs_page_filters_by_search_status_experiment_and_tag(
    client: TestClient, seeded: tuple[str, Seeded]
) -> None:
    def names(query: str) -> list[str]:
        text = client.get("/" + query).text
        return re.findall(r'<td class="name"><a href="/jobs/[^"]+">([^<]+)</a>', text)

    assert names("?q=name:resnet*") == ["resnet-c", "resnet-b", "resnet-a"]
    assert names("?status=failed") == ["nightly-etl"]
    assert names("?experiment=vision&q=metric.accuracy>0.9") == ["resnet-c"]
    assert names("?tag=team:cv&sort=name") == ["resnet-a", "resnet-b", "resnet-c"]
    assert names("?pageLength=2") == ["ingest-files", "nightly-etl"]
    assert names("?pageLength=2&index=4") == ["resnet-b", "resnet-a"]


def test_chosen_metric_columns_show_each_jobs_latest_value(
    client: TestClient, seeded: tuple[str, Seeded]
) -> None:
    text = client.get("/?q=name:resnet-a&metric=accuracy").text
    assert '<th><a href="' in text and ">accuracy</a></th>" in text
    assert "0.877991" in text  # resnet-a's accuracy at its last step


def test_bad_parameters_are_pages_with_a_4xx_saying_what_is_wrong(client: TestClient) -> None:
    response = client.get("/?q=foo.bar>1")
    assert response.status_code == 422
    assert 'id="problem"' in response.text and "at character 1 of the search" in response.text
    assert client.get("/?pageLength=0").status_code == 400
    assert client.get("/?status=sleeping").status_code == 400
    assert client.get("/?tag=novalue").status_code == 400
    assert client.get("/jobs/no-such-job").status_code == 404
    assert client.get("/experiments/no-such").status_code == 404
    assert client.get("/traces/ffff0000").status_code == 404
    assert client.get("/compare").status_code == 400
    too_many = "&".join(f"job=j{i}" for i in range(11))
    assert client.get(f"/compare?{too_many}").status_code == 400


def test_compare_marks_rows_that_differ(client: TestClient, seeded: tuple[str, Seeded]) -> None:
    s = seeded[1]
    text = client.get(f"/compare?job={s.runs[1]}&job={s.runs[2]}&diff=1").text
    assert 'class="grid only-diff"' in text  # the switch's state comes from the address
    marked = re.findall(r'<tr class="(same|differs)"><th>([^<]+)</th>', text)
    found = {label: kind for kind, label in marked}
    assert found["param lr"] == "same" and found["param optimizer"] == "same"
    assert found["metric loss"] == "differs" and found["param batch"] == "same"


def test_job_page_shows_batch_items_failures_first(
    client: TestClient, seeded: tuple[str, Seeded]
) -> None:
    text = client.get(f"/jobs/{seeded[1].batch}").text
    rows = re.findall(r"<tr( class=\"err\")?><td>(file-\d+\.csv)</td>", text)
    assert [name for _, name in rows[:4]] == [
        "file-003.csv",
        "file-013.csv",
        "file-023.csv",
        "file-033.csv",
    ]
    assert all(err for err, _ in rows[:4]) and not any(err for err, _ in rows[4:])
    assert "ParseError: line 3" in text


def test_services_page_shows_count_mean_and_p95_per_context(client: TestClient) -> None:
    text = client.get("/services").text
    row = re.search(r"time_profiler</td><td class=\"mono\">([^<]+)</td>(.*?)</tr>", text)
    assert row is not None and row.group(1) == "context=Shop:checkout.price"
    cells = re.findall(r'<td class="num">([^<]+)</td>', row.group(2))
    # count, mean 12.5/100, p95: rank 95 is 15/19 of the way through the (0.1, 1] bucket
    assert cells == ["100", "0.125", "0.810526"]
    assert "route=/buy" in text


def test_histogram_quantile_interpolates_inside_its_bucket() -> None:
    buckets = [(0.1, 50.0), (1.0, 100.0), (math.inf, 100.0)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.1)
    assert bucket_quantile(0.95, buckets) == pytest.approx(0.1 + 0.9 * 0.9)
    assert bucket_quantile(0.95, [(1.0, 0.0), (math.inf, 10.0)]) == 1.0  # in +Inf
    assert bucket_quantile(0.95, []) is None


def test_the_job_report_downloads_as_a_file(client: TestClient, seeded: tuple[str, Seeded]) -> None:
    response = client.get(f"/jobs/{seeded[1].runs[0]}/report.html")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    assert response.text.startswith("<!DOCTYPE html>") and "jobtrace-data" in response.text


def test_assets_come_from_the_installed_packages(client: TestClient) -> None:
    plotly = client.get("/ui/static/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    assert plotly.headers["content-type"].startswith("text/javascript")
    for name in ("dashboard.js", "dashboard.css", "profile_report.js", "trace_report.js"):
        assert client.get(f"/ui/static/{name}").status_code == 200
    assert client.get("/ui/static/../../etc/passwd").status_code == 404
    assert client.get("/ui/static/nothing.js").status_code == 404


def test_without_the_ui_extra_the_api_works_and_root_says_what_to_install(
    seeded: tuple[str, Seeded], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "plotly", None)  # an import of it now fails
    with TestClient(create_app(seeded[0]), headers=HTML) as plain:
        root = plain.get("/")
        assert root.status_code == 200 and root.text.strip() == UI_HINT
        assert "pip install 'jobtrace[ui]'" in root.text
        assert plain.get("/api/v1/jobs").status_code == 200


# -- the chart read ----------------------------------------------------------------------------


def write_series(store: Store, job_id: str, values: list[float], name: str = "loss") -> None:
    store.write(
        [job(job_id, job_id)]
        + [(model.METRIC, job_id, name, step, v, 1000.0 + step) for step, v in enumerate(values)]
    )


def test_buckets_keep_a_one_step_spike_and_every_extreme(store_url: str) -> None:
    n = 120_000
    values = [math.sin(i / 500) for i in range(n)]
    values[77_777] = 1e6
    values[5] = -1e6
    with Store(store_url) as store:
        write_series(store, "long", values)
        found = store.metric_buckets(["long"], "loss", buckets=500)
    series = found.series[0]
    assert (found.start, found.end, found.exact) == (0, n - 1, False)
    assert series.total == n and len(series.points) <= 2 * 500
    by_step = {p.step: p.value for p in series.points}
    assert max(by_step.values()) == 1e6 and min(by_step.values()) == -1e6
    assert any(p.value == 1e6 for p in series.points)
    # Every bucket's min and max are the true min and max of its steps.
    width = -(-n // 500)
    for b in range(500):
        chunk = values[b * width : (b + 1) * width]
        kept = [p.value for p in series.points if b * width <= p.step < (b + 1) * width]
        assert min(kept) == min(chunk) and max(kept) == max(chunk)


def test_compared_runs_share_the_same_buckets(store_url: str) -> None:
    with Store(store_url) as store:
        write_series(store, "short", [float(i) for i in range(1000)])
        write_series(store, "long", [float(-i) for i in range(5000)])
        found = store.metric_buckets(["short", "long"], "loss", buckets=100)
    assert (found.start, found.end) == (0, 4999)
    short, long = found.series
    # 50 steps per bucket for both: "short" (1,000 points) fills the first 20 buckets.
    assert [p.step for p in short.points[:4]] == [0, 49, 50, 99]
    assert [p.step for p in long.points[:4]] == [0, 49, 50, 99]
    assert len(short.points) == 40 and len(long.points) == 200


def test_a_zoomed_range_comes_back_whole_when_it_fits(store_url: str) -> None:
    with Store(store_url) as store:
        write_series(store, "long", [float(i % 17) for i in range(50_000)])
        found = store.metric_buckets(["long"], "loss", buckets=1000, start=20_000, end=21_999)
    assert found.exact and found.series[0].total == 2000
    assert [p.step for p in found.series[0].points] == list(range(20_000, 22_000))


def test_special_values_are_extremes_and_nan_alone_stays_nan(store_url: str) -> None:
    values = [1.0] * 400
    values[10] = math.inf
    values[210] = -math.inf
    values[300:304] = [math.nan] * 4  # a whole bucket of NaN (buckets of 4 steps)
    with Store(store_url) as store:
        write_series(store, "odd", values)
        found = store.metric_buckets(["odd"], "loss", buckets=100)
    kept = found.series[0].points
    assert (11, math.inf) in [(p.step, p.value) for p in kept]  # the highest of 8-11
    assert (208, -math.inf) in [(p.step, p.value) for p in kept]  # the lowest of 208-211
    nan_bucket = [p for p in kept if 300 <= p.step <= 303]
    assert len(nan_bucket) == 2 and all(math.isnan(p.value) for p in nan_bucket)


def test_the_chart_read_refuses_what_it_cannot_do(store_url: str) -> None:
    with Store(store_url) as store:
        write_series(store, "a", [1.0, 2.0])
        with pytest.raises(JobNotFoundError):
            store.metric_buckets(["a", "missing"], "loss", buckets=10)
        for bad in (0, 10_001, True):
            with pytest.raises(QueryError):
                store.metric_buckets(["a"], "loss", buckets=bad)
        with pytest.raises(QueryError, match="empty"):
            store.metric_buckets(["a"], "loss", buckets=10, start=5, end=2)
        empty = store.metric_buckets(["a"], "nothing", buckets=10)
    assert empty.start is None and empty.series[0].points == []


def test_the_metric_buckets_endpoint(client: TestClient, seeded: tuple[str, Seeded]) -> None:
    s = seeded[1]
    body = client.get(
        "/api/v1/metric-buckets",
        params={"name": "loss", "jobId": [s.runs[0], s.runs[1]], "buckets": 100},
    ).json()
    assert (body["start"], body["end"], body["buckets"], body["exact"]) == (
        0,
        STEPS - 1,
        100,
        False,
    )
    spiky = body["series"][1]
    assert spiky["jobId"] == s.runs[1] and spiky["total"] == STEPS
    assert [SPIKE_STEP // 30 * 30 + 29, SPIKE_VALUE] in [p[:2] for p in spiky["points"]]
    assert client.get("/api/v1/metric-buckets?name=loss&jobId=nope").status_code == 404
    assert (
        client.get(f"/api/v1/metric-buckets?name=loss&jobId={s.runs[0]}&buckets=0").status_code
        == 422
    )
    many = "&".join(f"jobId=j{i}" for i in range(51))
    assert client.get(f"/api/v1/metric-buckets?name=loss&{many}").status_code == 400
    assert (
        client.get(f"/api/v1/metric-buckets?name=loss&jobId={s.runs[0]}&start=9&end=3").status_code
        == 400
    )


def test_the_jobs_endpoint_carries_chosen_latest_metrics(
    client: TestClient, seeded: tuple[str, Seeded]
) -> None:
    body = client.get(
        "/api/v1/jobs", params={"metric": "accuracy", "search": "name:resnet-a"}
    ).json()
    assert body["totalNumResults"] == 1 and body["metricNames"] == ["accuracy", "loss"]
    assert [m["name"] for m in body["data"][0]["metrics"]] == ["accuracy"]
    plain = client.get("/api/v1/jobs").json()
    assert "metrics" not in plain["data"][0] and "metricNames" not in plain


# -- signing in --------------------------------------------------------------------------------


def test_a_token_guarded_server_signs_browsers_in_with_a_read_only_cookie(
    seeded: tuple[str, Seeded],
) -> None:
    url, s = seeded
    with Store(url) as store:
        token = tokens.create(store, "alice")
    with TestClient(create_app(url), headers=HTML) as browser:
        page = browser.get(f"/jobs/{s.runs[0]}?x=wall", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"] == f"/login?next=%2Fjobs%2F{s.runs[0]}%3Fx%3Dwall"
        wrong = browser.post("/login", data={"token": "jt_nope", "next": "/"})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        assert SESSION_COOKIE not in browser.cookies
        signed = browser.post(
            "/login", data={"token": token, "next": f"/jobs/{s.runs[0]}"}, follow_redirects=False
        )
        assert signed.status_code == 303 and signed.headers["location"] == f"/jobs/{s.runs[0]}"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert browser.get(f"/jobs/{s.runs[0]}").status_code == 200
        assert browser.get("/api/v1/jobs").status_code == 200  # the page's own fetches
        # The cookie never writes: a forged form or fetch from a signed-in browser gets 401.
        write = browser.post("/api/v1/jobs", json={"name": "forged"})
        assert write.status_code == 401
        browser.post("/logout")
        assert browser.get("/", follow_redirects=False).status_code == 303


def test_sign_in_goes_back_only_to_a_page_of_this_server(seeded: tuple[str, Seeded]) -> None:
    url, _ = seeded
    with Store(url) as store:
        token = tokens.create(store, "bob")
    with TestClient(create_app(url), headers=HTML) as browser:
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "jobs"):
            done = browser.post(
                "/login", data={"token": token, "next": target}, follow_redirects=False
            )
            assert done.headers["location"] == "/", target


def test_pages_stay_open_while_the_store_has_no_token(client: TestClient) -> None:
    assert client.get("/", follow_redirects=False).status_code == 200


def test_the_readme_dashboard_command_runs_verbatim(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### The dashboard", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    with listening(["bash", "-c", block], tmp_path) as base:
        page = httpx.get(base + "/", headers=HTML)
        assert page.status_code == 200 and "<h1>Jobs</h1>" in page.text
        assert "No jobs match." in page.text
    assert (tmp_path / "jobs.db").exists()


def test_programs_asking_for_the_root_get_the_apis_index(seeded: tuple[str, Seeded]) -> None:
    with TestClient(create_app(seeded[0])) as program:
        index = program.get("/").json()
    assert index["api"] == "/api/v1" and index["metrics"] == "/metrics"
