"""``mixfleet simulate`` and ``mixfleet plan``: parse arguments, call the library, print."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from mixfleet.errors import ConfigError

__all__ = ["add_parser", "run_simulate", "run_plan"]


def add_parser(sub: Any) -> None:
    from mixfleet.fleet.policies import POLICY_NAMES
    from mixfleet.sim.gavel import GAVEL_PLACEMENTS

    s = sub.add_parser("simulate", help="replay a trace on a fleet under placement policies",
                       description="Replay a trace on a fleet under one or more placement "
                       "policies, with failures and throttling; print a comparison and "
                       "write DIR/results.json and PNG plots.")
    s.add_argument("--fleet", required=True, help="fleet TOML (see examples/fleet-mixed.toml)")
    s.add_argument("--trace", required=True, help="Philly CSV, openb pod list, synthetic:N, "
                   "or gavel:FILE (Gavel's trace format; needs --throughput gavel:FILE)")
    s.add_argument("--policy", action="append", choices=POLICY_NAMES,
                   help="policy to compare (repeatable; default: all)")
    s.add_argument("--seed", type=int, default=0, help="seed of classes and failures")
    s.add_argument("--out", help="directory for results.json and plots")
    s.add_argument("--no-failures", action="store_true", help="no failures, no throttling")
    s.add_argument("--throughput", help="measured throughput table (mixfleet bench), or "
                   "gavel:FILE (Gavel's simulation_throughputs.json)")
    s.add_argument("--gavel-placement", choices=GAVEL_PLACEMENTS,
                   default="consolidated", help="which of Gavel's variants gives the figures: "
                   "consolidated (a job's workers on one server, as Gavel's simulator; "
                   "default) or unconsolidated (its *_unconsolidated worker types: workers "
                   "spread across servers)")
    _reference_from(s)
    s.add_argument("--estimates", choices=("history", "declared", "oracle"), default="history",
                   help="what policies know of job lengths: history (learned from finished "
                   "jobs; default), declared (the jobs' stated limits) or oracle (the truth; "
                   "an upper bound no scheduler has)")
    s.add_argument("--migration-s", type=float, default=60.0,
                   help="stall when a job restarts after a move or preemption (s)")
    s.add_argument("--limit", type=int, help="read only the first N trace rows")
    s.add_argument("--sensitivity", action="store_true",
                   help="rerun the comparison with each reliability figure halved and "
                   "doubled; report whether the ranking of policies changes")
    s.add_argument("--catalog", help="chip catalog TOML (default: the packaged one)")
    s.set_defaults(func=run_simulate)

    p = sub.add_parser("plan", help="place a list of jobs on a fleet",
                       description="Place the jobs of JOBS.toml on a fleet with one policy; "
                       "print the placement and the Nvidia device-hours it replaces.")
    p.add_argument("--fleet", required=True, help="fleet TOML")
    p.add_argument("--jobs", required=True, help="jobs TOML (see examples/jobs.toml)")
    p.add_argument("--policy", default="goodput", choices=POLICY_NAMES)
    p.add_argument("--throughput", help="measured throughput table (mixfleet bench)")
    _reference_from(p)
    p.add_argument("--catalog", help="chip catalog TOML (default: the packaged one)")
    p.set_defaults(func=run_plan)


GAVEL = "gavel:"


def _reference_from(p: Any) -> None:
    from mixfleet.fleet.throughput import REFERENCE_FROM

    p.add_argument("--reference-from", choices=REFERENCE_FROM, default="rows",
                   help="where the reference chip's figure for another chip's row comes "
                   "from: rows (a row of the reference chip; else the row is not used, and "
                   "said so; default) or catalog (its roofline ESTIMATE, a labelled bridge: "
                   "speed origin measured/estimated)")


def _setup(args: argparse.Namespace) -> tuple[Any, Any, dict[str, tuple[float | None, ...]]]:
    from mixfleet.catalog.base import load_catalog
    from mixfleet.catalog.table import read_table
    from mixfleet.fleet.model import load_fleet
    from mixfleet.fleet.speeds import speed_matrix
    from mixfleet.fleet.throughput import ThroughputTable
    from mixfleet.sim.gavel import gavel_speeds, gavel_usage, read_gavel_file, select_placement

    cat = load_catalog(args.catalog)
    fleet = load_fleet(args.fleet, cat)
    tp = args.throughput or ""
    rows = read_table(tp) if tp and not tp.startswith(GAVEL) else []
    table = ThroughputTable.build(cat.values(), rows, assumptions=fleet.assumptions(),
                                  reference=fleet.reference_chip.id,
                                  reference_from=args.reference_from)
    speeds = speed_matrix(fleet, table)
    args.gavel_tputs = args.gavel_usage = None
    if tp.startswith(GAVEL):
        placement = getattr(args, "gavel_placement", "consolidated")
        every = read_gavel_file(tp[len(GAVEL):])
        args.gavel_tputs = select_placement(every, placement)
        args.gavel_usage = {"file": tp[len(GAVEL):], **gavel_usage(every, fleet, placement)}
        speeds.update(gavel_speeds(args.gavel_tputs, fleet))
    return fleet, table, speeds


def _note_rows(console: Any, args: argparse.Namespace, table: Any) -> dict[str, Any]:
    """One line per throughput row not used or bridged, one line on Gavel's worker types;
    returns the same for results.json."""
    for why in table.unused.values():
        console.print(f"[yellow]note:[/] {why}")
    for how in table.bridged.values():
        console.print(f"[yellow]BRIDGED:[/] {how}")
    u = args.gavel_usage
    if u is not None:
        by_why: dict[str, list[str]] = {}
        for wt, why in u["not_used"].items():
            by_why.setdefault(why, []).append(wt)
        nu = "; ".join(f"{', '.join(wts)} ({why})" for why, wts in by_why.items())
        console.print(f"Gavel throughputs from {u['file']}: used {', '.join(u['used'])} "
                      f"({u['placement']})" + (f"; not used: {nu}" if nu else ""))
    return {"reference_from": args.reference_from,
            "not_used": [{"workload": w, "chip": c, "reason": r}
                         for (w, c), r in table.unused.items()],
            "bridged": [{"workload": w, "chip": c, "note": r}
                        for (w, c), r in table.bridged.items()],
            **({"gavel": u} if u is not None else {})}


def _read_jobs(args: argparse.Namespace, fleet: Any) -> tuple[list[Any], Any]:
    from mixfleet.sim.gavel import read_gavel_trace
    from mixfleet.sim.traces import TraceInfo, read_trace

    if not args.trace.startswith(GAVEL):
        return read_trace(args.trace, seed=args.seed, limit=args.limit)
    if args.gavel_tputs is None:
        raise ConfigError(f"--trace {args.trace!r} is a Gavel trace; pass Gavel's throughput "
                          f"file too: --throughput gavel:simulation_throughputs.json")
    path = args.trace[len(GAVEL):]
    jobs = read_gavel_trace(path, args.gavel_tputs, fleet.reference_chip.id, args.limit)
    return jobs, TraceInfo(path=path, format="gavel", rows=len(jobs), skipped=0)


def _note_origins(console: Any, fleet: Any, table: Any, classes: set[str] | None = None
                  ) -> None:
    """One line per pool saying where its speed comes from (ESTIMATED and ASSUMED marked),
    then a one-line legend."""
    from rich.table import Table

    from mixfleet.fleet.speeds import origin_matrix

    om = {w: o for w, o in origin_matrix(fleet, table).items()
          if classes is None or w in classes}
    gavel = classes is not None and any(w not in om for w in classes)
    tab = Table(title="pools and the origin of their speed", title_justify="left")
    for c in ("pool", "chip", "devices", "speed origin"):
        tab.add_column(c, justify="right" if c == "devices" else "left")
    marked = False
    for i, p in enumerate(fleet.pools):
        kinds: list[str] = sorted({k for o in om.values() if (k := o[i]) is not None})
        if gavel:
            kinds.append("Gavel's table")
        label = ", ".join(f"[yellow]{k.upper()}[/]" if _marked(k) else k
                          for k in kinds) or "none (takes no job)"
        marked |= any(_marked(k) for k in kinds)
        tab.add_row(p.id, p.chip.id, str(p.capacity), label)
    console.print(tab)
    if marked:
        bridged = any(o is not None and "/" in o for row in om.values() for o in row)
        console.print("[yellow]ESTIMATED[/] = roofline from the catalog's figures, "
                      "[yellow]ASSUMED[/] = stated in the fleet file"
                      + (", [yellow]X/ESTIMATED[/] = a row over the reference chip's roofline "
                         "(--reference-from catalog)" if bridged else "")
                      + "; none is a measurement of both chips (replace them with `mixfleet "
                      "bench` rows via --throughput)")


def _marked(origin: str | None) -> bool:
    """Whether a speed origin is no measurement of both chips (shown in capitals)."""
    return origin is not None and (origin == "assumed" or origin.endswith("estimated"))


def _note_idle(console: Any, fleet: Any, table: Any, speeds: Any) -> None:
    from mixfleet.fleet.plan import idle_pools

    for i in idle_pools(fleet, speeds):
        pool = fleet.pools[i]
        why = next((m for (_, c), m in table.missing.items() if c == pool.chip.id), "")
        console.print(f"[yellow]note:[/] pool {pool.id!r} ({pool.chip.id}) takes no jobs: "
                      f"{why}; measure it with `mixfleet bench` and pass --throughput, or "
                      f"state an assumption with its source in the fleet file "
                      f"([pool.assumption] relative_speed, relative_to, source)")


def _note_assumed(console: Any, fleet: Any, table: Any) -> list[int]:
    """Say, for each pool whose throughput is assumed, what was assumed and on whose word;
    returns those pools' indices."""
    from mixfleet.fleet.speeds import assumed_pools

    idx = assumed_pools(fleet, table)
    for i in idx:
        pool = fleet.pools[i]
        a = pool.assumption
        what = f"{a.describe()}; source: {a.source}" if a is not None else \
            "relative to an assumed reference chip"
        console.print(f"[yellow]ASSUMED throughput[/] for pool {pool.id!r} ({pool.chip.id}), "
                      f"not measured: {what}")
    return idx


