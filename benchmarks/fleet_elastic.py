"""Elastic jobs against today's re-queuing, on the live fleet (docs/fleet-elastic.md).

Fixed scenario (no knob to tune it): the 3-pool live fleet (examples/fleet-live.toml, a
local Ray head on 127.0.0.1, emulated pools, policy goodput); four 2-device llama-debug
jobs (examples/llama-debug.toml) submitted at once, each ``--steps`` steps (300). One
device of pool 910b is under maintenance (on the fleet block list) when they arrive, so
two jobs start at their full count and two cannot. At 30% of the first job's steps
critical heat drains one of its devices (an injected overheat past the critical point, 12
degrees over the warning one). At the time that job would reach 60% at its pace before the
drain (twice the time it took to reach 30%), the device under maintenance frees (taken
off the block list).

Run twice: ``elastic`` (jobs declare min_devices = 1, max_devices = 2: the scheduler may
start a job on the devices free when that ends it sooner than waiting, shrinks the
drained job or requeues it, whichever it predicts ends it sooner, and grows jobs onto
devices that free) and ``requeue`` (min_devices = max_devices = 2: the drained job goes
back to the queue for 2 devices, today's behaviour). Prints each run's jobs, starts and
resizes, then the sum of job completion times elastic / requeue (target <= 0.8;
emulated) on the last line.

    python benchmarks/fleet_elastic.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOBS = 4
HELD_POOL = "910b"


def run(mode: str, steps: int, policy: str, timeout_s: float) -> float:
    """One run of the scenario; returns the sum of JCTs, seconds."""
    from mixfleet.live.control import down, up
    from mixfleet.live.spec import load_fleet_spec, load_job
    from mixfleet.live.store import Store

    fleet = load_fleet_spec(ROOT / "examples" / "fleet-live.toml", emulated=True)
    lo = 1 if mode == "elastic" else 2
    drain_at = max(1, round(0.3 * steps))
    with tempfile.TemporaryDirectory(prefix="mixfleet-bench-") as tmp:
        t = Path(tmp)
        specs = []
        for i in range(JOBS):
            sets = [f"train.steps={steps}", f"train.seed={i}", "train.log_every=10",
                    f"train.warmup_steps={min(20, steps // 10)}", "launch.max_restarts=2",
                    "checkpoint.interval=10", "telemetry.hz=0"]
            if i == 0:  # 12 degrees over the warning point is past the critical one on
                # all three kinds (H20 83 -> 95 >= 92, P800 84 -> 96 >= 93, 910B 84 -> 96 >=
                # 95): drained as critical. The thermal action stays the default (cool): an
                # emulated P800 or 910B under load reaches its warning point by itself, and
                # draining there would drain job 0's other devices too
                sets += [f"faults.inject=['overheat@rank=1,step={drain_at},celsius=12']"]
            job = t / f"job{i}.toml"
            job.write_text(f'[job]\nname = "llama{i}"\nconfig = '
                           f'"{ROOT / "examples" / "llama-debug.toml"}"\n'
                           f"set = {json.dumps(sets)}\ndevices = 2\n"
                           f"min_devices = {lo}\nmax_devices = 2\n")
            specs.append(load_job(job, fleet))
        d = t / "fleet"
        up(fleet, d, policy=policy, num_cpus=1)
        try:
            store = Store(d)
            node = f"{HELD_POOL}/0"  # the embedded fleet's node names: pool/k
            store.block(HELD_POOL, node, 1, None, "maintenance (benchmark)")
            ids = [store.submit(s) for s in specs]
            freed = False
            end = time.monotonic() + timeout_s
            while any(store.job(j).state in ("queued", "running")  # type: ignore[union-attr]
                      for j in ids):
                if time.monotonic() > end:
                    raise SystemExit(f"{mode}: jobs not done after {timeout_s:.0f} s")
                first = store.job(ids[0])
                drains = [e for e in store.events(ids[0]) if e["kind"] == "blocked"]
                if not freed and drains and first and first.started:
                    t30 = drains[0]["t"] - first.started
                    if time.time() >= first.started + 2 * t30:
                        store.unblock(HELD_POOL, node, 1, "maintenance over (benchmark)")
                        freed = True
                time.sleep(0.5)
            jobs = [store.job(j) for j in ids]
            resizes = store.resizes()
            starts = [e for e in store.events() if e["kind"] == "elastic_start"]
        finally:
            down(d)
    if any(j is None or j.state != "done" for j in jobs):
        raise SystemExit(f"{mode}: not every job finished: {[j and j.state for j in jobs]}")
    total = 0.0
    for j in jobs:
        assert j is not None and j.finished is not None
        total += j.finished - j.submitted
        print(f"{mode}: {j.id} {j.name} JCT {j.finished - j.submitted:.1f} s, "
              f"restarts {j.restarts} (emulated)")
    for e in starts:
        print(f"{mode}: {e['job_id']} start on {e['detail']['devices']} of "
              f"{e['detail']['of']}: {e['detail']['reason']}")
    for r in resizes:
        print(f"{mode}: {r.job_id} {r.action} {r.old}->{r.new} ({r.state}): {r.reason}")
    print(f"{mode}: sum of JCT {total:.1f} s (emulated)")
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=300, help="steps per job (300: the "
                    "benchmark; fewer only to check that it runs)")
    ap.add_argument("--policy", default="goodput")
    ap.add_argument("--timeout", type=float, default=7200.0, help="seconds per run")
    args = ap.parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    el = run("elastic", args.steps, args.policy, args.timeout)
    rq = run("requeue", args.steps, args.policy, args.timeout)
    tag = "" if args.steps == 300 else f" [--steps {args.steps}: not the benchmark]"
    print(f"fleet_elastic: sum JCT elastic {el:.1f} s / requeue {rq:.1f} s = {el / rq:.3f} "
          f"(target <= 0.8; emulated){tag}")


if __name__ == "__main__":
    main()
