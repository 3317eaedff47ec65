// The dashboard's charts, drawn by uPlot (vendored in static/vendor/uplot with its
// license; nothing is fetched). MFChart.line(el, opts) and MFChart.bars(el, opts) draw into
// `el`, replacing what was there; the uPlot instance is kept as `el.mfChart`. Points arrive
// already downsampled by the server (a few thousand at most); a null y breaks a line.
// Names from run files reach the page only through textContent (uPlot's legend and title
// use it too).
"use strict";
(function () {
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
                   "#be185d", "#4d7c0f", "#7c2d12", "#475569"];
  const live = new Set();  // charts on the page, resized with the window

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    return (+v.toPrecision(3)).toString();
  }

  function tooltip() {
    let t = document.getElementById("mf-tooltip");
    if (!t) {
      t = document.createElement("div");
      t.id = "mf-tooltip";
      t.className = "mf-tooltip";
      document.body.appendChild(t);
    }
    return t;
  }

  function showTip(evt, lines) {
    const t = tooltip();
    t.replaceChildren(...lines.map(l => {
      const d = document.createElement("div");
      d.textContent = l;
      return d;
    }));
    t.style.display = "block";
    const x = Math.min(evt.clientX + 14, window.innerWidth - t.offsetWidth - 8);
    t.style.left = (x + window.scrollX) + "px";
    t.style.top = (evt.clientY + 14 + window.scrollY) + "px";
  }

  function hideTip() { tooltip().style.display = "none"; }

  function div(cls, text) {
    const d = document.createElement("div");
    d.className = cls;
    if (text !== undefined) d.textContent = text;
    return d;
  }

  const finite = v => typeof v === "number" && Number.isFinite(v);

  function extent(arrs, extra) {
    let lo = Infinity, hi = -Infinity;
    for (const a of arrs) for (const v of a) {
      if (finite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
    }
    for (const v of extra || []) { if (finite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; } }
    return lo === Infinity ? null : [lo, hi];
  }

  // Replaces what `el` holds by a uPlot chart of `opts` (uPlot options) and `data`.
  function mount(el, opts, data, height) {
    if (el.mfChart) { live.delete(el.mfChart); el.mfChart.destroy(); }
    el.replaceChildren();
    const width = Math.max(320, el.clientWidth || 640);
    const u = new uPlot(Object.assign({width, height}, opts), data, el);
    u.root.classList.add("mf-chart");
    el.mfChart = u;
    live.add(u);
    return u;
  }

  // Lines on the plot's overlay (thresholds, event markers), placed again on every redraw.
  function overlays(hlines, markers) {
    return u => {
      for (const o of u.over.querySelectorAll(".mf-hline, .mf-marker")) o.remove();
      for (const h of hlines) {
        const y = u.valToPos(h.y, "y");
        if (!(y >= 0 && y <= u.over.clientHeight)) continue;
        const line = div("mf-hline");
        line.dataset.label = h.label;
        line.style.top = y + "px";
        line.style.borderTopColor = h.color;
        const lab = div("mf-hlabel", `${h.label} ${fmt(h.y)}`);
        lab.style.color = h.color;
        line.appendChild(lab);
        u.over.appendChild(line);
      }
      for (const mk of markers) {
        const x = u.valToPos(mk.x, "x");
        if (!(x >= 0 && x <= u.over.clientWidth)) continue;
        const m = div("mf-marker");
        m.dataset.event = mk.label;
        m.style.left = (x - 4) + "px";
        m.style.setProperty("--mk", mk.color || "#f59e0b");
        m.addEventListener("mousemove", e => showTip(e, [mk.label].concat(mk.details || [])));
        m.addEventListener("mouseleave", hideTip);
        u.over.appendChild(m);
      }
    };
  }

  function axes(opts, xvalues) {
    const tick = (u, vals) => vals.map(v => v === null ? "" : fmt(v));
    return [{label: opts.xlabel, values: xvalues || tick, stroke: "#64748b",
             grid: {stroke: "#eef2f7"}, ticks: {stroke: "#cbd5e1"}},
            {label: opts.ylabel, values: tick, stroke: "#64748b", size: 56,
             grid: {stroke: "#eef2f7"}, ticks: {stroke: "#cbd5e1"}}];
  }

  // opts: {title, xlabel, ylabel, height, series: [{name, x, y, color, step, dots, noline,
  //        dashed}], hlines: [{y, label, color}], markers: [{x, label, color, details}],
  //        ymin, ymax, xmin, xmax, logy: true | false | "auto" (log when > 0 and spanning
  //        a decade or more)}
  function line(el, opts) {
    const series = opts.series || [];
    const hlines = (opts.hlines || []).filter(h => finite(h.y));
    const markers = (opts.markers || []).filter(m => finite(m.x));
    const tables = series.map(s => {
      const xs = [], ys = [];
      for (let k = 0; k < s.x.length; k++) {
        if (!finite(s.x[k])) continue;
        xs.push(s.x[k]);
        ys.push(finite(s.y[k]) ? s.y[k] : null);
      }
      return [xs, ys];
    });
    const data = tables.length ? uPlot.join(tables) : [[]];
    const ys = extent(series.map(s => s.y));
    const log = opts.logy === true || (opts.logy === "auto" && ys !== null && ys[0] > 0 &&
                                       ys[1] / ys[0] >= 10);
    const xr = extent([data[0]], markers.map(m => m.x)) || [0, 1];
    let x0 = opts.xmin ?? xr[0], x1 = opts.xmax ?? xr[1];
    if (!(x1 > x0)) x1 = x0 + 1;
    const yRange = (u, lo, hi) => {
      if (log) return uPlot.rangeLog(lo ?? 1, hi ?? 10, 10, false);
      const e = extent([[lo, hi]], hlines.map(h => h.y)) || [0, 1];
      let a = opts.ymin ?? e[0], b = opts.ymax ?? e[1];
      const pad = (b - a) * 0.05 || 1;
      if (opts.ymin === undefined) a -= pad;
      if (opts.ymax === undefined) b += pad;
      return [a, b];
    };
    let n = 0;
    for (const [, y] of tables) for (const v of y) if (v !== null) n++;
    const u = mount(el, {
      title: opts.title,
      scales: {x: {time: false, range: () => [x0, x1]},
               y: log ? {distr: 3, log: 10, range: yRange} : {range: yRange}},
      axes: axes(opts),
      legend: {show: true},
      cursor: {points: {size: 6}},
      series: [{label: opts.xlabel || "x", value: (u, v) => fmt(v)}].concat(series.map((s, i) => ({
        label: s.name,
        stroke: s.noline ? "transparent" : (s.color || PALETTE[i % PALETTE.length]),
        width: s.width || 1.5,
        dash: s.dashed ? [4, 3] : undefined,
        spanGaps: false,
        value: (u, v) => fmt(v),
        paths: s.step ? uPlot.paths.stepped({align: 1}) : undefined,
        points: {show: !!(s.dots || s.noline), size: 6,
                 fill: s.color || PALETTE[i % PALETTE.length]},
      }))),
      hooks: {draw: [overlays(hlines, markers)]},
    }, data, opts.height || 240);
    u.root.dataset.points = n;
    u.root.dataset.series = series.length;
    u.root.dataset.log = log ? "y" : "";
    return u;
  }

  // opts: {title, labels: [...], groups: [{name, values: [...], color}], unit, height, ymax}
  function bars(el, opts) {
    const labels = opts.labels || [];
    const groups = opts.groups || [];
    const G = Math.max(1, groups.length), w = 0.8 / G;
    const xs = labels.map((_, i) => i);
    const all = groups.flatMap(g => g.values.filter(finite));
    const top = Math.max(opts.ymax || 0, ...all) || 1;  // all zero: a 0..1 axis
    const valueLabels = u => {
      if (groups.length > 2) return;  // values on hover only: labels would collide
      const ctx = u.ctx;
      ctx.save();
      ctx.fillStyle = "#334155";
      ctx.font = `${10 * devicePixelRatio}px system-ui, sans-serif`;
      ctx.textAlign = "center";
      groups.forEach((g, j) => labels.forEach((_, i) => {
        const v = g.values[i];
        if (!finite(v)) return;
        const x = u.valToPos(i - 0.4 + (j + 0.5) * w, "x", true);
        ctx.fillText(fmt(v), x, u.valToPos(v, "y", true) - 3 * devicePixelRatio);
      }));
      ctx.restore();
    };
    const u = mount(el, {
      title: opts.title,
      scales: {x: {time: false, range: () => [-0.5, Math.max(0.5, labels.length - 0.5)]},
               y: {range: () => [0, top * 1.12]}},
      axes: axes({ylabel: opts.ylabel}, (u, splits) => splits.map(i => labels[i] ?? "")).map((a, i) =>
        i === 0 ? Object.assign(a, {splits: () => xs, grid: {show: false}}) : a),
      legend: {show: groups.length > 1},
      cursor: {points: {show: false}},
      series: [{label: opts.xlabel || "", value: (u, i) => labels[i] ?? ""}].concat(groups.map((g, j) => ({
        label: g.name,
        fill: g.color || PALETTE[j % PALETTE.length],
        stroke: g.color || PALETTE[j % PALETTE.length],
        width: 0,
        value: (u, v) => v === null || v === undefined ? "–" : fmt(v) + (opts.unit || ""),
        paths: uPlot.paths.bars({disp: {
          x0: {unit: 1, values: () => xs.map(i => i - 0.4 + j * w)},
          size: {unit: 1, values: () => [w * 0.92]}}}),
        points: {show: false},
      }))),
      hooks: {draw: [valueLabels]},
    }, [xs].concat(groups.map(g => labels.map((_, i) => finite(g.values[i]) ? g.values[i] : null))),
    opts.height || 220);
    u.root.dataset.bars = labels.length * groups.length;
    return u;
  }

  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => {
      for (const u of [...live]) {
        const el = u.root.parentNode;
        if (!el || !document.body.contains(el)) { live.delete(u); continue; }
        u.setSize({width: Math.max(320, el.clientWidth || 640), height: u.height});
      }
    }, 150);
  });

  window.MFChart = {line, bars, fmt, PALETTE};
})();