def run_simulate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from mixfleet.fleet.policies import POLICY_NAMES, make_policy
    from mixfleet.sim.engine import SimConfig, simulate
    from mixfleet.sim.plots import plot_jct_cdf, plot_utilization
    from mixfleet.sim.report import comparison_table, results_doc, write_results

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1 (got {args.limit}); e.g. --limit 1000")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out!r} is a file; pass a directory")
    console = Console(width=max(Console().width, 132))
    fleet, table, speeds = _setup(args)
    jobs, info = _read_jobs(args, fleet)
    cfg = SimConfig(seed=args.seed, failures=not args.no_failures,
                    throttles=not args.no_failures, migration_s=args.migration_s,
                    estimates=args.estimates)
    if args.estimates == "declared":
        missing = next((j for j in jobs if j.declared_work is None), None)
        if missing is not None:
            raise ConfigError(f"--estimates declared: job {missing.id!r} of {info.path} "
                              f"states no runtime limit (a limit_s column, or limit_hours "
                              f"in a jobs file); use --estimates history")
    policies = [make_policy(n) for n in (args.policy or POLICY_NAMES)]
    _note_idle(console, fleet, table, speeds)
    _note_origins(console, fleet, table, {j.workload for j in jobs})
    inputs = _note_rows(console, args, table)
    assumed = _note_assumed(console, fleet, table)
    console.print(_estimates_line(args.estimates))
    console.print(f"{len(jobs)} jobs from {info.path} ({info.format}"
                  f"{f', {info.skipped} non-GPU rows skipped' if info.skipped else ''}) on "
                  f"{fleet.name}: {fleet.capacity} devices in {len(fleet.pools)} pools")
    results, walls = [], []
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} jobs"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        for pol in policies:
            task = bar.add_task(f"simulate {pol.name}", total=len(jobs))

            def progress(done: int, total: int, t: float, task: Any = task) -> None:
                bar.update(task, completed=done)

            t0 = time.perf_counter()
            results.append(simulate(fleet, jobs, pol, speeds, cfg, progress))
            walls.append(time.perf_counter() - t0)
    tab = Table(title=f"{fleet.name} x {Path(str(info.path)).name} "
                f"(seed {args.seed}, failures {'on' if cfg.failures else 'off'})")
    header, rows = comparison_table(results, walls, assumed)
    for name in header:
        tab.add_column(name, justify="left" if name == "policy" else "right")
    for row in rows:
        tab.add_row(*row)
    console.print(tab)
    if assumed:
        console.print(f"[yellow]assumed work[/]: share of the work done on pools with ASSUMED "
                      f"throughput ({', '.join(fleet.pools[i].id for i in assumed)}); their "
                      f"speeds are stated in {args.fleet}, not measured")
    if cfg.failures:
        from mixfleet.fleet.reliability import defaults_note

        console.print(f"[yellow]reliability[/]: {defaults_note()}; see --sensitivity and "
                      f"docs/fleet.md")
    if args.sensitivity:
        _sensitivity(console, fleet, jobs, args, speeds, cfg)
    unpl = results[0].unplaceable
    if unpl:
        console.print(f"[yellow]{len(unpl)} job(s) fit nowhere[/] (listed in results.json), "
                      f"e.g. {unpl[0][0]}: {unpl[0][1]}")
    if args.out:
        doc = results_doc(results, fleet, str(info.path), cfg, table) | {"throughput_rows": inputs}
        path = write_results(doc, args.out)
        plot_jct_cdf(results, Path(args.out) / "jct_cdf.png")
        for r in results:
            plot_utilization(r, Path(args.out) / f"utilization_{r.policy}.png")
        console.print(f"wrote {path} and plots in {args.out}")
    return 0


