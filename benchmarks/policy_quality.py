"""Average JCT of every policy on the Philly Sep-Oct 2017 trace on the example mixed fleet
with failures, policies on ``history`` estimates of job lengths (learned online from
finished jobs; what a real scheduler can know), then goodput again on ``oracle`` (true
lengths: an upper bound, no scheduler has them). fifo, gavel and nvidia-sparing use no
lengths, so their results do not depend on the estimator.
Last line: fifo/goodput and gavel/goodput average-JCT ratios with history estimates (> 1:
goodput finishes jobs sooner), and fifo/goodput with the oracle."""

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
              f"{m['goodput_lost_device_hours']:7,.0f} dev-h  moves {m['migrations']:6,d}  "
              f"(history estimates: error p50 {m['estimate_error_p50']:.0%}, p90 "
              f"{m['estimate_error_p90']:.0%})", flush=True)
    o = simulate(fleet, jobs, make_policy("goodput"), speeds,
                 SimConfig(seed=0, estimates="oracle")).metrics["jct_avg_s"]
    print(f"{'goodput':15s} avg JCT {o / 3600:7.2f} h  (ORACLE lengths: upper bound)")
    g = jct["goodput"]
    print(f"policy_quality: history estimates: fifo/goodput {jct['fifo'] / g:.2f}  "
          f"gavel/goodput {jct['gavel'] / g:.2f};  oracle: fifo/goodput {jct['fifo'] / o:.2f}")


if __name__ == "__main__":
    main()
