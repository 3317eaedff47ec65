"""Does the simulator predict the live fleet? A throughput table and start-up costs measured
apart from the live run, then a 6-job arrival pattern the table never saw, run live (a local
Ray head on 127.0.0.1, 3 emulated pools, policy goodput) and predicted by the fleet
simulator (`mixfleet simulate`'s engine). Average JCT live / predicted, target 0.8-1.25.

The model (docs/fleet-live.md, "Benchmarks"): a fleet of real chips, each computing on its
own, emulated on one small host. So that the host's CPU is not what the figures measure:

- **Chips paced by themselves**: every job runs with `emulate.sample_s` (`--sample-s`), a
  fixed chip time per sample, so a step takes the chip's time whatever the host does; the
  host's real work (5-7 ms for digits-cnn's 64 samples) is under 1% of a chip's step and 8
  ranks at once use a fraction of 2 cores. The benchmark prints the share it measured.
- **Start-ups spaced as on separate hosts**: a job's start-up (importing torch, building
  the model, the first steps) is the one part that needs the host's CPU for seconds; on a
  real fleet each runs on its own node's CPU. Arrivals are seeded exponential gaps (mean
  `--gap` s) *on top of* a minimum gap (`--min-gap`, default the longest start-up the
  prediction assumes), so no two jobs start up at once on arrival; the jobs run long
  enough that they still overlap, and queue when no pool has room, while stepping.

1. **Table, measured apart**: each (job size, pool) pair runs once solo, as the fleet would
   run it (the scheduler's own command and environment for an attempt on that pool, without
   Ray, nothing else of the benchmark running). From each solo run: the per-device samples/s
   of its steady steps (from the step records' wall times) and its start-up cost in seconds
   (wall time minus its steps at that rate).
2. **Live**: the fleet comes up, then the six jobs are submitted at the gaps above
   (`--arrivals burst` submits them all at once: start-ups contend, the model's known
   miss); JCT = submit to done.
3. **Predicted**: the simulator on the jobs' actual submit times, the solo table as speeds,
   each job's work its samples and its start-up (`Job.startup_s`) its size's solo start-up
   cost (the mean over pools). Failures and throttling are off (no fault is injected).

Emulated pools only (labelled so); predicted vs live per job, the averages, ratio on the
last line.

    python benchmarks/fleet_sim_vs_live.py [--steps 60] [--sample-s 0.016] [--gap 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICES = (1, 2, 1, 2, 1, 1)
SKIP = 3  # first steps left out of a rate: allocations, the first collective


def step_records(run_dir: Path) -> list[dict]:
    """The step records of a run's ``metrics.jsonl`` (the newest of each step)."""
    recs: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if r.get("kind") is None and "step" in r and "t" in r:
            recs[int(r["step"])] = r
    return [recs[s] for s in sorted(recs)]


def steady(run_dir: Path, batch: int, devices: int) -> float:
    """Per-device samples/s of a run's steps after the first ``SKIP``, from the step
    records' wall times."""
    recs = [(int(r["step"]), float(r["t"])) for r in step_records(run_dir)]
    recs = [x for x in recs if x[0] > SKIP] or recs
    (s0, t0), (s1, t1) = recs[0], recs[-1]
    if s1 <= s0 or t1 <= t0:
        raise SystemExit(f"too few steps in {run_dir} to measure a rate; use more "
                         f"--solo-steps")
    return (s1 - s0) * batch / (t1 - t0) / devices


def host_share(run_dirs: Sequence[Path]) -> tuple[float, float]:
    """Over the emulated steps of ``run_dirs``: the median share of the chip's step the
    host's real work took (``cpu_s / budget_s``), and the share of steps stretched past
    their chip's time by more than 10% (``step_s > 1.1 budget_s``: the host fell behind)."""
    cpu, late = [], []
    for d in run_dirs:
        for r in step_records(d):
            b = r.get("budget_s")
            if isinstance(b, (int, float)) and b > 0 and "cpu_s" in r and "step_s" in r:
                cpu.append(float(r["cpu_s"]) / b)
                late.append(float(r["step_s"]) > 1.1 * b)
    if not cpu:
        return float("nan"), float("nan")
    return statistics.median(cpu), sum(late) / len(late)


