/* jobtrace job report: summary, timeline and flamegraphs drawn from the embedded JSON.
   Every string from the job (names, frames, errors) is set with textContent only. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("jobtrace-data").textContent);
  var job = data.job || {};
  var prof = data.profile || {};
  var frames = prof.frames || [];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function byId(id) { return document.getElementById(id); }
  function fmtSeconds(s) {
    if (s === null || s === undefined || isNaN(s)) return "–";
    if (s === 0) return "0 s";
    if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
    if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    var whole = Math.round(s), m = Math.floor(whole / 60), h = Math.floor(m / 60);
    var sec = whole % 60;
    if (h) return h + "h " + String(m - h * 60).padStart(2, "0") + "m";
    return m + "m " + String(sec).padStart(2, "0") + "s";
  }
  function fmtBytes(b) {
    if (b === null || b === undefined || isNaN(b)) return "–";
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (Math.abs(b) >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i === 0 ? b.toFixed(0) : b.toFixed(1)) + " " + units[i];
  }
  function fmtPct(p) { return (p >= 10 || p === 0 ? p.toFixed(0) : p.toFixed(1)) + "%"; }
  function pct(a, b) { return b > 0 ? 100 * a / b : 0; }

  /* ---- summary ------------------------------------------------------------------------ */
  byId("title").textContent = (job.name || "job") + (job.experiment ? "  ·  " + job.experiment : "");
  var sub = byId("sub");
  [["job", job.id], ["started", job.start_iso], ["host", job.host], ["pid", job.pid]]
    .forEach(function (kv) {
      if (kv[1] === null || kv[1] === undefined || kv[1] === "") return;
      var s = el("span", null, kv[0] + " ");
      s.appendChild(el("span", "mono", kv[1]));
      sub.appendChild(s);
    });
  function card(key, value, note, cls) {
    var c = el("div", "card" + (cls ? " " + cls : ""));
    c.appendChild(el("div", "k", key));
    c.appendChild(el("div", "v", value));
    if (note) c.appendChild(el("div", "n", note));
    byId("cards").appendChild(c);
  }
  var cpuTotal = (job.cpu_user || 0) + (job.cpu_sys || 0);
  card("Status", job.status || "unknown", null, "st-" + (job.status || "unknown"));
  card("Duration", fmtSeconds(job.duration));
  card("CPU time", job.cpu_user === null || job.cpu_user === undefined ? "–" : fmtSeconds(cpuTotal),
    job.duration ? fmtPct(pct(cpuTotal, job.duration)) + " of wall time (user " +
      fmtSeconds(job.cpu_user || 0) + ", sys " + fmtSeconds(job.cpu_sys || 0) + ")" : null);
  card("Peak memory", job.peak_memory_kb === null || job.peak_memory_kb === undefined ? "–" :
    fmtBytes(job.peak_memory_kb * 1024), prof.memoryMode ? prof.memoryMode + " attribution" : null);
  var exitNote = job.error_type ? job.error_type + (job.error_message ? ": " + job.error_message : "") : null;
  card("Exit", job.exit_code === null || job.exit_code === undefined ? (job.status === "succeeded" ? "0" : "–") :
    String(job.exit_code), exitNote && exitNote.length > 300 ? exitNote.slice(0, 300) + "…" : exitNote,
    job.exit_code ? "st-failed" : null);
  if (job.traceback) {
    byId("traceback").textContent = job.traceback;
    byId("failure").hidden = false;
  }

  /* ---- tooltip ------------------------------------------------------------------------ */
  var tip = byId("tip");
  function hideTip() { tip.style.display = "none"; }
  function showRows(heading, rows, ev) {
    tip.textContent = "";
    tip.appendChild(el("div", "t", heading));
    var table = el("table");
    rows.forEach(function (kv) {
      var tr = el("tr");
      tr.appendChild(el("td", null, kv[0]));
      tr.appendChild(el("td", null, kv[1]));
      table.appendChild(tr);
    });
    tip.appendChild(table);
    tip.style.display = "block";
    var x = ev.clientX + 14, y = ev.clientY + 14;
    var r = tip.getBoundingClientRect();
    if (x + r.width > window.innerWidth - 8) x = Math.max(8, ev.clientX - r.width - 14);
    if (y + r.height > window.innerHeight - 8) y = Math.max(8, ev.clientY - r.height - 14);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }

  /* ---- timeline ----------------------------------------------------------------------- */
  var SVG = "http://www.w3.org/2000/svg";
  var PALETTE = ["#0969da", "#e8743b", "#1a7f37", "#8250df", "#bf3989", "#9a6700"];
  function svgEl(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function niceMax(v) {
    if (v <= 0) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }
  function chart(title, series, fmtY, t0, t1, yMax) {
    var box = el("div", "chart");
    box.appendChild(el("h3", null, title));
    var W = 600, H = 150, L = 52, B = 18, T = 6;
    var svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none",
      role: "img", "aria-label": title });
    var maxV = yMax || niceMax(Math.max.apply(null, [0].concat(series.map(function (s) {
      return Math.max.apply(null, [0].concat(s.points.map(function (p) { return p[1]; })));
    }))));
    var span = Math.max(t1 - t0, 1e-6);
    function x(t) { return L + (W - L - 4) * (t - t0) / span; }
    function y(v) { return T + (H - T - B) * (1 - v / maxV); }
    for (var i = 0; i <= 4; i++) {
      var v = maxV * i / 4;
      svg.appendChild(svgEl("line", { x1: L, x2: W - 4, y1: y(v), y2: y(v), "class": "grid" }));
      var lab = svgEl("text", { x: L - 6, y: y(v) + 3, "text-anchor": "end", "class": "tick" });
      lab.textContent = fmtY(v);
      svg.appendChild(lab);
      var tt = t0 + span * i / 4;
      var xl = svgEl("text", { x: x(tt), y: H - 4, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle",
        "class": "tick" });
      xl.textContent = fmtSeconds(tt - t0);
      svg.appendChild(xl);
    }
    series.forEach(function (s, k) {
      if (!s.points.length) return;
      var d = s.points.map(function (p, j) { return (j ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1); }).join("");
      var color = PALETTE[k % PALETTE.length];
      var last = s.points[s.points.length - 1], first = s.points[0];
      svg.appendChild(svgEl("path", { d: d + "L" + x(last[0]).toFixed(1) + " " + y(0) + "L" + x(first[0]).toFixed(1) + " " + y(0) + "Z",
        "class": "area", fill: color }));
      svg.appendChild(svgEl("path", { d: d, "class": "series", stroke: color }));
    });
    // Hover: a cursor line and, per series, the sample nearest in time.
    var cursor = svgEl("line", { y1: T, y2: H - B, "class": "grid", visibility: "hidden" });
    svg.appendChild(cursor);
    svg.addEventListener("mousemove", function (ev) {
      var r = svg.getBoundingClientRect();
      var t = t0 + ((ev.clientX - r.left) * W / r.width - L) / (W - L - 4) * span;
      if (t < t0 || t > t1) { hideTip(); cursor.setAttribute("visibility", "hidden"); return; }
      cursor.setAttribute("x1", x(t));
      cursor.setAttribute("x2", x(t));
      cursor.setAttribute("visibility", "visible");
      var rows = [["at", fmtSeconds(t - t0)]];
      series.forEach(function (s) {
        var best = null;
        s.points.forEach(function (p) { if (best === null || Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p; });
        if (best) rows.push([s.label, fmtY(best[1])]);
      });
      showRows(title, rows, ev);
    });
    svg.addEventListener("mouseleave", function () { hideTip(); cursor.setAttribute("visibility", "hidden"); });
    box.appendChild(svg);
    if (series.length > 1) {
      var legend = el("div", "legend");
      series.forEach(function (s, k) {
        var item = el("span");
        var sw = el("span", "sw");
        sw.style.background = PALETTE[k % PALETTE.length];
        item.appendChild(sw);
        item.appendChild(document.createTextNode(s.label));
        legend.appendChild(item);
      });
      box.appendChild(legend);
    }
    return box;
  }
  (function drawTimeline() {
    var tl = prof.timeline || {};
    var procs = Object.keys(tl).filter(function (p) { return tl[p].length; });
    var host = byId("timeline");
    if (!procs.length) { host.appendChild(el("div", "empty", "No timeline was recorded for this job.")); return; }
    var t0 = job.start_time || Infinity, t1 = job.end_time || -Infinity;
    procs.forEach(function (p) { tl[p].forEach(function (pt) { t0 = Math.min(t0, pt[0]); t1 = Math.max(t1, pt[0]); }); });
    var rss = procs.map(function (p) { return { label: p, points: tl[p].map(function (pt) { return [pt[0], pt[1] * 1024]; }) }; });
    var cpu = procs.map(function (p) { return { label: p, points: tl[p].map(function (pt) { return [pt[0], pt[2]]; }) }; });
    var maxCpu = 0;
    cpu.forEach(function (s) { s.points.forEach(function (p) { maxCpu = Math.max(maxCpu, p[1]); }); });
    var grid = el("div", "charts");
    grid.appendChild(chart("Memory (RSS)", rss, fmtBytes, t0, t1));
    grid.appendChild(chart("CPU use", cpu, function (v) { return v.toFixed(0) + "%"; }, t0, t1,
      Math.max(100, niceMax(maxCpu))));
    host.appendChild(grid);
  })();

  /* ---- flamegraphs ------------------------------------------------------------------- */
  var KINDS = {
    wall: { label: "Wall time", fmt: function (v) { return fmtSeconds(v / 1e6); },
      about: "Where the job's time went, waiting included. Each frame shows its CPU share (orange) and time spent waiting (blue): I/O, locks, sleep." },
    cpu: { label: "CPU time", fmt: function (v) { return fmtSeconds(v / 1e6); },
      about: "Where the job's threads ran on a CPU." },
    memory: { label: "Peak memory", fmt: fmtBytes,
      about: "The memory live at the job's peak, by the stack that allocated it." }
  };
  function decode(flat, withCpu) {
    // Nodes come in preorder, each frame, value, [cpu,] parent index; children follow
    // their parent heaviest first.
    var stride = withCpu ? 4 : 3, all = [];
    for (var i = 0; i + stride <= flat.length; i += stride) {
      var p = flat[i + stride - 1], parent = p >= 0 ? all[p] : null;
      var n = { name: frames[flat[i]], value: flat[i + 1], cpu: withCpu ? flat[i + 2] : null,
        parent: parent, depth: parent ? parent.depth + 1 : 0, children: [], id: all.length };
      if (parent) parent.children.push(n);
      all.push(n);
    }
    if (!all.length) return null;
    all[0].name = "all";
    return { root: all[0], nodes: all };
  }
  var trees = {};
  ["wall", "cpu", "memory"].forEach(function (k) {
    if (prof[k]) trees[k] = decode(prof[k], k === "wall") || undefined;
  });
  var state = { kind: "wall", focus: null, term: "" };
  var flame = byId("flame"), info = byId("flame-info"), matchInfo = byId("match-info");
  var ROW = 18;
  function hue(name) {
    var h = 0;
    for (var i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) | 0;
    return Math.abs(h);
  }
  function color(kind, node) {
    var h = hue(node.name);
    if (kind === "memory") return "hsl(" + (200 + h % 40) + ",70%," + (62 + h % 14) + "%)";
    return "hsl(" + (12 + h % 34) + ",85%," + (58 + h % 12) + "%)";
  }
  function matches(node) {
    return state.term && node.name.toLowerCase().indexOf(state.term) >= 0;
  }
  function render() {
    var tree = trees[state.kind];
    flame.textContent = "";
    tabs.forEach(function (b) { b.classList.toggle("on", b.dataset.kind === state.kind); });
    info.textContent = KINDS[state.kind].about;
    legend.style.display = state.kind === "wall" ? "" : "none";
    if (!tree || !tree.root.value) {
      flame.appendChild(el("div", "empty", "No " + KINDS[state.kind].label.toLowerCase() +
        " profile was recorded for this job."));
      matchInfo.textContent = "";
      drawTop();
      return;
    }
    var focus = state.focus || tree.root;
    var width = flame.clientWidth || 800;
    var maxDepth = 0, html = [];
    var ancestors = [];
    for (var a = focus.parent; a; a = a.parent) ancestors.unshift(a);
    function place(node, x, w, cls) {
      var d = el("div", "fr" + cls);
      d.dataset.id = node.id;
      d.style.left = x + "px";
      d.style.width = Math.max(w, 1) + "px";
      d.style.top = node.depth * ROW + "px";
      if (state.kind === "wall" && node.value > 0) {
        var c = Math.max(0, Math.min(100, pct(node.cpu, node.value)));
        // Neighbouring frames differ slightly in shade, so their edges stay visible.
        var h = hue(node.name);
        var cpuColor = "hsl(" + (16 + h % 14) + ",82%," + (56 + h % 9) + "%)";
        var waitColor = "hsl(" + (208 + h % 10) + ",48%," + (70 + h % 9) + "%)";
        d.style.background = "linear-gradient(to right, " + cpuColor + " " + c.toFixed(1) + "%, " +
          waitColor + " " + c.toFixed(1) + "%)";
      } else {
        d.style.background = color(state.kind, node);
      }
      if (w > 24) d.textContent = node.name;
      html.push(d);
      if (node.depth > maxDepth) maxDepth = node.depth;
    }
    ancestors.forEach(function (n) { place(n, 0, width, " anc" + (matches(n) ? " match" : "")); });
    var scale = width / focus.value;
    (function lay(node, x) {
      var w = node.value * scale;
      if (w < 0.5) return;
      place(node, x, w, matches(node) ? " match" : (state.term ? " dim" : ""));
      var cx = x;
      for (var i = 0; i < node.children.length; i++) {
        lay(node.children[i], cx);
        cx += node.children[i].value * scale;
      }
    })(focus, 0);
    var frag = document.createDocumentFragment();
    html.forEach(function (d) { frag.appendChild(d); });
    flame.appendChild(frag);
    flame.style.height = (maxDepth + 1) * ROW + 2 + "px";
    resetBtn.disabled = focus === tree.root;
    if (state.term) {
      var hit = 0;
      (function sum(n) {
        if (matches(n)) { hit += n.value; return; }
        n.children.forEach(sum);
      })(tree.root);
      matchInfo.textContent = "Matched: " + fmtPct(pct(hit, tree.root.value)) + " (" + KINDS[state.kind].fmt(hit) + ")";
    } else {
      matchInfo.textContent = "";
    }
    drawTop();
  }
  function drawTop() {
    var body = byId("top-body");
    body.textContent = "";
    var rows = (prof.top || {})[state.kind] || [];
    var tree = trees[state.kind];
    var total = tree ? tree.root.value : 0;
    var fmt = KINDS[state.kind].fmt;
    rows.forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(el("td", "mono", frames[r[0]]));
      tr.appendChild(el("td", null, fmt(r[1])));
      tr.appendChild(el("td", null, fmtPct(pct(r[1], total))));
      tr.appendChild(el("td", null, fmt(r[2])));
      tr.appendChild(el("td", null, fmtPct(pct(r[2], total))));
      body.appendChild(tr);
    });
    if (!rows.length) {
      var tr = el("tr"), td = el("td", "empty", "Nothing recorded.");
      td.colSpan = 5;
      tr.appendChild(td);
      body.appendChild(tr);
    }
  }
  function nodeOf(target) {
    var tree = trees[state.kind];
    while (target && target !== flame && !(target.dataset && target.dataset.id)) target = target.parentNode;
    if (!tree || !target || target === flame) return null;
    return tree.nodes[+target.dataset.id];
  }
  function showTip(node, ev) {
    var tree = trees[state.kind], fmt = KINDS[state.kind].fmt;
    var rows = [];
    function row(k, v) { rows.push([k, v]); }
    row(KINDS[state.kind].label, fmt(node.value) + " (" + fmtPct(pct(node.value, tree.root.value)) + " of total)");
    var focus = state.focus || tree.root;
    if (focus !== tree.root) row("of zoomed", fmtPct(pct(node.value, focus.value)));
    if (state.kind === "wall") {
      row("CPU", fmt(node.cpu) + " (" + fmtPct(pct(node.cpu, node.value)) + ")");
      row("Waiting", fmt(node.value - node.cpu) + " (" + fmtPct(pct(node.value - node.cpu, node.value)) + ")");
    }
    var self = node.value;
    node.children.forEach(function (c) { self -= c.value; });
    row("Self", fmt(self));
    showRows(node.name, rows, ev);
  }
  flame.addEventListener("mousemove", function (ev) {
    var node = nodeOf(ev.target);
    if (node) showTip(node, ev); else tip.style.display = "none";
  });
  flame.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  flame.addEventListener("click", function (ev) {
    var node = nodeOf(ev.target);
    if (!node) return;
    var tree = trees[state.kind];
    state.focus = node === tree.root ? null : node;
    tip.style.display = "none";
    render();
  });
  var tabs = Array.prototype.slice.call(document.querySelectorAll("#tabs button"));
  tabs.forEach(function (b) {
    b.addEventListener("click", function () {
      state.kind = b.dataset.kind;
      state.focus = null;
      render();
    });
  });
  var legend = byId("legend");
  var resetBtn = byId("reset");
  resetBtn.addEventListener("click", function () { state.focus = null; render(); });
  byId("search").addEventListener("input", function (ev) {
    state.term = ev.target.value.trim().toLowerCase();
    render();
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape" && state.focus) { state.focus = null; render(); }
  });
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(render, 100);
  });
  if (!(trees.wall && trees.wall.root.value)) {
    if (trees.memory && trees.memory.root.value) state.kind = "memory";
  }
  render();
})();
