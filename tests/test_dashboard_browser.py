"""The dashboard in a real browser: a real ``jobtrace serve`` (port 0) over a seeded store,
clicked through as a person would — jobs list, a job, zooming its chart, an experiment,
comparing runs, a trace and one of its spans — checking what is visible, what is drawn,
that no console error appears, that no markup from the data runs, and that no request
leaves 127.0.0.1. Screenshots go to docs/ for the README.

Needs the ``playwright`` package and ``/usr/bin/chromium``; see tests/browser_helpers.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser_helpers import chromium
from tests.dashboard_helpers import (
    ERROR_SPAN,
    HOSTILE,
    SPIKE_VALUE,
    STEPS,
    TRACE_ID,
    Seeded,
    seed,
    serve,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"
LINES = ".metric-chart .plot svg .scatterlayer path.js-line"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeded]]:
    directory = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{directory / 'store.db'}"
    seeded = seed(url)
    with serve(url, directory / "server") as base:
        yield base, seeded


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


class Visit:
    """A browser tab on the dashboard that records console errors, dialogs (an injected
    ``alert`` would open one) and every request to a host other than 127.0.0.1 (refused)."""

    def __init__(self, browser: Any, base: str) -> None:
        self.base = base
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.foreign: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname != "127.0.0.1" and not url.startswith("data:"):
            self.foreign.append(url)
            route.abort()
            return
        route.continue_()

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def go(self, path: str) -> Any:
        self.page.goto(self.base + path)
        return self.page

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors
        assert self.dialogs == [], self.dialogs
        assert self.foreign == [], self.foreign


@pytest.fixture
def visit(browser: Any, server: tuple[str, Seeded]) -> Iterator[Visit]:
    tab = Visit(browser, server[0])
    yield tab
    tab.close()


def chart_values(page: Any, index: int) -> list[float]:
    """The y values plotly holds for chart ``index`` (each trace's, flattened)."""
    values: list[float] = page.evaluate(
        "i => [].concat(...document.querySelectorAll('.metric-chart .plot')[i].data"
        ".map(t => t.y.filter(v => v !== null)))",
        index,
    )
    return values


def test_the_jobs_list_shows_every_job_and_markup_as_text(visit: Visit) -> None:
    page = visit.go("/?metric=loss&metric=accuracy")
    rows = page.locator("#jobs tbody tr")
    assert rows.count() == 6
    assert page.get_by_role("link", name=HOSTILE, exact=True).is_visible()
    assert page.locator("#jobs img").count() == 0  # the name's <img> is text, not an element
    assert page.locator("#jobs thead").inner_text().count("loss") == 1
    page.screenshot(path=str(DOCS / "dashboard-jobs.png"))
    page.fill("input[name=q]", "status:failed")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"q=status%3Afailed"))
    assert page.locator("#jobs tbody tr").count() == 1
    assert "nightly-etl" in page.locator("#jobs tbody").inner_text()


def test_a_jobs_chart_keeps_its_spike_and_zooms_into_full_detail(
    visit: Visit, server: tuple[str, Seeded]
) -> None:
    page = visit.go("/?q=name:resnet-b")
    page.get_by_role("link", name="resnet-b", exact=True).click()
    page.wait_for_url(re.compile(r"/jobs/run-b-0002$"))
    page.locator(LINES).nth(1).wait_for()
    assert page.locator("#cards").inner_text().count("succeeded") == 1
    notes = page.locator(".metric-chart .note")
    assert f"of {STEPS} points drawn" in notes.nth(1).inner_text()  # loss, downsampled
    assert max(chart_values(page, 1)) == SPIKE_VALUE  # the one-step spike survived
    page.screenshot(path=str(DOCS / "dashboard-job.png"), full_page=False)
    # Drag across a fifth of the loss chart: an x zoom, fetched again at full detail.
    drag = page.locator(".metric-chart").nth(1).locator(".nsewdrag").first
    box = drag.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.4, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y + 2, steps=8)
    page.mouse.move(box["x"] + box["width"] * 0.6, y + 2, steps=8)
    page.mouse.up()
    page.wait_for_url(re.compile(r"range=\d+%2C\d+"))
    page.wait_for_function(
        "() => /^\\d+ points$/"
        ".test(document.querySelectorAll('.metric-chart .note')[1].textContent)"
    )
    zoomed = re.search(r"range=(\d+)%2C(\d+)", page.url)
    assert zoomed is not None
    low, high = int(zoomed.group(1)), int(zoomed.group(2))
    assert 0 < low < high < STEPS
    assert notes.nth(1).inner_text() == f"{high - low + 1} points"
    # The address is the view: opened again, the page shows the same zoom, log scale too.
    page.check("#log-y")
    page.wait_for_url(re.compile(r"log=1"))
    again = visit.context.new_page()
    again.goto(page.url)
    again.locator(LINES).nth(1).wait_for()
    assert again.locator("#chart-info").inner_text() == f"steps {low} to {high}"
    assert again.is_checked("#log-y")
    again.close()