def arrivals(n: int, gap: float, min_gap: float, seed: int) -> list[float]:
    """Submit offsets of ``n`` jobs: the first at 0, then gaps of ``min_gap`` plus a seeded
    exponential of mean ``gap`` (0: exactly ``min_gap``)."""
    rng = random.Random(seed)
    out = [0.0]
    for _ in range(1, n):
        out.append(out[-1] + min_gap + (rng.expovariate(1.0 / gap) if gap > 0 else 0.0))
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60, help="job i runs steps x (1 + i %% 3)")
    ap.add_argument("--solo-steps", type=int, default=20, help="steps of each solo run")
    ap.add_argument("--sample-s", type=float, default=0.016,
                    help="the emulated chips' time per sample (emulate.sample_s), s")
    ap.add_argument("--arrivals", default="poisson", choices=["poisson", "burst"])
    ap.add_argument("--gap", type=float, default=2.0,
                    help="mean of the exponential part of each gap between arrivals, s")
    ap.add_argument("--min-gap", type=float, default=None,
                    help="least gap between arrivals, s (default: the longest start-up "
                    "the prediction assumes, a job size's mean over pools)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the arrival gaps")
    ap.add_argument("--policy", default="goodput")
    args = ap.parse_args(argv)
    for name, ok, fix in (("--steps", args.steps >= 1, "e.g. --steps 40"),
                          ("--solo-steps", args.solo_steps >= SKIP + 3, f"at least {SKIP + 3}"),
                          ("--sample-s", args.sample_s > 0, "e.g. --sample-s 0.016"),
                          ("--gap", args.gap >= 0, "0 or more seconds"),
                          ("--min-gap", args.min_gap is None or args.min_gap >= 0,
                           "0 or more seconds, or leave it out")):
        if not ok:
            ap.error(f"{name} = {getattr(args, name[2:].replace('-', '_'))} is out of "
                     f"range; use {fix}")
    return args


