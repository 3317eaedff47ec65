"""Does the simulator predict the live fleet? The same 6-job scenario run live (a local Ray
head on 127.0.0.1, 3 emulated pools, policy goodput) and simulated by the fleet simulator
(`mixfleet simulate`'s engine) with the jobs' measured throughputs as the table: average
JCT live / simulated, target within 0.8-1.25.

The table is measured from the live run itself: per (job size, pool) the samples per
second per device each attempt achieved from placement to exit (start-up included, as a
job's wall time includes it). Failures and throttling are off in the simulation (no fault
is injected in the jobs). Ratio on the last line.

    python benchmarks/fleet_sim_vs_live.py [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICES = (1, 2, 1, 2, 1, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--policy", default="goodput")
    args = ap.parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from mixfleet.fleet.model import Job, load_fleet
    from mixfleet.fleet.policies import make_policy
    from mixfleet.live.control import down, up
    from mixfleet.live.spec import load_fleet_spec, load_job
    from mixfleet.live.store import Store
    from mixfleet.sim.engine import SimConfig, simulate

    fleet_toml = ROOT / "examples" / "fleet-live.toml"
    fleet = load_fleet_spec(fleet_toml, emulated=True)
    with tempfile.TemporaryDirectory(prefix="mixfleet-bench-") as tmp:
        t = Path(tmp)
        specs = []
        for i, n in enumerate(DEVICES):
            steps = args.steps * (1 + i % 3)
            sets = [f"train.steps={steps}", f"train.seed={i}", "train.log_every=50",
                    "launch.max_restarts=1"]
            job = t / f"job{i}.toml"
            job.write_text(f'[job]\nname = "j{i}"\nconfig = '
                           f'"{ROOT / "examples" / "digits-cnn.toml"}"\n'
                           f"set = {json.dumps(sets)}\ndevices = {n}\n")
            specs.append(load_job(job, fleet))
        d = t / "fleet"
        up(fleet, d, policy=args.policy, num_cpus=1)
        try:
            store = Store(d)
            ids = [store.submit(s) for s in specs]
            while any(store.job(j).state in ("queued", "running")  # type: ignore[union-attr]
                      for j in ids):
                time.sleep(0.5)
            jobs = [store.job(j) for j in ids]
            atts = {j: store.attempts(j) for j in ids}
        finally:
            down(d)
    if any(j is None or j.state != "done" for j in jobs):
        raise SystemExit(f"not every job finished: {[j and j.state for j in jobs]}")
    t0 = min(j.submitted for j in jobs if j)
    live_jct = [j.finished - j.submitted for j in jobs if j and j.finished]
    # measured table: per (size class, pool) samples/s per device, start-up included
    pools = [p.id for p in fleet.pools]
    rates: dict[tuple[str, str], list[float]] = {}
    for j in jobs:
        assert j is not None
        for a in atts[j.id]:
            if a.state == "done" and a.ended:
                rates.setdefault((f"digits-x{j.devices}", a.pool), []).append(
                    j.spec.steps * j.spec.global_batch / (a.ended - a.started) / j.devices)
    speeds: dict[str, tuple[float | None, ...]] = {}
    for w in {w for w, _ in rates}:
        known = {p: statistics.fmean(v) for (x, p), v in rates.items() if x == w}
        fill = statistics.fmean(known.values())  # an emulated pool that ran none of them
        speeds[w] = tuple(known.get(p, fill) for p in pools)
        print(f"measured {w}: " + ", ".join(f"{p} {s:.1f}" for p, s in
                                             zip(pools, speeds[w], strict=True))
              + " samples/s/device (emulated)")
    sim_jobs = [Job(id=j.id, workload=f"digits-x{j.devices}", arrival_s=j.submitted - t0,
                    devices=j.devices, work=j.spec.steps * j.spec.global_batch,
                    mem_gib=1.0) for j in jobs if j]
    res = simulate(load_fleet(fleet_toml), sim_jobs, make_policy(args.policy), speeds,
                   SimConfig(failures=False, throttles=False))
    sim_avg = res.metrics["jct_avg_s"]
    live_avg = statistics.fmean(live_jct)
    print(f"live: average JCT {live_avg:.1f} s over {len(live_jct)} jobs; simulated: "
          f"{sim_avg:.1f} s (policy {args.policy}, emulated pools)")
    print(f"fleet_sim_vs_live: live {live_avg:.1f} s / simulated {sim_avg:.1f} s = "
          f"{live_avg / sim_avg:.3f} (target 0.8-1.25)")


if __name__ == "__main__":
    main()
