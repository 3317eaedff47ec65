// The dashboard's pages. Everything is read from the server's JSON endpoints (same
// origin); the DOM is built with textContent only (names in run files are not HTML).
"use strict";
(function () {
  const main = document.getElementById("main");
  let info = {refresh_s: 2};
  let timer = null;
  let gen = 0;  // bumps on every navigation; a stale poll stops itself
  const EVENT_COLORS = {
    fault_injected: "#dc2626", hang_detected: "#9333ea", run_start: "#16a34a",
    thermal_warning: "#f59e0b", thermal_critical: "#7f1d1d", thermal_resumed: "#0891b2",
    drain: "#111827", rollback: "#be185d", step_skipped: "#92400e", straggler: "#64748b",
    shares_changed: "#2563eb", checkpoint_failed: "#db2777", relaunch: "#15803d",
    launch_failed: "#b91c1c", peer_lost: "#ef4444", device_fault: "#b91c1c",
    finish: "#334155"};

  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "class") e.className = attrs[k];
      else if (k === "onclick" || k === "onchange") e.addEventListener(k.slice(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
    for (const c of kids.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(typeof c === "string" || typeof c === "number" ?
                    document.createTextNode(String(c)) : c);
    }
    return e;
  }
  const fmt = v => MFChart.fmt(v);
  const put = (el, ...kids) => el.replaceChildren(...kids.flat(Infinity).filter(
    k => k !== null && k !== undefined && k !== false));
  const badge = (text, kind) => h("span", {class: "badge b-" + (kind || text)}, text);

  async function get(url) {
    const r = await fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}});
    const body = await r.json().catch(() => ({error: `bad answer from ${url} (${r.status})`}));
    if (!r.ok && !body.error) body.error = `${url}: HTTP ${r.status}`;
    return body;
  }

  function setPage(name) {
    for (const a of document.querySelectorAll("header nav a")) {
      a.classList.toggle("active", a.dataset.page === name);
    }
  }

  function problems(list) {
    return (list || []).map(p => h("div", {class: "problem"}, p));
  }

  function deviceBadges(devs) {
    return devs.map(d => h("span", {class: "dev"}, `r${d.rank} ${d.device}`,
                           d.emulated ? badge("emulated") : null, " "));
  }

  // ---------------------------------------------------------------- Runs
  async function pageRuns(my) {
    setPage("runs");
    const d = await get("/api/runs");
    if (my !== gen) return;
    const rows = (d.runs || []).map(r => h("tr", {"data-run": r.name},
      h("td", {}, h("a", {href: `#/run/${r.id}`}, r.name), h("div", {class: "muted"}, r.path)),
      h("td", {}, r.workload || "?"),
      h("td", {class: "devices"}, deviceBadges(r.devices)),
      h("td", {}, badge(r.state), r.read_fraction < 1 ?
        h("div", {class: "muted"}, `read ${(100 * r.read_fraction).toFixed(0)}%`) : null),
      h("td", {class: "num"}, r.steps ?? "–", r.target_steps ? ` / ${r.target_steps}` : ""),
      h("td", {class: "num"}, r.ettr === null || r.ettr === undefined ? "–" : r.ettr.toFixed(3)),
      h("td", {class: "num"}, r.restarts ?? "–"),
      h("td", {class: "num"}, r.steps_lost ?? "–"),
      h("td", {class: "num"}, r.final_metric ? `${r.final_metric.name} ${fmt(r.final_metric.value)}` : "–"),
      h("td", {}, problems(r.problems))));
    put(main, 
      h("h1", {}, "Runs"),
      ...problems(d.notes),
      h("div", {class: "card"}, rows.length ? h("table", {id: "runs-table"},
        h("thead", {}, h("tr", {}, ["run", "workload", "devices", "state", "steps", "ETTR",
                                   "restarts", "steps lost", "final metric", ""].map(
          (c, i) => h("th", {class: i >= 4 && i <= 7 ? "num" : ""}, c)))),
        h("tbody", {}, rows)) : h("p", {class: "muted"}, "no runs found")));
    timer = setTimeout(() => my === gen && pageRuns(my), info.refresh_s * 1000 * 2);
  }

  // ---------------------------------------------------------------- One run
  function eventDetails(e) {
    const skip = new Set(["t", "x", "event"]);
    const out = [`t = ${e.x.toFixed(2)} s`];
    for (const k in e) {
      if (skip.has(k)) continue;
      let v = e[k];
      if (typeof v === "object") v = JSON.stringify(v);
      out.push(`${k}: ${String(v).slice(0, 160)}`);
    }
    return out;
  }

  function drawRun(d, els) {
    const markers = d.events.filter(e => !(e.event === "run_start" && !e.attempt)).map(e => ({
      x: e.x, label: e.event + (e.kind ? ` (${e.kind})` : "") + (e.rank !== undefined ? ` rank ${e.rank}` : ""),
      color: EVENT_COLORS[e.event] || "#f59e0b", details: eventDetails(e)}));
    const xmax = Math.max(0, ...d.series.loss.x.filter(v => v !== null), ...markers.map(m => m.x));
    MFChart.line(els.loss, {title: `loss (${d.series.loss.records} steps)`, xlabel: "seconds since launch",
      ylabel: "loss", series: [{name: "loss", x: d.series.loss.x, y: d.series.loss.y}],
      markers, xmin: 0, xmax, logy: "auto"});
    MFChart.line(els.sps, {title: "samples/s", xlabel: "seconds since launch", ylabel: "samples/s",
      series: [{name: "samples/s", x: d.series.samples_per_s.x, y: d.series.samples_per_s.y, color: "#16a34a"}],
      markers, xmin: 0, xmax, ymin: 0});
    const th = d.thresholds;
    // one line per rank and device (the server keys them so); thermal events' readings are on them
    const tser = Object.entries(d.temperature).map(([key, s]) => ({
      name: key + (s.emulated ? " (emulated)" : ""), x: s.x, y: s.y}));
    if (tser.length) {
      MFChart.line(els.temp, {title: "device temperature (°C)", xlabel: "seconds since launch",
        ylabel: "°C", series: tser, markers, xmin: 0, xmax,
        hlines: [{y: th.warn_c, label: "warning", color: "#f59e0b"},
                 {y: th.critical_c, label: "critical", color: "#dc2626"}]});
      els.tempnote.textContent = `warning/critical lines from the ${th.source}; lines break where the run restarted`;
    } else {
      put(els.temp, h("p", {class: "muted"}, "no telemetry in metrics.jsonl (telemetry.hz = 0, or no reader)"));
    }
    const ft = d.report.failure_time_s;
    const names = {startup: "start-up", warmup: "warm-up (compile)", restart_downtime: "restart",
                   hang_detection: "hang detection", cooling: "cooling", redone_steps: "redone steps",
                   other: "other / unattributed"};
    const short = {warmup: "warm-up", hang_detection: "hang", redone_steps: "redone", other: "other"};
    MFChart.bars(els.lost, {title: "time lost by cause (s)", xlabel: "cause",
      labels: Object.keys(ft).map(k => short[k] || names[k] || k),
      groups: [{name: "seconds", values: Object.values(ft), color: "#f97316"}], unit: " s"});
    const lost = d.report.wall_s - d.report.productive_s;
    put(els.losttable, h("table", {id: "failure-time"}, h("tbody", {},
      Object.entries(ft).map(([k, v]) => h("tr", {"data-cause": k}, h("td", {}, names[k] || k),
                                            h("td", {class: "num"}, v.toFixed(3) + " s"))),
      h("tr", {class: "total"}, h("td", {}, "not in productive steps (wall − productive)"),
        h("td", {class: "num"}, lost.toFixed(3) + " s")))));
    if (d.stages) {  // a pipeline: its stages instead of shares
      const st = d.stages;
      const ml = st.measured_label ? ` [${st.measured_label}]` : "";
      const mb = typeof st.measured_bubble === "number" ? `, ${(100 * st.measured_bubble).toFixed(1)}% measured${ml}` : "";
      const per = (s) => s.predicted_s !== undefined ? `${s.predicted_s} s` :
        s.predicted_relative_time !== undefined ? `${s.predicted_relative_time} (relative)` : "—";
      put(els.shares, h("h3", {}, `pipeline stages (${st.schedule}, ${st.microbatches} micro-batches x ${st.lanes} lane(s), bubble ${(100 * st.bubble).toFixed(1)}% predicted${mb})`),
        h("table", {id: "stages-table"},
          h("thead", {}, h("tr", {}, h("th", {}, "stage"), h("th", {}, "chip"), h("th", {class: "num"}, "ranks"),
            h("th", {class: "num"}, "blocks"), h("th", {class: "num"}, "predicted per micro-batch"),
            h("th", {class: "num", "data-col": "measured"}, `measured per micro-batch${ml}`),
            h("th", {class: "num"}, "predicted memory"))),
          h("tbody", {}, st.stages.map((s, i) => h("tr", {"data-stage": String(i)},
            h("td", {}, String(i)), h("td", {}, s.chip), h("td", {class: "num"}, String(s.ranks)),
            h("td", {class: "num"}, String(s.blocks)),
            h("td", {class: "num"}, per(s)),
            h("td", {class: "num", "data-col": "measured"}, typeof s.measured_s === "number" ? `${s.measured_s} s` : "—"),
            h("td", {class: "num"}, s.predicted_gib !== undefined ? `${s.predicted_gib} GiB` : "—"))))),
        h("p", {class: "muted"}, `blocks: ${st.basis}` + (st.measured_steps !== undefined ?
          `; measured: median of ${st.measured_steps} step(s) up to step ${st.measured_step}${ml}` :
          "; measured: none yet (recorded at each checkpoint interval)")));
    } else if (d.shares.length) {
      const n = Math.max(...d.shares.map(s => s.shares.length));
      const ser = [];
      for (let r = 0; r < n; r++) {
        const dev = (d.devices[r] || {}).device || "";
        ser.push({name: `rank ${r} ${dev}`, x: d.shares.map(s => s.x),
                  y: d.shares.map(s => s.shares[r] ?? null), step: true});
      }
      MFChart.line(els.shares, {title: "shares of the global batch per rank", xlabel: "seconds since launch",
        ylabel: "samples", series: ser, ymin: 0, xmin: 0, xmax});
    } else {
      put(els.shares, h("p", {class: "muted"}, "equal shares throughout (no [shares] section, no share changes)"));
    }
    const r = d.report;
    put(els.kpis, ...[
      ["state", badge(d.state.state)], ["ETTR", r.ettr.toFixed(3)], ["restarts", r.restarts],
      ["steps lost", r.steps_lost], ["faults injected", r.faults_injected],
      ["checkpoints", r.checkpoints_committed], ["wall", fmt(r.wall_s) + " s"],
      ["read", d.complete ? "all" : `${(100 * d.read_fraction).toFixed(0)}% (preview of the rest)`]
    ].map(([k, v]) => h("div", {class: "kpi", "data-kpi": k}, h("div", {class: "k"}, k), h("div", {class: "v"}, v))));
    put(els.devices, h("b", {}, "devices: "), ...deviceBadges(d.devices),
      d.emulated ? h("span", {class: "muted"}, " — emulated chips: paced CPU computation, not hardware measurements") : null);
    put(els.problems, ...problems(d.problems), d.events_left_out ?
      h("div", {class: "problem"}, `${d.events_left_out} older events are not marked (the newest 2000 are)`) : null);
    const kinds = [...new Set(d.events.map(e => e.event))];
    put(els.evlegend, ...kinds.map(k => {
      const sw = h("span", {class: "swatch"});
      sw.style.background = EVENT_COLORS[k] || "#f59e0b";
      return h("span", {}, sw, k);
    }));
    put(els.evtable, h("table", {id: "events-table"},
      h("thead", {}, h("tr", {}, h("th", {class: "num"}, "t (s)"), h("th", {}, "event"), h("th", {}, "details"))),
      h("tbody", {}, d.events.slice(-200).map(e => h("tr", {}, h("td", {class: "num"}, e.x.toFixed(2)),
        h("td", {}, e.event), h("td", {class: "muted"}, eventDetails(e).slice(1).join(" · ")))))));
  }

  async function pageRun(my, rid) {
    setPage("runs");
    const els = {};
    for (const k of ["kpis", "devices", "problems", "loss", "sps", "temp", "tempnote", "lost",
                     "losttable", "shares", "evlegend", "evtable"]) {
      els[k] = h("div", {id: "run-" + k, class: k === "kpis" ? "kpis" : ""});
    }
    const title = h("h1", {}, "run");
    put(main, title, els.problems, els.kpis, h("div", {class: "card"}, els.devices),
      h("div", {class: "grid2"}, h("div", {class: "card"}, els.loss), h("div", {class: "card"}, els.sps)),
      h("div", {class: "card"}, els.temp, h("div", {class: "muted"}, els.tempnote),
        h("div", {class: "legend-events"}, els.evlegend)),
      h("div", {class: "grid2"}, h("div", {class: "card"}, els.lost, els.losttable),
        h("div", {class: "card"}, els.shares)),
      h("h2", {}, "events"), h("div", {class: "card"}, els.evtable));
    let version = -1;
    const points = Math.max(200, Math.min(2000, Math.floor(main.clientWidth || 1000)));
    async function tick() {
      if (my !== gen) return;
      let delay = info.refresh_s * 1000;
      try {
        const d = await get(`/api/run/${rid}?points=${points}&v=${version}`);
        if (my !== gen) return;
        if (d.error) {
          put(main, h("h1", {}, "run"), h("div", {class: "problem"}, d.error));
          return;
        }
        if (!d.unchanged) {
          title.textContent = `${d.name}`;
          title.appendChild(h("span", {class: "muted"}, "  " + d.path));
          drawRun(d, els);
          version = d.version;
          main.dataset.version = d.version;
          main.dataset.records = d.series.loss.records;
          if (!d.complete) delay = 50;  // still reading a long backlog
        }
      } catch (err) {
        put(els.problems, h("div", {class: "problem"}, `update failed: ${err}`));
      }
      timer = setTimeout(tick, delay);
    }
    await tick();
  }

  // ---------------------------------------------------------------- Chips
  async function pageChips(my) {
    setPage("chips");
    const d = await get("/api/chips");
    if (my !== gen) return;
    const dev = d.devices;
    const devCard = h("div", {class: "card", id: "devices"}, h("h2", {}, "this machine (mixfleet devices)"),
      dev.ok ? [h("p", {}, `PyTorch accelerator: ${dev.accelerator || "none (CPU only)"}`),
        dev.devices.length ? h("table", {}, h("thead", {}, h("tr", {}, ["torch", "vendor", "chip", "name", "memory GiB", "driver", "tool"].map(c => h("th", {}, c)))),
          h("tbody", {}, dev.devices.map(x => h("tr", {}, h("td", {}, x.torch_device || "-"), h("td", {}, x.vendor),
            h("td", {}, x.chip_id || "(not in catalog)"), h("td", {}, x.name),
            h("td", {class: "num"}, x.memory_bytes ? (x.memory_bytes / 2 ** 30).toFixed(1) : "?"),
            h("td", {}, x.driver || "?"), h("td", {}, x.tool))))) : h("p", {class: "muted"}, "no accelerator devices found"),
        h("p", {class: "muted"}, "vendor tools: " + dev.tools.map(t => `${t.tool} ${t.state}`).join(", "))]
        : h("div", {class: "problem"}, dev.error));
    const rows = [];
    for (const t of d.tables) for (const r of t.rows) rows.push(Object.assign({table: t.path}, r));
    const tableCard = h("div", {class: "card", id: "throughput"}, h("h2", {}, "throughput tables (mixfleet bench)"),
      ...d.tables.filter(t => t.error).map(t => h("div", {class: "problem"}, `${t.path}: ${t.error}`)),
      rows.length ? h("table", {id: "throughput-table"}, h("thead", {}, h("tr", {},
        ["workload", "chip", "batch", "samples/s", "step p50 s", "MFU", "origin", "host", "date"].map((c, i) => h("th", {class: [2, 3, 4, 5].includes(i) ? "num" : ""}, c)))),
        h("tbody", {}, rows.map(r => h("tr", {"data-chip": r.chip, "data-origin": r.origin},
          h("td", {}, r.workload), h("td", {}, r.chip, r.emulated ? badge("emulated") : null),
          h("td", {class: "num"}, r.batch), h("td", {class: "num"}, fmt(r.samples_per_s)),
          h("td", {class: "num"}, fmt(r.step_p50_s)), h("td", {class: "num"}, r.mfu === null ? "unknown" : (100 * r.mfu).toFixed(1) + "%"),
          h("td", {}, badge(r.origin)), h("td", {}, r.host), h("td", {}, (r.date || "").slice(0, 19))))))
        : h("p", {class: "muted"}, "no throughput table found under the given directories (write one with `mixfleet bench --out DIR`)"));
    const chips = [...new Set(rows.map(r => r.chip).concat(Object.keys(d.catalog.chips || {})))];
    const selA = h("select", {id: "cmp-a"}, chips.map(c => h("option", {value: c}, c)));
    const selB = h("select", {id: "cmp-b"}, chips.map(c => h("option", {value: c}, c)));
    const tableChips = [...new Set(rows.map(r => r.chip))];
    if (tableChips.length >= 2) { selA.value = tableChips[0]; selB.value = tableChips[1]; }
    else if (chips.length >= 2) { selA.value = chips[0]; selB.value = chips[1]; }
    const out = h("div", {id: "compare-out"});
    const cmp = () => put(out, compare(selA.value, selB.value, rows, d.catalog.chips || {}));
    selA.addEventListener("change", cmp);
    selB.addEventListener("change", cmp);
    put(main, h("h1", {}, "Chips"), devCard, tableCard,
      h("div", {class: "card"}, h("h2", {}, "compare two chips"), selA, " vs ", selB, out),
      d.catalog.ok ? null : h("div", {class: "problem"}, d.catalog.error));
    cmp();
  }

  function compare(a, b, rows, catalog) {
    const best = (chip) => {
      const m = {};
      for (const r of rows.filter(r => r.chip === chip)) {
        if (!m[r.workload] || r.samples_per_s > m[r.workload].samples_per_s) m[r.workload] = r;
      }
      return m;
    };
    const A = best(a), B = best(b);
    const wl = [...new Set(Object.keys(A).concat(Object.keys(B)))].sort();
    const cell = r => r ? [fmt(r.samples_per_s), " ", badge(r.origin)] : "–";
    const figs = ["bf16_tflops", "hbm_gib", "hbm_tbps", "link_gbps", "tdp_w"];
    const fig = (c, f) => {
      const x = (catalog[c] || {})[f];
      if (!x) return "–";
      return x.value === null ? "unknown" : [fmt(x.value), " ", h("span", {class: "muted"}, x.confidence)];
    };
    const num = (c, f) => ((catalog[c] || {})[f] || {}).value;
    const ratio = (va, vb) => typeof va === "number" && typeof vb === "number" && va > 0 ?
      (vb / va).toFixed(2) : "–";
    return h("div", {}, h("table", {id: "compare-table"},
      h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, a), h("th", {}, b), h("th", {class: "num"}, `${b} / ${a}`))),
      h("tbody", {},
        wl.map(w => h("tr", {}, h("td", {}, `${w} samples/s (best batch)`), h("td", {}, cell(A[w])), h("td", {}, cell(B[w])),
          h("td", {class: "num"}, A[w] && B[w] ? ratio(A[w].samples_per_s, B[w].samples_per_s) +
            (A[w].emulated !== B[w].emulated ? " (emulated vs measured!)" : "") :
            `– (no ${A[w] ? b : a} row)`))),
        figs.map(f => h("tr", {"data-figure": f}, h("td", {}, `catalog ${f}`), h("td", {}, fig(a, f)),
          h("td", {}, fig(b, f)), h("td", {class: "num"}, ratio(num(a, f), num(b, f)))))
      )),
      h("p", {class: "muted"}, "origin: measured on hardware · emulated (paced CPU run) · estimated (roofline of catalog figures); catalog figures: datasheet / reported / unknown"));
  }

  // ---------------------------------------------------------------- Simulation
  async function pageSim(my, sid) {
    setPage("sim");
    const list = await get("/api/sims");
    if (my !== gen) return;
    const results = list.results || [];
    if (!results.length) {
      put(main, h("h1", {}, "Simulation"), h("div", {class: "problem"},
        "no results.json found under the given directories (write one with `mixfleet simulate --out DIR`)"));
      return;
    }
    sid = sid || results[0].id;
    const d = await get(`/api/sim/${sid}`);
    if (my !== gen) return;
    const pick = h("select", {id: "sim-pick"}, results.map(r => h("option", {value: r.id}, r.path)));
    pick.value = sid;
    pick.addEventListener("change", () => { location.hash = `#/sim/${pick.value}`; });
    if (d.error) {
      put(main, h("h1", {}, "Simulation"), pick, h("div", {class: "problem"}, d.error));
      return;
    }
    const cdfEl = h("div", {id: "sim-cdf"}), utilEl = h("div", {id: "sim-util"});
    const hrs = v => fmt(v / 3600);
    const cols = [["policy", p => p.policy], ["avg JCT h", p => hrs(p.jct_avg_s)], ["p50 h", p => hrs(p.jct_p50_s)],
      ["p99 h", p => hrs(p.jct_p99_s)], ["queue h", p => hrs(p.queue_delay_avg_s)],
      ["makespan d", p => fmt(p.makespan_s / 86400)], ["Nvidia dev-h", p => fmt(p.nvidia_device_hours)],
      ["non-Nvidia work", p => p.non_nvidia_work_share === undefined ? "–" : (100 * p.non_nvidia_work_share).toFixed(1) + "%"],
      ["lost dev-h", p => fmt(p.goodput_lost_device_hours)], ["failures", p => p.failures ?? "–"],
      ["assumed work", p => p.assumed_work_share === undefined ? "–" : (100 * p.assumed_work_share).toFixed(1) + "%"],
      ["unplaceable", p => p.unplaceable]];
    const pools = (d.fleet || {}).pools || [];
    put(main, h("h1", {}, "Simulation"), h("div", {}, pick),
      h("p", {class: "muted"}, `fleet ${(d.fleet || {}).name || "?"} · trace ${d.trace} · seed ${d.seed} · failures ${d.failures ? "on" : "off"} · throttles ${d.throttles ? "on" : "off"}`),
      ...d.assumptions.map(a => h("div", {class: "problem assumption"}, `ASSUMED: pool ${a.pool} (${a.chip}): throughput ${a.origins.join("/") || "assumed"}`,
        a.assumption ? " — " + Object.entries(a.assumption).filter(([, v]) => v !== null)
          .map(([k, v]) => `${k}: ${v}`).join("; ") : "")),
      h("div", {class: "card"}, h("table", {id: "sim-table"}, h("thead", {}, h("tr", {}, cols.map(([c], i) => h("th", {class: i ? "num" : ""}, c)))),
        h("tbody", {}, d.policies.map(p => h("tr", {}, cols.map(([, f], i) => h("td", {class: i ? "num" : ""}, f(p)))))))),
      h("div", {class: "grid2"}, h("div", {class: "card"}, cdfEl), h("div", {class: "card"}, utilEl)),
      h("div", {class: "card"}, h("h2", {}, "pools"), h("table", {}, h("thead", {}, h("tr", {}, ["pool", "chip", "devices", "Nvidia", "throughput origin"].map(c => h("th", {}, c)))),
        h("tbody", {}, pools.map(p => h("tr", {}, h("td", {}, p.id), h("td", {}, p.chip), h("td", {class: "num"}, p.devices),
          h("td", {}, p.nvidia ? "yes" : "no"), h("td", {}, Object.entries(p.throughput_origin || {}).map(([w, o]) => [w + " ", badge(o), " "]))))))),
      d.pngs.length ? h("div", {class: "card"}, h("h2", {}, "plots written by mixfleet simulate"),
        h("div", {class: "grid2"}, d.pngs.map(n => h("div", {}, h("div", {class: "muted"}, n),
          h("img", {class: "plot", src: `/api/sim/${sid}/png/${n}`, alt: n}))))) : null);
    const kinds = new Set(Object.values(d.cdf).map(c => c.kind));
    MFChart.line(cdfEl, {title: "JCT CDF per policy" + (kinds.has("quantiles") ? " (only p50 and p99 are in results.json)" : ""),
      xlabel: "JCT (hours)", ylabel: "fraction of jobs", ymin: 0, ymax: 1, legend: true,
      series: Object.entries(d.cdf).map(([p, c]) => ({name: p, x: c.x, y: c.y,
        dots: c.kind !== "jobs", noline: c.kind === "quantiles"}))});
    const poolIds = pools.map(p => p.id);
    MFChart.bars(utilEl, {title: "utilization per pool", xlabel: "pool", labels: poolIds, ymax: 1,
      groups: Object.entries(d.utilization).map(([p, u]) => ({name: p, values: poolIds.map(id => u[id] ?? null)}))});
  }

  // ---------------------------------------------------------------- Fleet
  async function pageFleet(my) {
    setPage("fleet");
    const d = await get("/api/fleet");
    if (my !== gen) return;
    const parts = [h("h1", {}, "Fleet")];
    if (d.state !== "ok") {
      parts.push(h("div", {class: "card", id: "fleet-none"}, h("p", {}, d.message)));
    } else {
      parts.push(h("p", {class: "muted"}, d.path), d.message ? h("div", {class: "problem"}, d.message) : null);
      for (const [name, t] of Object.entries(d.tables)) {
        parts.push(h("div", {class: "card"}, h("h2", {}, `${name} (${t.count})`),
          h("table", {"data-table": name}, h("thead", {}, h("tr", {}, t.columns.map(c => h("th", {}, c)))),
            h("tbody", {}, t.rows.map(r => h("tr", {}, r.map(v => h("td", {}, v === null ? "" : String(v)))))))));
      }
      timer = setTimeout(() => my === gen && pageFleet(my), info.refresh_s * 1000);
    }
    put(main, ...parts.filter(Boolean));
  }

  async function route() {
    gen++;
    clearTimeout(timer);
    const my = gen;
    const parts = (location.hash || "#/runs").slice(2).split("/");
    try {
      if (parts[0] === "run" && parts[1]) await pageRun(my, parts[1]);
      else if (parts[0] === "chips") await pageChips(my);
      else if (parts[0] === "sim") await pageSim(my, parts[1]);
      else if (parts[0] === "fleet") await pageFleet(my);
      else await pageRuns(my);
    } catch (err) {
      if (my === gen) put(main, h("div", {class: "problem"}, `page failed: ${err}`));
    }
    if (my === gen) document.body.dataset.ready = location.hash || "#/runs";
  }

  (async () => {
    const i = await get("/api/info");
    if (!i.error) info = i;
    document.getElementById("live-dot").textContent = `updates every ${info.refresh_s} s`;
    window.addEventListener("hashchange", route);
    route();
  })();
})();
