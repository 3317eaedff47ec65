"""Average JCT of every policy on the Philly Sep-Oct 2017 trace on the example mixed fleet
with failures. Last line: fifo/goodput and gavel/goodput average-JCT ratios (> 1: goodput
finishes jobs sooner)."""

from __future__ import annotations

from bench_common import mixed_fleet, philly_or_synthetic

from mixfleet.fleet.policies import POLICY_NAMES, make_policy
from mixfleet.sim import SimConfig, simulate


def main() -> None:
    jobs, info = philly_or_synthetic()
    fleet, speeds = mixed_fleet()
    jct: dict[str, float] = {}
    for name in POLICY_NAMES:
        m = simulate(fleet, jobs, make_policy(name), speeds, SimConfig(seed=0)).metrics
        jct[name] = m["jct_avg_s"]
        print(f"{name:15s} avg JCT {m['jct_avg_s'] / 3600:7.2f} h  p99 "
              f"{m['jct_p99_s'] / 3600:8.1f} h  Nvidia {m['nvidia_device_hours']:10,.0f} "
              f"dev-h  non-Nvidia work {m['non_nvidia_work_share']:.1%}  lost "
              f"{m['goodput_lost_device_hours']:7,.0f} dev-h", flush=True)
    g = jct["goodput"]
    print(f"policy_quality: fifo/goodput {jct['fifo'] / g:.2f}  gavel/goodput "
          f"{jct['gavel'] / g:.2f}")


if __name__ == "__main__":
    main()
