"""A job's ``report.html``: the summary (with a failed job's traceback), the timeline and
interactive flamegraphs (wall time with its CPU/waiting split, CPU time, peak memory) in
one self-contained file.

The page works offline and from ``file://``: its script and style ship with the package
(``report/assets``) and are inlined, the data is embedded as escaped JSON (see
:func:`jobtrace.report.html.json_for_script`), and a Content-Security-Policy admits only
those two by hash and forbids any network access. The script sets every user string (job
name, frames, errors) with ``textContent``, never as markup.

Size: frames are interned and each tree node is a small array, so a typical job's page is
tens of kilobytes; the flamegraphs draw only frames at least half a pixel wide, so a page
with a large profile still opens quickly.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jobtrace._clock import iso
from jobtrace.profiles.folded import KINDS, JobProfile
from jobtrace.report.html import self_contained_page
from jobtrace.report.profile_data import flame_data, top_functions

__all__ = ["PROFILE_BODY", "SUMMARY_BODY", "TOP_ROWS", "asset", "page_data", "render_profile_html"]

#: Rows of the top-functions table under the flamegraph, per kind.
TOP_ROWS = 20

#: The job fields the page shows (the rest of report.json stays out of the page).
_JOB_FIELDS = (
    "id",
    "name",
    "experiment",
    "status",
    "start_time",
    "end_time",
    "duration",
    "cpu_user",
    "cpu_sys",
    "peak_memory_kb",
    "exit_code",
    "error_type",
    "error_message",
    "host",
    "pid",
    "traceback",
)


@cache
def asset(name: str) -> str:
    """The text of ``report/assets/NAME`` (the page's script and style; the dashboard
    serves the same files)."""
    # A plain path, not importlib.resources: that module costs a short job ~13 ms to import,
    # and the package ships as files (setuptools package-data), never zipped.
    return (Path(__file__).parent / "assets" / name).read_text("utf-8")


def page_data(job: Mapping[str, Any], profile: JobProfile) -> dict[str, Any]:
    """The JSON document the page's script reads."""
    flame = flame_data(profile)
    index = {name: i for i, name in enumerate(flame["frames"])}
    top: dict[str, list[list[int]]] = {}
    for kind in KINDS:
        top[kind] = []
        for row in top_functions(profile.get(kind), TOP_ROWS):
            if row.frame not in index:  # every frame of a profile is in the trees
                continue  # pragma: no cover
            top[kind].append([index[row.frame], row.self_weight, row.total])
    shown = {k: job.get(k) for k in _JOB_FIELDS}
    shown["start_iso"] = iso(job.get("start_time"))
    return {
        "job": shown,
        "profile": {
            **flame,
            "top": top,
            "timeline": {p: [list(x) for x in pts] for p, pts in profile.timeline.items()},
            "peakKb": profile.peak_kb,
            "memoryMode": profile.memory_mode,
        },
    }


def render_profile_html(job: Mapping[str, Any], profile: JobProfile) -> str:
    """The report page of ``job`` (the job's fields, as in report.json) and its profile.

    >>> from jobtrace.profiles.folded import JobProfile
    >>> page = render_profile_html({"id": "j1", "name": "etl", "status": "succeeded"}, JobProfile())
    >>> page.startswith("<!DOCTYPE html>") and "https://" not in page
    True
    """
    return self_contained_page(
        title=f"jobtrace · {job.get('name') or job.get('id') or 'job'}",
        style=asset("profile_report.css"),
        script=asset("profile_report.js"),
        data=page_data(job, profile),
        body=SUMMARY_BODY + PROFILE_BODY + _FOOTER,
        img_data=True,
    )


#: The page's header and summary cards (the dashboard's job page starts with them too).
SUMMARY_BODY = """<header>
<h1 id="title"></h1>
<div class="sub" id="sub"></div>
</header>
<noscript><p>This report needs JavaScript to draw its charts.</p></noscript>
<section class="cards" id="cards" aria-label="Summary"></section>
<section id="failure" hidden><h2>Traceback</h2><pre class="traceback mono" id="traceback">\
</pre></section>
"""

#: The timeline, flamegraphs and top functions, which the script draws into.
PROFILE_BODY = """<h2>Timeline</h2>
<section id="timeline" aria-label="Timeline"></section>
<h2>Flamegraphs</h2>
<div class="toolbar">
<div class="tabs" id="tabs" role="tablist">
<button type="button" data-kind="wall">Wall time</button>
<button type="button" data-kind="cpu">CPU time</button>
<button type="button" data-kind="memory">Peak memory</button>
</div>
<input id="search" type="search" placeholder="Search functions, files…" aria-label="Search">
<button type="button" class="btn" id="reset">Reset zoom</button>
<span class="info" id="match-info"></span>
</div>
<div class="info" id="flame-info"></div>
<div class="legend" id="legend"><span><span class="sw" id="sw-cpu"></span>CPU</span>\
<span><span class="sw" id="sw-wait"></span>waiting (I/O, locks, sleep)</span>\
<span>click a frame to zoom, click the top row to zoom out</span></div>
<div class="flame" id="flame" aria-label="Flamegraph"></div>
<div class="tip" id="tip" role="tooltip"></div>
<h2>Top functions</h2>
<table class="top"><thead><tr><th>function</th><th>self</th><th>self %</th><th>total</th>\
<th>total %</th></tr></thead><tbody id="top-body"></tbody></table>
"""

_FOOTER = "<footer>Made by jobtrace. This page works offline and fetches nothing.</footer>\n"