def main() -> None:
    args = parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from mixfleet.fleet.model import Job, load_fleet
    from mixfleet.fleet.policies import make_policy
    from mixfleet.live.control import down, up
    from mixfleet.live.scheduler import build_bundles, run_dir
    from mixfleet.live.spec import load_fleet_spec, load_job
    from mixfleet.live.store import Store
    from mixfleet.sim.engine import SimConfig, simulate

    fleet_toml = ROOT / "examples" / "fleet-live.toml"
    fleet = load_fleet_spec(fleet_toml, emulated=True)
    pools = [p.id for p in fleet.pools]
    with tempfile.TemporaryDirectory(prefix="mixfleet-bench-") as tmp:
        t = Path(tmp)

        def job_file(name: str, steps: int, seed: int, n: int, pool: str = "") -> Path:
            sets = [f"train.steps={steps}", f"train.seed={seed}", "train.log_every=50",
                    "launch.max_restarts=1", f"emulate.sample_s={args.sample_s}"]
            f = t / f"{name}.toml"
            f.write_text(f'[job]\nname = "{name}"\nconfig = '
                         f'"{ROOT / "examples" / "digits-cnn.toml"}"\n'
                         f"set = {json.dumps(sets)}\ndevices = {n}\n"
                         + (f'pool = "{pool}"\n' if pool else ""))
            return f

        # 1. the table: each (size, pool) solo, the command a fleet attempt runs
        rate: dict[tuple[int, str], float] = {}
        fixed: dict[tuple[int, str], float] = {}
        solo_dirs = []
        for n in sorted(set(DEVICES)):
            for p in fleet.pools:
                spec = load_job(job_file(f"solo-x{n}-{p.id}", args.solo_steps, 100 + n, n,
                                         p.id), fleet)
                cfg = t / f"solo-x{n}-{p.id}.config.toml"
                cfg.write_text(spec.config_toml)
                rd = t / f"solo-x{n}-{p.id}"
                (b,) = build_bundles(spec, p, [("local", d) for d in range(n)], cfg, rd, 0)
                env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
                t0 = time.time()
                subprocess.run([sys.executable, "-P", *b.argv], check=True,
                               capture_output=True, env={**env, **b.env})
                wall = time.time() - t0
                r = rate[n, p.id] = steady(rd, spec.global_batch, n)
                fixed[n, p.id] = max(0.0, wall - spec.steps * spec.global_batch / (r * n))
                solo_dirs.append(rd)
                print(f"solo x{n} on {p.id} ({p.chip}, emulated): {wall:.1f} s for "
                      f"{spec.steps} steps; steady {r:.1f} samples/s/device, start-up "
                      f"{fixed[n, p.id]:.1f} s", flush=True)
        speeds = {f"digits-x{n}": tuple(rate[n, p] for p in pools) for n in set(DEVICES)}
        startup = {n: statistics.fmean(fixed[n, p] for p in pools) for n in set(DEVICES)}
        min_gap = max(startup.values()) if args.min_gap is None else args.min_gap
        solo_cpu, solo_late = host_share(solo_dirs)

        # 2. live, on an arrival pattern the table never saw
        offsets = (arrivals(len(DEVICES), args.gap, min_gap, args.seed)
                   if args.arrivals == "poisson" else [0.0] * len(DEVICES))
        specs = [load_job(job_file(f"j{i}", args.steps * (1 + i % 3), i, n), fleet)
                 for i, n in enumerate(DEVICES)]
        d = t / "fleet"
        up(fleet, d, policy=args.policy, num_cpus=1)
        try:
            store = Store(d)
            ids: list[str] = []
            start = time.monotonic()
            for off, s in zip(offsets, specs, strict=True):
                time.sleep(max(0.0, start + off - time.monotonic()))
                ids.append(store.submit(s))
            while any(getattr(store.job(j), "state", None) in ("queued", "running")
                      for j in ids):
                time.sleep(0.5)
            jobs = [store.job(j) for j in ids]
            ran = {j: sorted({a.pool for a in store.attempts(j)}) for j in ids}
        finally:
            down(d)
        live_cpu, live_late = host_share([run_dir(d, j) for j in ids])
    if any(j is None or j.state != "done" for j in jobs):
        raise SystemExit(f"not every job finished: {[j and j.state for j in jobs]}")
    done = [j for j in jobs if j is not None and j.finished is not None]
    live = {j.id: (j.finished or 0.0) - j.submitted for j in done}
    t0 = min(j.submitted for j in done)

    # 3. predicted: the simulator on the same arrivals, the solo table as speeds, the solo
    # start-up cost paid at every start
    sim_jobs = [Job(id=j.id, workload=f"digits-x{j.devices}", arrival_s=j.submitted - t0,
                    devices=j.devices, work=float(j.spec.steps * j.spec.global_batch),
                    mem_gib=1.0, startup_s=startup[j.devices]) for j in done]
    res = simulate(load_fleet(fleet_toml), sim_jobs, make_policy(args.policy), speeds,
                   SimConfig(failures=False, throttles=False))
    pred = {r.id: (r.end_s - r.arrival_s, r.start_s - r.arrival_s,
                   [res.pool_ids[i] for i in r.pools]) for r in res.jobs}
    for j in done:
        p_jct, p_wait, p_pools = pred.get(j.id, (float("nan"), float("nan"), []))
        wait = (j.started or j.submitted) - j.submitted
        print(f"{j.id} ({j.devices} device(s), {j.spec.steps} steps, arrives "
              f"{j.submitted - t0:.1f} s): live {live[j.id]:.1f} s (waited {wait:.1f} s) on "
              f"{','.join(ran[j.id])}, predicted {p_jct:.1f} s (waits {p_wait:.1f} s) on "
              f"{','.join(p_pools)}")
    live_avg = statistics.fmean(live.values())
    sim_avg = res.metrics["jct_avg_s"]
    gaps = (f"min gap {min_gap:.1f} s + exponential of mean {args.gap} s, seed {args.seed}"
            if args.arrivals == "poisson" else "all at once")
    print(f"arrivals {args.arrivals} ({gaps}); table and start-ups "
          f"({', '.join(f'x{n} {startup[n]:.1f} s' for n in sorted(startup))}) from solo runs "
          f"of {args.solo_steps} steps; chips paced at {args.sample_s} s/sample (emulated "
          f"pools), policy {args.policy}")
    print(f"host work per chip step (emulated): median {solo_cpu:.1%} solo, {live_cpu:.1%} "
          f"live; steps the host stretched past the chip's time by >10%: {solo_late:.1%} "
          f"solo, {live_late:.1%} live")
    print(f"fleet_sim_vs_live: live {live_avg:.1f} s / predicted {sim_avg:.1f} s (average JCT "
          f"of {len(done)} jobs, emulated) = {live_avg / sim_avg:.3f} (target 0.8-1.25)")


if __name__ == "__main__":
    main()