def _sensitivity(console: Any, fleet: Any, jobs: Any, args: argparse.Namespace,
                 speeds: Any, cfg: Any) -> None:
    from rich.table import Table

    from mixfleet.fleet.policies import POLICY_NAMES, make_policy
    from mixfleet.sim.sensitivity import sensitivity

    if not cfg.failures:
        raise ConfigError("--sensitivity varies failure and throttle figures; drop "
                          "--no-failures")
    names = args.policy or POLICY_NAMES
    with console.status("sensitivity reruns") as st:
        variants = sensitivity(fleet, jobs, lambda: [make_policy(n) for n in names], speeds,
                               cfg, done=lambda what: st.update(f"sensitivity: {what}"))
    tab = Table(title="sensitivity: every pool's reliability figure x0.5 and x2")
    for c in ("figure", "factor", "ranking (best first)", "changed"):
        tab.add_column(c)
    for v in variants:
        tab.add_row(v.figure or "(baseline)", f"x{v.factor:g}", " > ".join(v.ranking),
                    "[yellow]CHANGED[/]" if v.changed else "same")
    console.print(tab)
    n = sum(v.changed for v in variants)
    console.print(f"ranking changed in {n} of {len(variants) - 1} variants")


def _estimates_line(name: str) -> str:
    what = {"history": "history estimates (learned online from finished jobs)",
            "declared": "the jobs' declared runtime limits",
            "oracle": "[yellow]ORACLE[/] true lengths (an upper bound; no scheduler has them)"}
    return f"job lengths known to the policies: {what[name]}"


