// mixfleet's own small SVG chart code (no third-party library, nothing fetched).
// MFChart.line(el, opts) and MFChart.bars(el, opts) draw into `el`, replacing what was
// there. Points arrive already downsampled by the server (a few thousand at most).
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
                   "#be185d", "#4d7c0f", "#7c2d12", "#475569"];

  function svgEl(tag, attrs) {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    return e;
  }

  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    const span = hi - lo, raw = span / Math.max(1, n);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return out;
  }

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
    t.textContent = "";
    for (const l of lines) {
      const d = document.createElement("div");
      d.textContent = l;
      t.appendChild(d);
    }
    t.style.display = "block";
    const x = Math.min(evt.clientX + 14, window.innerWidth - t.offsetWidth - 8);
    t.style.left = (x + window.scrollX) + "px";
    t.style.top = (evt.clientY + 14 + window.scrollY) + "px";
  }

  function hideTip() { tooltip().style.display = "none"; }

  function frame(el, opts) {
    el.textContent = "";
    const W = Math.max(320, el.clientWidth || 640), H = opts.height || 240;
    const m = {l: 58, r: 14, t: opts.title ? 26 : 10, b: 38};
    const svg = svgEl("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`,
                               class: "mf-chart", role: "img"});
    if (opts.title) {
      const tt = svgEl("text", {x: m.l, y: 16, class: "mf-title"});
      tt.textContent = opts.title;
      svg.appendChild(tt);
    }
    el.appendChild(svg);
    return {svg, W, H, m, pw: W - m.l - m.r, ph: H - m.t - m.b};
  }

  function axes(f, xs, ys, opts) {
    const {svg, m, pw, ph, H} = f;
    const g = svgEl("g", {class: "mf-axes"});
    for (const v of ys.ticks) {
      const y = ys.map(v);
      g.appendChild(svgEl("line", {x1: m.l, x2: m.l + pw, y1: y, y2: y, class: "mf-grid"}));
      const t = svgEl("text", {x: m.l - 6, y: y + 4, class: "mf-tick", "text-anchor": "end"});
      t.textContent = fmt(v);
      g.appendChild(t);
    }
    for (const v of xs.ticks) {
      const x = xs.map(v);
      g.appendChild(svgEl("line", {x1: x, x2: x, y1: m.t + ph, y2: m.t + ph + 4,
                                   class: "mf-axis"}));
      const t = svgEl("text", {x: x, y: m.t + ph + 16, class: "mf-tick",
                               "text-anchor": "middle"});
      t.textContent = fmt(v);
      g.appendChild(t);
    }
    g.appendChild(svgEl("rect", {x: m.l, y: m.t, width: pw, height: ph, class: "mf-plot"}));
    if (opts.xlabel) {
      const t = svgEl("text", {x: m.l + pw / 2, y: H - 6, class: "mf-label",
                               "text-anchor": "middle"});
      t.textContent = opts.xlabel;
      g.appendChild(t);
    }
    if (opts.ylabel) {
      const t = svgEl("text", {x: 12, y: m.t + ph / 2, class: "mf-label",
                               "text-anchor": "middle",
                               transform: `rotate(-90 12 ${m.t + ph / 2})`});
      t.textContent = opts.ylabel;
      g.appendChild(t);
    }
    svg.appendChild(g);
  }

  function scale(lo, hi, a, b, n) {
    if (!(hi > lo)) { const c = lo || 0; lo = c - 1; hi = c + 1; }
    const ticks = niceTicks(lo, hi, n);
    return {lo, hi, ticks, map: v => a + (v - lo) / (hi - lo) * (b - a)};
  }

  function extent(arrs, extra) {
    let lo = Infinity, hi = -Infinity;
    for (const a of arrs) for (const v of a) {
      if (v !== null && v !== undefined && !Number.isNaN(v)) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    for (const v of extra || []) { if (v < lo) lo = v; if (v > hi) hi = v; }
    return lo === Infinity ? [0, 1] : [lo, hi];
  }

  // opts: {title, xlabel, ylabel, height, nogaps, series: [{name, x, y, color, step}],
  //        hlines: [{y, label, color}], markers: [{x, label, color, details: [lines]}],
  //        ymin, ymax, xmin, xmax}
  function line(el, opts) {
    const f = frame(el, opts);
    const series = opts.series || [];
    const markers = opts.markers || [];
    const hl = (opts.hlines || []).map(h => h.y);
    let [x0, x1] = extent(series.map(s => s.x), markers.map(mk => mk.x));
    let [y0, y1] = extent(series.map(s => s.y), hl);
    if (opts.xmin !== undefined) x0 = opts.xmin;
    if (opts.xmax !== undefined) x1 = opts.xmax;
    if (opts.ymin !== undefined) y0 = opts.ymin;
    if (opts.ymax !== undefined) y1 = opts.ymax;
    const pad = (y1 - y0) * 0.05 || 1;
    if (opts.ymin === undefined) y0 -= pad;
    if (opts.ymax === undefined) y1 += (series.length > 1 || opts.legend) ? 3 * pad : pad;
    const xs = scale(x0, x1, f.m.l, f.m.l + f.pw, 8);
    const ys = scale(y0, y1, f.m.t + f.ph, f.m.t, 5);
    axes(f, xs, ys, opts);
    const clip = "mfclip" + Math.random().toString(36).slice(2);
    const defs = svgEl("defs");
    const cp = svgEl("clipPath", {id: clip});
    cp.appendChild(svgEl("rect", {x: f.m.l, y: f.m.t, width: f.pw, height: f.ph}));
    defs.appendChild(cp);
    f.svg.appendChild(defs);
    const body = svgEl("g", {"clip-path": `url(#${clip})`});
    f.svg.appendChild(body);
    for (const h of opts.hlines || []) {
      const y = ys.map(h.y);
      body.appendChild(svgEl("line", {x1: f.m.l, x2: f.m.l + f.pw, y1: y, y2: y,
                                      stroke: h.color || "#dc2626", "stroke-dasharray": "6 4",
                                      class: "mf-hline", "data-label": h.label}));
      const t = svgEl("text", {x: f.m.l + f.pw - 4, y: y + 12,
                               class: "mf-hlabel",
                               "text-anchor": "end", fill: h.color || "#dc2626"});
      t.textContent = `${h.label} ${fmt(h.y)}`;
      body.appendChild(t);
    }
    let total = 0;
    series.forEach((s, i) => {
      const color = s.color || PALETTE[i % PALETTE.length];
      let d = "", pen = false, n = 0, prevX = null;
      // A gap far longer than the usual spacing (a restart, a pause) is not bridged.
      const gaps = [];
      for (let k = 1; k < s.x.length; k++) gaps.push(s.x[k] - s.x[k - 1]);
      gaps.sort((a, b) => a - b);
      const maxGap = s.step || opts.nogaps || gaps.length < 8 ? Infinity
        : 20 * (gaps[gaps.length >> 1] || Infinity);
      for (let k = 0; k < s.x.length; k++) {
        const v = s.y[k];
        if (v === null || v === undefined || Number.isNaN(v)) { pen = false; continue; }
        if (prevX !== null && s.x[k] - prevX > maxGap) pen = false;
        prevX = s.x[k];
        const px = xs.map(s.x[k]).toFixed(1), py = ys.map(v).toFixed(1);
        if (!pen) d += `M${px},${py}`;
        else if (s.step) d += `H${px}V${py}`;
        else d += `L${px},${py}`;
        pen = true; n++;
      }
      total += n;
      const p = svgEl("path", {d, fill: "none", stroke: color, "stroke-width": s.width || 1.5,
                               class: "mf-series", "data-series": s.name, "data-n": n});
      if (s.dashed) p.setAttribute("stroke-dasharray", "4 3");
      if (s.noline) p.setAttribute("stroke", "none");
      body.appendChild(p);
      if (s.dots) {
        for (let k = 0; k < s.x.length; k++) {
          if (s.y[k] === null) continue;
          body.appendChild(svgEl("circle", {cx: xs.map(s.x[k]), cy: ys.map(s.y[k]), r: 3.5,
                                            fill: color, class: "mf-dot"}));
        }
      }
    });
    f.svg.setAttribute("data-points", total);
    for (const mk of markers) {
      const x = xs.map(mk.x);
      const g = svgEl("g", {class: "mf-marker", "data-event": mk.label});
      g.appendChild(svgEl("line", {x1: x, x2: x, y1: f.m.t, y2: f.m.t + f.ph,
                                   stroke: mk.color || "#f59e0b", "stroke-width": 1.5,
                                   class: "mf-marker-line"}));
      g.appendChild(svgEl("rect", {x: x - 5, y: f.m.t, width: 10, height: f.ph,
                                   fill: "transparent", class: "mf-marker-hit"}));
      g.addEventListener("mousemove", e => showTip(e, [mk.label].concat(mk.details || [])));
      g.addEventListener("mouseleave", hideTip);
      body.appendChild(g);
    }
    // Legend.
    if (series.length > 1 || opts.legend) {
      let lx = f.m.l + 8;
      series.forEach((s, i) => {
        const color = s.color || PALETTE[i % PALETTE.length];
        f.svg.appendChild(svgEl("rect", {x: lx, y: f.m.t + 6, width: 10, height: 3,
                                         fill: color}));
        const t = svgEl("text", {x: lx + 14, y: f.m.t + 11, class: "mf-legend"});
        t.textContent = s.name;
        f.svg.appendChild(t);
        lx += 24 + 6.5 * s.name.length;
      });
    }
    // Hover read-out of the nearest point of each series.
    const hit = svgEl("rect", {x: f.m.l, y: f.m.t, width: f.pw, height: f.ph,
                               fill: "transparent", class: "mf-hover"});
    const cross = svgEl("line", {y1: f.m.t, y2: f.m.t + f.ph, class: "mf-cross",
                                 visibility: "hidden"});
    f.svg.insertBefore(hit, body);
    f.svg.appendChild(cross);
    hit.addEventListener("mousemove", e => {
      const r = f.svg.getBoundingClientRect();
      const xv = xs.lo + (e.clientX - r.left - f.m.l) / f.pw * (xs.hi - xs.lo);
      cross.setAttribute("x1", e.clientX - r.left);
      cross.setAttribute("x2", e.clientX - r.left);
      cross.setAttribute("visibility", "visible");
      const lines = [`${opts.xlabel || "x"}: ${fmt(xv)}`];
      for (const s of series) {
        let best = -1, bd = Infinity;
        for (let k = 0; k < s.x.length; k++) {
          const dd = Math.abs(s.x[k] - xv);
          if (dd < bd) { bd = dd; best = k; }
        }
        if (best >= 0) lines.push(`${s.name}: ${fmt(s.y[best])}`);
      }
      showTip(e, lines);
    });
    hit.addEventListener("mouseleave", () => { hideTip(); cross.setAttribute("visibility", "hidden"); });
    return f.svg;
  }

  // opts: {title, labels: [...], groups: [{name, values: [...], color}], unit, height}
  function bars(el, opts) {
    const f = frame(el, Object.assign({height: 220}, opts));
    const groups = opts.groups || [];
    const all = groups.flatMap(g => g.values.filter(v => v !== null));
    const top = Math.max(opts.ymax || 0, ...all) || 1;  // all zero: a 0..1 axis
    const ys = scale(0, top * 1.1, f.m.t + f.ph, f.m.t, 4);
    const labels = opts.labels || [];
    const xs = {ticks: [], lo: 0, hi: 1, map: v => v};
    axes(f, xs, ys, opts);
    const slot = f.pw / Math.max(1, labels.length);
    const bw = Math.min(38, slot * 0.8 / Math.max(1, groups.length));
    labels.forEach((lab, i) => {
      const cx = f.m.l + slot * (i + 0.5);
      const t = svgEl("text", {x: cx, y: f.m.t + f.ph + 16, class: "mf-tick",
                               "text-anchor": "middle"});
      t.textContent = lab;
      f.svg.appendChild(t);
      groups.forEach((g, j) => {
        const v = g.values[i];
        if (v === null || v === undefined) return;
        const x = cx - bw * groups.length / 2 + j * bw;
        const y = ys.map(v);
        const r = svgEl("rect", {x, y, width: bw - 2, height: f.m.t + f.ph - y,
                                 fill: g.color || PALETTE[j % PALETTE.length], class: "mf-bar",
                                 "data-label": lab, "data-value": v});
        r.addEventListener("mousemove", e => showTip(e, [`${g.name ? g.name + " · " : ""}${lab}`,
                                                         `${fmt(v)}${opts.unit || ""}`]));
        r.addEventListener("mouseleave", hideTip);
        f.svg.appendChild(r);
        if (groups.length > 2) return;  // values on hover only: labels would collide
        const vt = svgEl("text", {x: x + bw / 2 - 1, y: y - 3, class: "mf-barval",
                                  "text-anchor": "middle"});
        vt.textContent = fmt(v);
        f.svg.appendChild(vt);
      });
    });
    if (groups.length > 1) {
      let lx = f.m.l + 8;
      groups.forEach((g, j) => {
        f.svg.appendChild(svgEl("rect", {x: lx, y: f.m.t + 4, width: 10, height: 8,
                                         fill: g.color || PALETTE[j % PALETTE.length]}));
        const t = svgEl("text", {x: lx + 14, y: f.m.t + 12, class: "mf-legend"});
        t.textContent = g.name;
        f.svg.appendChild(t);
        lx += 24 + 6.5 * g.name.length;
      });
    }
    return f.svg;
  }

  window.MFChart = {line, bars, fmt, PALETTE};
})();
