"""report.html in a real browser (Chromium), offline: the flamegraph zooms on click,
searches, and shows absolute and % values on hover; nothing is fetched.

Needs the ``playwright`` package and a Chromium at ``/usr/bin/chromium`` (or
``$JOBTRACE_TEST_CHROMIUM``). Skipped on a laptop without them; never under ``CI=true``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobtrace import model
from jobtrace.profiles.folded import load_job_profile
from jobtrace.report.profile_html import render_profile_html
from tests.browser_helpers import chromium
from tests.profile_helpers import (
    LOAD,
    PARSE,
    PROCESS,
    SCORE,
    TRANSFORM,
    job_record,
    profile_records,
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    records = profile_records("j1")
    profile = load_job_profile([(r[3], r[4], r[5], r[6]) for r in records])
    job = dict(zip(model.FIELDS[model.JOB], job_record("j1")[1:], strict=True))
    path = tmp_path / "report.html"
    path.write_text(render_profile_html(job, profile), encoding="utf-8")
    context = browser.new_context(offline=True, viewport={"width": 1200, "height": 900})
    fetched: list[str] = []
    errors: list[str] = []
    context.on("request", lambda r: fetched.append(r.url))
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(path.as_uri())
    page.wait_for_selector("#flame .fr")
    yield page
    assert errors == []
    assert fetched == [path.as_uri()]  # the page itself, nothing else
    context.close()


def frame(page: Any, name: str) -> Any:
    return page.locator("#flame .fr", has_text=name).first


def test_the_summary_and_timeline_are_drawn(page: Any) -> None:
    cards = page.locator("#cards").inner_text()
    assert "succeeded" in cards and "7.50 s" in cards and "330.0 MiB" in cards
    assert "5.95 s" in cards  # CPU time: user + sys
    assert page.locator("#timeline svg path.series").count() == 2


def test_hovering_the_timeline_shows_the_nearest_sample(page: Any) -> None:
    memory = page.locator("#timeline svg").first
    box = memory.bounding_box()
    # The right end of the plot area: the last sample, 50,000 + 15 * 20,000 KiB of RSS.
    page.mouse.move(box["x"] + box["width"] * 0.99, box["y"] + box["height"] / 2)
    text = page.locator("#tip").inner_text()
    assert text.startswith("Memory (RSS)") and f"{PROCESS}\t341.8 MiB" in text


def test_escape_zooms_back_out(page: Any) -> None:
    frame(page, "load_rows").click()
    assert frame(page, "transform").count() == 0
    page.keyboard.press("Escape")
    assert frame(page, "transform").is_visible()


def test_hovering_a_frame_shows_its_absolute_and_percent_values(page: Any) -> None:
    frame(page, "load_rows").hover()
    tip = page.locator("#tip")
    assert tip.is_visible()
    text = tip.inner_text()
    assert LOAD in text and "2.50 s" in text and "33%" in text
    assert "CPU" in text and "1.05 s" in text and "Waiting" in text and "1.45 s" in text


def test_clicking_a_frame_zooms_to_it_and_the_top_row_zooms_out(page: Any) -> None:
    width = page.locator("#flame").evaluate("e => e.clientWidth")
    before = frame(page, "transform").bounding_box()["width"]
    assert before < width * 0.8
    frame(page, "transform").click()
    after = frame(page, "transform").bounding_box()["width"]
    assert after == pytest.approx(width, abs=2)
    assert frame(page, "load_rows").count() == 0  # outside the zoomed frame
    assert page.locator("#flame .fr.anc").count() == 3  # all, process, <module>
    page.locator("#flame .fr.anc").first.click()
    assert frame(page, "load_rows").is_visible()
    assert frame(page, "transform").bounding_box()["width"] == pytest.approx(before, abs=1)


def test_search_highlights_matches_and_shows_the_matched_share(page: Any) -> None:
    page.fill("#search", "parse_csv")
    matched = page.locator("#flame .fr.match")
    assert matched.count() == 1 and PARSE in matched.first.inner_text()
    assert page.locator("#match-info").inner_text() == "Matched: 13% (1.00 s)"
    page.fill("#search", "")
    assert page.locator("#flame .fr.match").count() == 0


def test_the_cpu_and_memory_flamegraphs_are_a_click_away(page: Any) -> None:
    page.click("#tabs button[data-kind=memory]")
    frame(page, "parse_csv").hover()
    assert "300.0 MiB" in page.locator("#tip").inner_text()
    assert page.locator("#top-body tr").first.inner_text().startswith(PARSE)
    page.click("#tabs button[data-kind=cpu]")
    frame(page, "score").hover()
    assert "2.90 s" in page.locator("#tip").inner_text()
    assert page.locator("#flame .fr", has_text=TRANSFORM).count() == 1


def test_markup_in_frame_names_is_shown_as_text(page: Any) -> None:
    assert page.locator("#flame b").count() == 0
    assert frame(page, "score").inner_text() == SCORE


def test_a_failed_jobs_traceback_is_shown_as_text(browser: Any, tmp_path: Path) -> None:
    records = profile_records("j2")
    profile = load_job_profile([(r[3], r[4], r[5], r[6]) for r in records])
    job = dict(zip(model.FIELDS[model.JOB], job_record("j2", status="failed")[1:], strict=True))
    traceback = 'Traceback (most recent call last):\n  File "<b>etl.py</b>", line 3\nKeyError: 1\n'
    job.update(error_type="KeyError", error_message="1", traceback=traceback)
    path = tmp_path / "report.html"
    path.write_text(render_profile_html(job, profile), encoding="utf-8")
    context = browser.new_context(offline=True)
    page = context.new_page()
    page.goto(path.as_uri())
    assert page.locator("#failure").is_visible()
    assert page.locator("#traceback").inner_text() == traceback
    assert page.locator("#traceback b").count() == 0
    context.close()


def test_a_succeeded_jobs_page_has_no_traceback_section(page: Any) -> None:
    assert not page.locator("#failure").is_visible()
