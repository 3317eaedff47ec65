"""Does the simulator predict the live fleet? A throughput table measured apart from the
live run, then a 6-job arrival pattern the table never saw, run live (a local Ray head on
127.0.0.1, 3 emulated pools, policy goodput) and predicted by the fleet simulator
(`mixfleet simulate`'s engine). Average JCT live / predicted, target within 0.8-1.25.

1. **Table, measured apart**: each (job size, pool) pair runs once solo, as the fleet would
   run it (the scheduler's own command and environment for an attempt on that pool, without
   Ray, nothing else of the benchmark running). From each solo run: the per-device samples/s of its
   steady steps (after the calibration steps, from the step records' wall times) and its
   fixed cost (start-up and exit: wall time minus the steady steps' time).
2. **Live**: the fleet comes up, then the six jobs are submitted at seeded exponential gaps
   (mean `--gap` s; `--arrivals burst` submits them all at once); JCT = submit to done.
3. **Predicted**: the simulator on the jobs' actual submit times, the solo table as speeds
   and each job's work = its samples + its size's fixed cost at the solo rate (the fixed
   cost does not depend on the pool: the mean over pools). Failures and throttling are off
   (no fault is injected in the jobs).

Emulated pools only (labelled so); predicted vs live per job, the averages, ratio on the
last line.

    python benchmarks/fleet_sim_vs_live.py [--steps 60] [--gap 4] [--seed 0]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICES = (1, 2, 1, 2, 1, 1)
CALIBRATION = 5  # the emulated chip's calibration steps (EmulationConfig default)


def steady(run_dir: Path, batch: int, devices: int) -> tuple[float, float, int]:
    """(per-device samples/s, seconds, steps) of a run's steps after its calibration, from
    the step records' wall times in ``metrics.jsonl``."""
    recs = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if r.get("kind") is None and "step" in r and "t" in r:
            recs.append((int(r["step"]), float(r["t"])))
    recs = sorted(dict(recs).items())
    recs = [x for x in recs if x[0] >= 2 * CALIBRATION] or recs
    (s0, t0), (s1, t1) = recs[0], recs[-1]
    if s1 <= s0 or t1 <= t0:
        raise SystemExit(f"too few steps in {run_dir} to measure a rate; use more --steps")
    return (s1 - s0) * batch / (t1 - t0) / devices, t1 - t0, s1 - s0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=60, help="job i runs steps x (1 + i %% 3)")
    ap.add_argument("--solo-steps", type=int, default=0,
                    help="steps of each solo run (0: 2 x --steps)")
    ap.add_argument("--arrivals", default="poisson", choices=["poisson", "burst"])
    ap.add_argument("--gap", type=float, default=4.0, help="mean gap between arrivals, s")
    ap.add_argument("--seed", type=int, default=0, help="seed of the arrival gaps")
    ap.add_argument("--policy", default="goodput")
    args = ap.parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from mixfleet.fleet.model import Job, load_fleet
    from mixfleet.fleet.policies import make_policy
    from mixfleet.live.control import down, up
    from mixfleet.live.scheduler import build_bundles
    from mixfleet.live.spec import load_fleet_spec, load_job
    from mixfleet.live.store import Store
    from mixfleet.sim.engine import SimConfig, simulate

    fleet_toml = ROOT / "examples" / "fleet-live.toml"
    fleet = load_fleet_spec(fleet_toml, emulated=True)
    pools = [p.id for p in fleet.pools]
    solo_steps = args.solo_steps or 2 * args.steps
    with tempfile.TemporaryDirectory(prefix="mixfleet-bench-") as tmp:
        t = Path(tmp)

        def job_file(name: str, steps: int, seed: int, n: int, pool: str = "") -> Path:
            sets = [f"train.steps={steps}", f"train.seed={seed}", "train.log_every=50",
                    "launch.max_restarts=1"]
            f = t / f"{name}.toml"
            f.write_text(f'[job]\nname = "{name}"\nconfig = '
                         f'"{ROOT / "examples" / "digits-cnn.toml"}"\n'
                         f"set = {json.dumps(sets)}\ndevices = {n}\n"
                         + (f'pool = "{pool}"\n' if pool else ""))
            return f

        # 1. the table: each (size, pool) solo, the command a fleet attempt runs
        rate: dict[tuple[int, str], float] = {}
        fixed: dict[tuple[int, str], float] = {}
        for n in sorted(set(DEVICES)):
            for p in fleet.pools:
                spec = load_job(job_file(f"solo-x{n}-{p.id}", solo_steps, 100 + n, n, p.id),
                                fleet)
                cfg = t / f"solo-x{n}-{p.id}.config.toml"
                cfg.write_text(spec.config_toml)
                rd = t / f"solo-x{n}-{p.id}"
                (b,) = build_bundles(spec, p, [("local", d) for d in range(n)], cfg, rd, 0)
                env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
                t0 = time.time()
                subprocess.run([sys.executable, "-P", *b.argv], check=True,
                               capture_output=True, env={**env, **b.env})
                wall = time.time() - t0
                r, s, _ = steady(rd, spec.global_batch, n)
                rate[n, p.id] = r
                fixed[n, p.id] = max(0.0, wall - spec.steps * spec.global_batch / (r * n))
                print(f"solo x{n} on {p.id} ({p.chip}, emulated): {wall:.1f} s for "
                      f"{spec.steps} steps; steady {r:.1f} samples/s/device, fixed "
                      f"{fixed[n, p.id]:.1f} s", flush=True)
        speeds = {f"digits-x{n}": tuple(rate[n, p] for p in pools) for n in set(DEVICES)}
        fixed_n = {n: statistics.fmean(fixed[n, p] for p in pools) for n in set(DEVICES)}

        # 2. live, on an arrival pattern the table never saw
        rng = random.Random(args.seed)
        offsets = [0.0] * len(DEVICES)
        if args.arrivals == "poisson":
            for i in range(1, len(DEVICES)):
                offsets[i] = offsets[i - 1] + rng.expovariate(1.0 / args.gap)
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
    if any(j is None or j.state != "done" for j in jobs):
        raise SystemExit(f"not every job finished: {[j and j.state for j in jobs]}")
    done = [j for j in jobs if j is not None and j.finished is not None]
    live = {j.id: (j.finished or 0.0) - j.submitted for j in done}
    t0 = min(j.submitted for j in done)

    # 3. predicted: the simulator on the same arrivals, the solo table as speeds
    def work(n: int, samples: int) -> float:
        return samples + fixed_n[n] * statistics.fmean(speeds[f"digits-x{n}"]) * n

    sim_jobs = [Job(id=j.id, workload=f"digits-x{j.devices}", arrival_s=j.submitted - t0,
                    devices=j.devices, work=work(j.devices, j.spec.steps * j.spec.global_batch),
                    mem_gib=1.0) for j in done]
    res = simulate(load_fleet(fleet_toml), sim_jobs, make_policy(args.policy), speeds,
                   SimConfig(failures=False, throttles=False))
    pred = {r.id: (r.end_s - r.arrival_s, [res.pool_ids[i] for i in r.pools])
            for r in res.jobs}
    for j in done:
        p_jct, p_pools = pred.get(j.id, (float("nan"), []))
        print(f"{j.id} ({j.devices} device(s), {j.spec.steps} steps, arrives "
              f"{j.submitted - t0:.1f} s): live {live[j.id]:.1f} s on "
              f"{','.join(ran[j.id])}, predicted {p_jct:.1f} s on {','.join(p_pools)}")
    live_avg = statistics.fmean(live.values())
    sim_avg = res.metrics["jct_avg_s"]
    print(f"arrivals {args.arrivals} (mean gap {args.gap} s, seed {args.seed}); table from "
          f"solo runs of {solo_steps} steps (emulated pools), policy {args.policy}")
    print(f"fleet_sim_vs_live: live {live_avg:.1f} s / predicted {sim_avg:.1f} s (average JCT "
          f"of {len(done)} jobs, emulated) = {live_avg / sim_avg:.3f} (target 0.8-1.25)")


if __name__ == "__main__":
    main()