def run_plan(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mixfleet.fleet.model import load_jobs
    from mixfleet.fleet.plan import plan
    from mixfleet.fleet.policies import make_policy
    from mixfleet.fleet.speeds import origin_matrix

    console = Console()
    fleet, table, speeds = _setup(args)
    ref = {e.workload: e.samples_per_s for e in table.entries()
           if e.chip == fleet.reference_chip.id}
    jobs = load_jobs(args.jobs, ref)
    result = plan(fleet, jobs, make_policy(args.policy), speeds, origin_matrix(fleet, table))
    _note_idle(console, fleet, table, speeds)
    _note_origins(console, fleet, table, {j.workload for j in jobs})
    _note_rows(console, args, table)
    _note_assumed(console, fleet, table)
    tab = Table(title=f"plan: {args.policy} on {fleet.name}")
    for c in ("job", "workload", "devices", "status", "pool", "speed", "speed origin",
              "hours", "Nvidia dev-h replaced"):
        tab.add_column(c, justify="left" if c in ("job", "workload", "status", "pool",
                                                  "speed origin") else "right")
    for p in result.placements:
        tab.add_row(p.job.id, p.job.workload, str(p.job.devices), p.status,
                    p.pool or "-", "-" if p.speed is None else f"{p.speed:.2f}",
                    (f"[yellow]{(p.origin or '').upper()}[/]" if _marked(p.origin)
                     else p.origin or "-"),
                    "-" if p.hours is None else f"{p.hours:.1f}",
                    f"{p.nvidia_hours_replaced:,.0f}")
    console.print(tab)
    for p in result.placements:
        if p.status == "unplaceable":
            console.print(f"[yellow]{p.job.id} fits nowhere:[/] {p.reason}")
    assumed_h = sum(p.nvidia_hours_replaced for p in result.placements
                    if p.origin == "assumed")
    console.print(f"Nvidia device-hours replaced: {result.nvidia_hours_replaced:,.0f}"
                  + (f" (of which {assumed_h:,.0f} on pools with ASSUMED throughput, not "
                     f"measured)" if assumed_h else ""))
    return 0