def test_the_job_page_draws_the_profile_flamegraph_and_lists_its_trace(visit: Visit) -> None:
    page = visit.go("/jobs/run-a-0001")
    page.locator("#flame .fr").first.wait_for()
    assert page.locator("#flame .fr", has_text="transform").count() >= 1
    assert page.locator("#traces tbody tr").count() == 1
    assert "handle request" in page.locator("#traces").inner_text()


def test_comparing_runs_overlays_curves_and_hides_equal_params(visit: Visit) -> None:
    page = visit.go("/experiments/vision")
    assert page.locator("#runs tbody tr").count() == 3
    for box in page.locator("#runs tbody input[type=checkbox]").all():
        box.check()
    page.click("#runs thead button[type=submit]")
    page.wait_for_url(re.compile(r"/compare\?job=run-"))
    page.locator(LINES).nth(5).wait_for()  # two charts, three runs each
    assert page.locator(".metric-chart").count() == 2
    assert max(chart_values(page, 1)) == SPIKE_VALUE  # resnet-b's spike, same buckets
    batch = page.locator("#diff-table tr", has_text="param batch")
    lr = page.locator("#diff-table tr", has_text="param lr")
    assert batch.is_visible() and lr.is_visible()
    page.screenshot(path=str(DOCS / "dashboard-compare.png"), full_page=True)
    page.check("#only-diff")
    assert not batch.is_visible() and lr.is_visible()
    assert "diff=1" in page.url


def test_a_trace_opens_from_its_job_and_links_to_one_span(visit: Visit) -> None:
    page = visit.go("/jobs/run-a-0001")
    page.get_by_role("link", name="handle request").click()
    page.wait_for_url(re.compile(rf"/traces/{TRACE_ID}"))
    rows = page.locator("#rows .row")
    assert rows.count() == 5
    page.locator("#rows .row", has_text="postprocess").click()
    detail = page.locator("#detail")
    assert "KeyError: missing 'label'" in detail.inner_text()
    assert page.url.endswith(f"#span={ERROR_SPAN}")
    page.fill("#find", "predict")
    assert page.locator("#find-info").inner_text() == "1 match"
    assert page.locator("#rows .row.match").inner_text().startswith("predict")
    page.screenshot(path=str(DOCS / "dashboard-trace.png"), full_page=True)
    # Collapsing "score" hides its children; the span's link opens them again.
    page.locator("#rows .row", has_text="score").locator(".toggle").click()
    assert not page.locator("#rows .row", has_text="postprocess").is_visible()
    linked = visit.context.new_page()
    linked.goto(f"{visit.base}/traces/{TRACE_ID}#span={ERROR_SPAN}")
    assert "postprocess" in linked.locator("#rows .row.sel").inner_text()
    assert "KeyError" in linked.locator("#detail").inner_text()
    linked.close()


def test_the_services_page_lists_profiles_per_context(visit: Visit) -> None:
    page = visit.go("/services")
    row = page.locator("#profiles tbody tr", has_text="Shop:checkout.price")
    assert row.locator("td").nth(2).inner_text() == "100"
    assert page.locator("#values tbody tr", has_text="route=/buy").count() == 1
