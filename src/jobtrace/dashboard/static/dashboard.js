/* jobtrace dashboard: metric charts (plotly.js, downsampled by the server per pixel bucket,
   more detail fetched on zoom), the comparison's "only differences" switch, and live
   refresh of a running job. Chart state (axis, log scale, smoothing, zoom) lives in the
   address. User strings are set with textContent only. */
(function () {
  "use strict";
  function byId(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  var params = new URLSearchParams(window.location.search);
  function setParam(key, value) {
    if (value === null || value === "" || value === undefined) params.delete(key);
    else params.set(key, String(value));
    var query = params.toString();
    history.replaceState(null, "", window.location.pathname + (query ? "?" + query : "") +
      window.location.hash);
  }

  /* ---- comparison: only differences ----------------------------------------------------- */
  var onlyDiff = byId("only-diff");
  if (onlyDiff) {
    onlyDiff.addEventListener("change", function () {
      byId("diff-table").classList.toggle("only-diff", onlyDiff.checked);
      setParam("diff", onlyDiff.checked ? "1" : null);
    });
  }

  var dataNode = byId("dashboard-data");
  if (!dataNode || typeof Plotly === "undefined") return;
  var data = JSON.parse(dataNode.textContent);
  var jobs = data.jobs || [];
  var COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf"];
  var CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["toImage"] };

  /* ---- per-item durations (a batch job) ---------------------------------------------- */
  var durationsBox = byId("durations");
  if (durationsBox && data.durations && data.durations.length) {
    Plotly.newPlot(durationsBox, [{ type: "histogram", x: data.durations, marker: { color: COLORS[0] },
      name: "items" }], { height: 220, margin: { l: 50, r: 10, t: 24, b: 40 },
      title: { text: "Per-item durations (s)", font: { size: 12 } }, bargap: 0.05,
      xaxis: { title: { text: "seconds" } }, yaxis: { title: { text: "items" } } }, CONFIG);
  }

  var box = byId("charts");
  if (!box) return;
  var state = {
    x: ["step", "relative", "wall"].indexOf(params.get("x")) >= 0 ? params.get("x") : "step",
    log: params.get("log") === "1",
    smooth: Math.min(0.99, Math.max(0, parseFloat(params.get("smooth")) || 0)),
    range: null
  };
  var rawRange = /^(\d+),(\d+)$/.exec(params.get("range") || "");
  if (rawRange) state.range = [parseInt(rawRange[1], 10), parseInt(rawRange[2], 10)];

  var axisSelect = byId("x-axis"), logBox = byId("log-y"), smoothInput = byId("smooth");
  axisSelect.value = state.x;
  logBox.checked = state.log;
  smoothInput.value = String(state.smooth);
  byId("smooth-value").textContent = state.smooth.toFixed(2);

  var charts = (data.metrics || []).map(function (name) {
    var card = el("div", "metric-chart");
    card.appendChild(el("h3", null, name));
    var plot = el("div", "plot");
    card.appendChild(plot);
    var note = el("div", "muted note");
    card.appendChild(note);
    box.appendChild(card);
    return { name: name, plot: plot, note: note, result: null, seq: 0 };
  });

  function number(v) {
    if (typeof v === "number") return v;
    return null; /* "nan", "inf", "-inf": a gap (the note says how many) */
  }
  function xOf(point, job) {
    if (state.x === "wall") return new Date(point[2] * 1000);
    if (state.x === "relative") return point[2] - (job.start || 0);
    return point[0];
  }
  function smooth(ys) {
    var a = state.smooth, last = null;
    return ys.map(function (y) {
      if (y === null || !isFinite(y)) return y;
      last = last === null ? y : a * last + (1 - a) * y;
      return last;
    });
  }

  function load(chart) {
    var width = Math.max(100, Math.min(2500, Math.round(chart.plot.clientWidth || 600)));
    var query = new URLSearchParams();
    query.set("name", chart.name);
    jobs.forEach(function (job) { query.append("jobId", job.id); });
    query.set("buckets", String(width));
    if (state.range) {
      query.set("start", String(state.range[0]));
      query.set("end", String(state.range[1]));
    }
    var seq = ++chart.seq;
    return fetch("/api/v1/metric-buckets?" + query.toString(), { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (result) {
        if (seq !== chart.seq) return; /* a newer zoom answered first */
        chart.result = result;
        draw(chart);
      })
      .catch(function (error) { chart.note.textContent = "Could not load: " + error.message; });
  }

  function draw(chart) {
    var result = chart.result, traces = [], shown = 0, total = 0, gaps = 0;
    result.series.forEach(function (series, k) {
      var job = jobs[k] || { id: series.jobId, name: series.jobId };
      var xs = [], ys = [];
      series.points.forEach(function (p) {
        xs.push(xOf(p, job));
        var y = number(p[1]);
        if (y === null) gaps++;
        ys.push(y);
      });
      shown += xs.length;
      total += series.total;
      var color = COLORS[k % COLORS.length];
      var label = jobs.length > 1 ? job.name : chart.name;
      if (state.smooth > 0) {
        traces.push({ type: "scatter", mode: "lines", x: xs, y: ys, name: label + " (raw)",
          line: { color: color, width: 1 }, opacity: 0.3, showlegend: false, hoverinfo: "skip" });
        ys = smooth(ys);
      }
      traces.push({ type: "scatter", mode: xs.length < 60 ? "lines+markers" : "lines", x: xs, y: ys,
        name: label, line: { color: color, width: 1.5 }, marker: { size: 4 } });
    });
    var xTitle = { step: "step", relative: "seconds since start", wall: "time" }[state.x];
    var layout = {
      height: 260, margin: { l: 56, r: 12, t: jobs.length > 1 ? 28 : 8, b: 40 },
      showlegend: jobs.length > 1, legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" },
      hovermode: "x unified",
      xaxis: { title: { text: xTitle }, type: state.x === "wall" ? "date" : "linear" },
      yaxis: { type: state.log ? "log" : "linear" }
    };
    if (state.range && state.x === "step") layout.xaxis.range = [state.range[0], state.range[1]];
    chart.drawing = true;
    Plotly.react(chart.plot, traces, layout, CONFIG).then(function () { chart.drawing = false; });
    var text = shown < total ? shown + " of " + total + " points drawn (each pixel's min and max)"
      : total + " points";
    if (gaps) text += "; " + gaps + " NaN/Inf shown as gaps";
    chart.note.textContent = text;
    if (!chart.bound) {
      chart.bound = true;
      chart.plot.on("plotly_relayout", function (event) { onZoom(chart, event); });
    }
  }

  /* A zoom on any chart zooms all of them to the same steps and fetches the detail. */
  function onZoom(chart, event) {
    if (chart.drawing) return;
    if (event["xaxis.autorange"]) { setRange(null); return; }
    var lo = event["xaxis.range[0]"], hi = event["xaxis.range[1]"];
    if (lo === undefined && event["xaxis.range"]) { lo = event["xaxis.range"][0]; hi = event["xaxis.range"][1]; }
    if (lo === undefined || hi === undefined) return;
    setRange(toSteps(chart, lo, hi));
  }
  function toSteps(chart, lo, hi) {
    if (state.x === "step") return [Math.max(0, Math.floor(lo)), Math.max(0, Math.ceil(hi))];
    var first = null, last = null;
    if (state.x === "wall") { lo = new Date(lo).getTime(); hi = new Date(hi).getTime(); }
    chart.result.series.forEach(function (series, k) {
      var job = jobs[k] || {};
      series.points.forEach(function (p) {
        var x = xOf(p, job);
        if (x instanceof Date) x = x.getTime();
        if (x >= lo && x <= hi) {
          first = first === null ? p[0] : Math.min(first, p[0]);
          last = last === null ? p[0] : Math.max(last, p[0]);
        }
      });
    });
    return first === null ? state.range : [first, last];
  }
  function setRange(range) {
    state.range = range;
    setParam("range", range ? range[0] + "," + range[1] : null);
    byId("chart-info").textContent = range ? "steps " + range[0] + " to " + range[1] : "";
    charts.forEach(load);
  }

  axisSelect.addEventListener("change", function () {
    state.x = axisSelect.value;
    setParam("x", state.x === "step" ? null : state.x);
    charts.forEach(function (c) { if (c.result) draw(c); });
  });
  logBox.addEventListener("change", function () {
    state.log = logBox.checked;
    setParam("log", state.log ? "1" : null);
    charts.forEach(function (c) { if (c.result) draw(c); });
  });
  smoothInput.addEventListener("input", function () {
    state.smooth = parseFloat(smoothInput.value) || 0;
    byId("smooth-value").textContent = state.smooth.toFixed(2);
    setParam("smooth", state.smooth ? state.smooth.toFixed(2) : null);
    charts.forEach(function (c) { if (c.result) draw(c); });
  });
  byId("reset-zoom").addEventListener("click", function () { setRange(null); });
  if (state.range) byId("chart-info").textContent = "steps " + state.range[0] + " to " + state.range[1];
  charts.forEach(load);

  /* ---- live refresh of a running job ------------------------------------------------ */
  if (data.live && jobs.length === 1) {
    var timer = setInterval(function () {
      fetch("/api/v1/jobs/" + encodeURIComponent(jobs[0].id), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (job) {
          if (job && job.status !== "running") { clearInterval(timer); window.location.reload(); return; }
          charts.forEach(load);
        })
        .catch(function () { /* the next tick tries again */ });
    }, 5000);
  }
})();
