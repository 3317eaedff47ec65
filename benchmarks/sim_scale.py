"""Philly Sep-Oct 2017 (52,849 jobs) on the 2,000-device mixed fleet with failures on, for
every policy: wall seconds and simulated events per second.
Targets: goodput and fifo <= 60 s on 2 cores, gavel <= 300 s.
Last line: the slowest of goodput/fifo in seconds, and gavel's."""

from __future__ import annotations

import sys
import time

from bench_common import mixed_fleet, philly_or_synthetic

from mixfleet.fleet.policies import POLICY_NAMES, make_policy
from mixfleet.sim import SimConfig, simulate


def main() -> None:
    only = sys.argv[1:] or POLICY_NAMES
    jobs, info = philly_or_synthetic()
    fleet, speeds = mixed_fleet()
    print(f"{len(jobs)} jobs ({info.format}) on {fleet.name}: {fleet.capacity} devices")
    walls: dict[str, float] = {}
    for name in only:
        t0 = time.perf_counter()
        r = simulate(fleet, jobs, make_policy(name), speeds, SimConfig(seed=0))
        w = walls[name] = time.perf_counter() - t0
        ev = r.metrics["events"]
        print(f"{name:15s} wall {w:7.1f} s  events {ev:9,d}  {ev / w:9,.0f} events/s  "
              f"avg JCT {r.metrics['jct_avg_s'] / 3600:6.2f} h", flush=True)
    fast = max(walls.get("goodput", 0.0), walls.get("fifo", 0.0))
    print(f"sim_scale: goodput/fifo max wall {fast:.1f} s (target <= 60), "
          f"gavel wall {walls.get('gavel', float('nan')):.1f} s (target <= 300)")


if __name__ == "__main__":
    main()
