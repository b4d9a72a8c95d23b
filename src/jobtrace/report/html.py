"""A trace as one self-contained HTML file: a waterfall with collapsible subtrees, a detail
panel and the per-name statistics, working offline (no fonts, scripts or styles fetched).

The report from :func:`jobtrace.report.traces.trace_json` is embedded as JSON in a
``<script type="application/json">`` element with ``<``, ``>``, ``&``, U+2028 and U+2029
escaped, so no user string can close the element; the page's script reads it with
``JSON.parse`` and sets every user string with ``textContent``, never as markup. A
Content-Security-Policy admits only this page's own script and style (by hash) and no
network access at all, so even a mistake in escaping could not run injected code.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["TRACE_BODY", "TRACE_SCRIPT", "TRACE_STYLE", "json_for_script", "render_trace_html"]

_SCRIPT_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)

TRACE_STYLE = """
:root{--fg:#1f2328;--muted:#656d76;--bg:#fff;--panel:#f6f8fa;--line:#d0d7de;--sel:#ddf4ff;
--err:#cf222e;--bar:#4c78a8;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#8d96a0;--bg:#0d1117;
--panel:#161b22;--line:#30363d;--sel:#1f3350;--err:#f85149}}
*{box-sizing:border-box}
body{margin:0;padding:16px 20px;font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;
color:var(--fg);background:var(--bg)}
h1{font-size:18px;margin:0 0 4px;word-break:break-all}
h2{font-size:14px;margin:20px 0 6px}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.meta{color:var(--muted);display:flex;flex-wrap:wrap;gap:4px 16px}
.meta b{color:var(--fg);font-weight:600}
.warn{color:var(--err)}
.layout{display:flex;gap:16px;align-items:flex-start;margin-top:12px}
.waterfall{flex:1;min-width:0;border:1px solid var(--line);border-radius:6px;overflow:hidden}
.axis,.row{display:flex}
.axis{background:var(--panel);border-bottom:1px solid var(--line);height:22px}
.axis .label{color:var(--muted);padding:3px 8px}
.label{flex:0 0 38%;max-width:38%;display:flex;align-items:center;gap:4px;padding:0 8px;
overflow:hidden;white-space:nowrap}
.track{flex:1;position:relative;min-width:0}
.tick{position:absolute;top:0;bottom:0;border-left:1px solid var(--line);padding:3px 4px;
color:var(--muted);font-size:11px;white-space:nowrap}
.row{height:22px;cursor:pointer;border-bottom:1px solid transparent}
.row[hidden]{display:none}
.row:hover{background:var(--panel)}
.row.sel{background:var(--sel)}
.row.match .name{background:#fff8c5;color:#1f2328}
.find{display:flex;gap:8px;align-items:center;margin-top:10px}
.find input{font:inherit;padding:3px 6px;width:260px;max-width:100%}
.row:focus{outline:1px solid var(--bar);outline-offset:-1px}
.toggle{flex:0 0 14px;border:0;background:none;color:var(--muted);padding:0;cursor:pointer;
font-size:10px;width:14px}
.name{overflow:hidden;text-overflow:ellipsis}
.svc{color:var(--muted);margin-right:6px;white-space:nowrap}
.row.err .name{color:var(--err);font-weight:600}
.dur{margin-left:auto;color:var(--muted);padding-left:8px}
.bar{position:absolute;top:5px;height:12px;min-width:1px;border-radius:2px;background:var(--bar)}
.bar.err{background:var(--err)}
.detail{flex:0 0 340px;max-width:340px;border:1px solid var(--line);border-radius:6px;
padding:10px 12px;background:var(--panel);position:sticky;top:12px;max-height:90vh;
overflow:auto}
.detail h3{margin:0 0 6px;font-size:14px;word-break:break-all}
.detail dl{display:grid;grid-template-columns:auto 1fr;gap:2px 10px;margin:0}
.detail dt{color:var(--muted)}
.detail dd{margin:0;word-break:break-all}
.detail pre{white-space:pre-wrap;word-break:break-all;margin:6px 0 0;background:var(--bg);
border:1px solid var(--line);border-radius:4px;padding:6px}
.detail .error{color:var(--err);font-weight:600;margin-top:8px;word-break:break-word}
table{border-collapse:collapse;width:100%}
th,td{padding:3px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left;white-space:normal;word-break:break-all}
th{cursor:pointer;user-select:none;background:var(--panel)}
th.sorted::after{content:" \\25BE"}
th.sorted.asc::after{content:" \\25B4"}
@media (max-width:900px){.layout{flex-direction:column}.detail{position:static;max-width:none;
width:100%}}
"""

TRACE_SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("jobtrace-data").textContent);
  var spans = data.spans || [];
  var total = data.duration_ms > 0 ? data.duration_ms : 0;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function fmt(ms) {
    if (ms === null || ms === undefined) return "-";
    if (ms === 0) return "0";
    if (ms >= 1000) return (ms / 1000).toFixed(ms >= 10000 ? 1 : 2) + " s";
    if (ms >= 1) return ms.toFixed(ms >= 100 ? 0 : ms >= 10 ? 1 : 2) + " ms";
    if (ms < 0.001) return (ms * 1e6).toFixed(0) + " ns";
    return (ms * 1000).toFixed(ms >= 0.01 ? 0 : 1) + " \\u00b5s";
  }
  function pct(ms) { return total > 0 ? Math.min(100, Math.max(0, ms / total * 100)) : 0; }

  document.getElementById("title").textContent = data.name;
  var meta = document.getElementById("meta");
  function fact(label, value, cls) {
    if (value === null || value === undefined || value === "") return;
    var item = el("span", cls, label + " ");
    item.appendChild(el("b", "", value));
    meta.appendChild(item);
  }
  fact("trace", data.trace_id);
  fact((data.services || []).length === 1 ? "service" : "services",
       (data.services || []).join(", "));
  fact("job", data.job_id);
  fact("started", data.start);
  fact("duration", fmt(data.duration_ms));
  fact("spans", data.span_count);
  if (data.error_count) fact("errors", data.error_count, "warn");
  if (data.dropped_spans) fact("dropped by the span cap", data.dropped_spans, "warn");

  var axis = document.getElementById("axis-track");
  if (total > 0) {
    var raw = total / 6, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * mag; })
      .filter(function (s) { return s >= raw; })[0];
    for (var t = 0; t <= total + 1e-9; t += step) {
      var tick = el("div", "tick", fmt(t));
      tick.style.left = pct(t) + "%";
      axis.appendChild(tick);
    }
  }

  var rowsBox = document.getElementById("rows");
  var rows = [], toggles = [], collapsed = [], selected = -1;
  var services = [];  // the service of the open span at each depth (spans are pre-order)
  spans.forEach(function (span, i) {
    var row = el("div", "row" + (span.error_type ? " err" : ""));
    row.setAttribute("role", "treeitem");
    row.setAttribute("aria-level", String(span.depth + 1));
    row.tabIndex = 0;
    row.title = span.name + " \\u2014 " + fmt(span.duration_ms);
    var label = el("div", "label");
    label.style.paddingLeft = (8 + Math.min(span.depth, 30) * 12) + "px";
    var toggle = el("button", "toggle", span.child_count ? "\\u25be" : "");
    toggle.type = "button";
    toggle.tabIndex = -1;
    if (span.child_count) {
      row.setAttribute("aria-expanded", "true");
      toggle.setAttribute("aria-label", "collapse");
      toggle.addEventListener("click", function (event) {
        event.stopPropagation();
        setCollapsed(i, !collapsed[i]);
      });
    }
    label.appendChild(toggle);
    // A span's service is shown at roots and where it differs from its parent's.
    services.length = span.depth;
    if (span.service && (span.depth === 0 || services[span.depth - 1] !== span.service)) {
      label.appendChild(el("span", "svc", span.service));
    }
    services.push(span.service);
    label.appendChild(el("span", "name", span.name));
    label.appendChild(el("span", "dur mono", fmt(span.duration_ms)));
    var track = el("div", "track");
    var bar = el("div", "bar" + (span.error_type ? " err" : ""));
    bar.style.left = pct(span.offset_ms) + "%";
    bar.style.width = (pct(span.offset_ms + span.duration_ms) - pct(span.offset_ms)) + "%";
    track.appendChild(bar);
    row.appendChild(label);
    row.appendChild(track);
    row.addEventListener("click", function () { select(i); });
    row.addEventListener("keydown", function (event) { onKey(event, i); });
    rows.push(row);
    toggles.push(toggle);
    collapsed.push(false);
    rowsBox.appendChild(row);
  });

  function setCollapsed(i, value) {
    if (!spans[i].child_count) return;
    collapsed[i] = value;
    toggles[i].textContent = value ? "\\u25b8" : "\\u25be";
    toggles[i].setAttribute("aria-label", value ? "expand" : "collapse");
    rows[i].setAttribute("aria-expanded", value ? "false" : "true");
    // Spans are in pre-order, so a subtree is the run of deeper rows after its root.
    var hideDeeperThan = Infinity;
    for (var k = 0; k < spans.length; k++) {
      var depth = spans[k].depth;
      if (depth > hideDeeperThan) { rows[k].hidden = true; continue; }
      hideDeeperThan = collapsed[k] ? depth : Infinity;
      rows[k].hidden = false;
    }
  }

  function visibleStep(i, direction) {
    for (var k = i + direction; k >= 0 && k < rows.length; k += direction) {
      if (!rows[k].hidden) return k;
    }
    return i;
  }
  function onKey(event, i) {
    var key = event.key, target = i;
    if (key === "Enter" || key === " ") { select(i); }
    else if (key === "ArrowRight") { setCollapsed(i, false); }
    else if (key === "ArrowLeft") { setCollapsed(i, true); }
    else if (key === "ArrowDown") { target = visibleStep(i, 1); }
    else if (key === "ArrowUp") { target = visibleStep(i, -1); }
    else { return; }
    event.preventDefault();
    if (target !== i) { rows[target].focus(); select(target); }
  }

  // A collapsed ancestor hides a span: open every ancestor (the shallower rows before it).
  function reveal(i) {
    var depth = spans[i].depth;
    for (var k = i - 1; k >= 0 && depth > 0; k--) {
      if (spans[k].depth < depth) {
        depth = spans[k].depth;
        if (collapsed[k]) setCollapsed(k, false);
      }
    }
  }

  var detail = document.getElementById("detail");
  function select(i, fromLink) {
    if (selected >= 0) rows[selected].classList.remove("sel");
    selected = i;
    rows[i].classList.add("sel");
    var span = spans[i];
    // The selected span is in the address (#span=ID): a link to it opens it again.
    if (!fromLink && span.span_id && window.history && history.replaceState) {
      try { history.replaceState(null, "", "#span=" + span.span_id); } catch (e) { /* file:// */ }
    }
    detail.replaceChildren();
    detail.appendChild(el("h3", "", span.name));
    var list = el("dl");
    function item(label, value) {
      if (value === null || value === undefined || value === "") return;
      list.appendChild(el("dt", "", label));
      list.appendChild(el("dd", "mono", value));
    }
    item("span", span.span_id);
    var parent = span.parent_id;
    if (parent && span.depth === 0) parent += " (not in this trace)";
    item("parent", parent);
    item("start", "+" + fmt(span.offset_ms));
    item("duration", fmt(span.duration_ms));
    item("self", fmt(span.self_ms));
    item("children", span.child_count || null);
    item("service", span.service);
    item("job", span.job_id);
    item("host", span.host);
    item("pid", span.pid);
    item("thread", span.thread);
    detail.appendChild(list);
    if (span.error_type) {
      var error = span.error_type + (span.error_message ? ": " + span.error_message : "");
      detail.appendChild(el("div", "error", error));
    }
    if (span.info && Object.keys(span.info).length) {
      detail.appendChild(el("pre", "", JSON.stringify(span.info, null, 2)));
    }
  }

  var columns = [
    ["name", "name"], ["count", "count"], ["errors", "errors"], ["total", "total_ms"],
    ["self", "self_ms"], ["min", "min_ms"], ["p50", "p50_ms"], ["p95", "p95_ms"],
    ["max", "max_ms"]
  ];
  var stats = (data.stats || []).slice();
  var head = document.getElementById("stats-head"), body = document.getElementById("stats-body");
  var sortKey = "total_ms", ascending = false;
  columns.forEach(function (column) {
    var th = el("th", "", column[0]);
    th.scope = "col";
    th.addEventListener("click", function () {
      ascending = sortKey === column[1] ? !ascending : column[1] === "name";
      sortKey = column[1];
      drawStats();
    });
    head.appendChild(th);
  });
  function drawStats() {
    stats.sort(function (a, b) {
      var x = a[sortKey], y = b[sortKey];
      var order = x < y ? -1 : x > y ? 1 : 0;
      return ascending ? order : -order;
    });
    Array.prototype.forEach.call(head.children, function (th, k) {
      th.className = columns[k][1] === sortKey ? "sorted" + (ascending ? " asc" : "") : "";
    });
    body.replaceChildren();
    stats.forEach(function (stat) {
      var tr = el("tr");
      columns.forEach(function (column) {
        var value = stat[column[1]];
        var text = /_ms$/.test(column[1]) ? fmt(value) : value;
        var td = el("td", column[1] === "name" ? "" : "mono", text);
        if (column[1] === "errors" && value) td.className += " warn";
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }
  drawStats();

  // Find in trace: rows whose name, id, error or attributes hold the text are marked;
  // Enter moves to the next one.
  var find = document.getElementById("find"), findInfo = document.getElementById("find-info");
  var haystack = spans.map(function (span) {
    return [span.name, span.span_id, span.error_type, span.error_message,
      span.info ? JSON.stringify(span.info) : ""].join("\\n").toLowerCase();
  });
  var matches = [], current = -1;
  function runFind() {
    var text = find.value.trim().toLowerCase();
    matches = [];
    current = -1;
    rows.forEach(function (row, k) {
      var hit = text !== "" && haystack[k].indexOf(text) >= 0;
      row.classList.toggle("match", hit);
      if (hit) matches.push(k);
    });
    findInfo.textContent = text === "" ? "" : matches.length + " match" +
      (matches.length === 1 ? "" : "es");
  }
  if (find) {
    find.addEventListener("input", runFind);
    find.addEventListener("keydown", function (event) {
      if (event.key !== "Enter" || !matches.length) return;
      event.preventDefault();
      current = (current + 1) % matches.length;
      var k = matches[current];
      reveal(k);
      select(k);
      rows[k].scrollIntoView({ block: "nearest" });
      findInfo.textContent = (current + 1) + " of " + matches.length;
    });
  }

  var linked = /^#span=([0-9a-fA-F]+)$/.exec(window.location.hash);
  var start = 0;
  if (linked) {
    spans.forEach(function (span, k) { if (span.span_id === linked[1]) start = k; });
  }
  if (rows.length) {
    reveal(start);
    select(start, true);
    if (start) rows[start].scrollIntoView({ block: "center" });
  }
})();
"""


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def self_contained_page(
    *, title: str, style: str, script: str, body: str, data: Any, img_data: bool = False
) -> str:
    """An HTML page that runs only its own ``script`` and ``style`` and fetches nothing.

    Its Content-Security-Policy admits the two by hash and no network access at all
    (``img_data``: images from ``data:`` URLs too), so even a mistake in escaping could
    not run injected code; ``data`` is embedded as JSON (:func:`json_for_script`) in
    ``<script type="application/json" id="jobtrace-data">`` for the script to read.
    ``title`` is escaped here; ``body`` is the page's own markup, holding no user string.
    """
    images = "img-src data:; " if img_data else ""
    csp = (
        f"default-src 'none'; script-src {_csp_hash(script)}; style-src {_csp_hash(style)}; "
        f"{images}base-uri 'none'; form-action 'none'"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="generator" content="jobtrace">
<title>{html.escape(title)}</title>
<style>{style}</style>
</head>
<body>
{body}<script type="application/json" id="jobtrace-data">{json_for_script(data)}</script>
<script>{script}</script>
</body>
</html>
"""


def json_for_script(data: Any) -> str:
    """JSON text safe inside a ``<script>`` element: ``<``, ``>`` and ``&`` (which could close
    the element or open a comment) and U+2028/U+2029 are written as ``\\uXXXX`` escapes,
    which JSON parsers read back as the same characters."""
    text = orjson.dumps(data, default=repr, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")
    for raw, escaped in _SCRIPT_ESCAPES:
        text = text.replace(raw, escaped)
    return text


def render_trace_html(report: Mapping[str, Any]) -> str:
    """One self-contained HTML page for a trace report made by
    :func:`jobtrace.report.traces.trace_json`.

    >>> from jobtrace.report.traces import trace_json
    >>> page = render_trace_html(trace_json(store.get_trace("0190f3")))   # doctest: +SKIP
    """
    return self_contained_page(
        title=f"jobtrace · {report.get('name', 'trace')}",
        style=TRACE_STYLE,
        script=TRACE_SCRIPT,
        data=dict(report),
        body=TRACE_BODY,
    )


TRACE_BODY = """<header>
<h1 id="title"></h1>
<div class="meta" id="meta"></div>
</header>
<div class="find"><input id="find" type="search" placeholder="Find in trace (Enter: next)" \
aria-label="Find in trace"><span class="meta" id="find-info"></span></div>
<noscript><p>This report needs JavaScript to draw the trace.</p></noscript>
<div class="layout">
<section class="waterfall" aria-label="Waterfall">
<div class="axis"><div class="label">span</div><div class="track" id="axis-track"></div></div>
<div id="rows" role="tree"></div>
</section>
<aside class="detail" id="detail" aria-live="polite"></aside>
</div>
<h2>Span statistics</h2>
<table><thead><tr id="stats-head"></tr></thead><tbody id="stats-body"></tbody></table>
"""
