"""A trace (default: Philly Sep-Oct 2017, 52,849 jobs; ``--trace``) on the 2,000-device mixed
fleet with failures on, for every policy (or those named): wall and CPU seconds and
simulated events per second. Every line names its trace; a named trace that is missing
exits 2. On a shared machine wall time is inflated by contention: CPU seconds of this
process are printed beside it.
Targets (2 cores): the default policy (goodput) <= 20 s, every policy <= 60 s.
Last line: the default's wall seconds, and the slowest policy's."""

from __future__ import annotations

import argparse
import time

from bench_common import mixed_fleet, named_trace

from mixfleet.fleet.policies import POLICY_NAMES, make_policy
from mixfleet.sim import SimConfig, simulate

DEFAULT = "goodput"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policies", nargs="*", default=POLICY_NAMES)
    ap.add_argument("--trace", default="philly", help="philly, synthetic:N or a trace path")
    ap.add_argument("--jobs", type=int, default=0, metavar="N",
                    help="only the first N jobs by arrival (a cut for profiling; 0: all)")
    a = ap.parse_args()
    bad = [n for n in a.policies if n not in POLICY_NAMES]
    if bad:
        ap.error(f"unknown policy {bad[0]!r}; use names of {', '.join(POLICY_NAMES)}")
    if a.jobs < 0:
        ap.error(f"--jobs must be >= 0 (got {a.jobs}); 0 runs the whole trace")
    jobs, _, trace = named_trace(a.trace)
    if a.jobs:
        jobs = sorted(jobs, key=lambda j: j.arrival_s)[:a.jobs]
        trace = f"{trace}, first {len(jobs)} jobs"
    fleet, speeds = mixed_fleet()
    print(f"[{trace}] on {fleet.name}: {fleet.capacity} devices")
    walls: dict[str, float] = {}
    for name in a.policies:
        t0, c0 = time.perf_counter(), time.process_time()
        r = simulate(fleet, jobs, make_policy(name), speeds, SimConfig(seed=0))
        w = walls[name] = time.perf_counter() - t0
        cpu = time.process_time() - c0
        ev = r.metrics["events"]
        print(f"[{trace}] {name:15s} wall {w:7.1f} s  cpu {cpu:7.1f} s  events {ev:9,d}  "
              f"{ev / w:9,.0f} events/s  avg JCT {r.metrics['jct_avg_s'] / 3600:6.2f} h",
              flush=True)
    slow = max(walls, key=walls.__getitem__)
    print(f"sim_scale: [{trace}] default {DEFAULT} wall "
          f"{walls.get(DEFAULT, float('nan')):.1f} s (target <= 20), slowest {slow} "
          f"{walls[slow]:.1f} s (target <= 60)")


if __name__ == "__main__":
    main()
