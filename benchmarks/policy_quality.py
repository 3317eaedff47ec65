"""Average JCT of every policy on a trace (default: Philly Sep-Oct 2017; ``--trace``) on the
example mixed fleet with failures, policies on ``history`` estimates of job lengths (learned
online from finished jobs; what a real scheduler can know), then goodput again on ``oracle``
(true lengths: an upper bound, no scheduler has them). fifo, gavel and nvidia-sparing use no
lengths, so their results do not depend on the estimator. Last line: fifo/goodput and
gavel/goodput average-JCT ratios with history estimates (> 1: goodput finishes jobs sooner),
and fifo/goodput with the oracle.

``--misspecified``: the fleet's figures are wrong. The truth the simulator draws from has
every (workload, pool) speed off by a factor uniform in [0.7, 1.3] and every failure rate
3x the profile's (:func:`mixfleet.sim.knowledge.misspecified_truth`, seeded by ``--seed``).
Each policy runs twice on that truth: told the truth (speeds and profiles), and told the
table and the documented profiles (misspecified; reliability then estimated from the
failures it sees). Per policy: both average JCTs and the loss; last line: the default
policy's (goodput's) avg JCT misspecified / true (target <= 1.10).

Every result line names its trace; a named trace that is missing exits 2. goodput's
defaults were chosen on Gavel-style seeds 10-14 (benchmarks/policy_load.py), not on the
seed reported here (0)."""

from __future__ import annotations

import argparse
import dataclasses

from bench_common import mixed_fleet, named_trace

from mixfleet.fleet.policies import POLICY_NAMES, make_policy
from mixfleet.fleet.policies.base import pool_views
from mixfleet.sim import SimConfig, simulate
from mixfleet.sim.knowledge import misspecified_truth

DEFAULT = "goodput"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", default="philly", help="philly, synthetic:N or a trace path")
    ap.add_argument("--misspecified", action="store_true")
    ap.add_argument("--seed", type=int, default=0, help="failure draws and the truth's draw")
    ap.add_argument("--policies", default=",".join(POLICY_NAMES))
    ap.add_argument("--limit", type=int, default=None, help="first N jobs only (smoke runs)")
    a = ap.parse_args()
    names = a.policies.split(",")
    bad = [n for n in names if n not in POLICY_NAMES]
    if bad or (a.misspecified and DEFAULT not in names):
        ap.error(f"--policies: {','.join(bad) or 'missing ' + DEFAULT}; use names of "
                 f"{', '.join(POLICY_NAMES)} (with {DEFAULT})")
    jobs, _, trace = named_trace(a.trace, a.seed)
    if a.limit:
        jobs, trace = jobs[:a.limit], f"{trace}, first {min(a.limit, len(jobs))}"
    fleet, speeds = mixed_fleet()
    if a.misspecified:
        misspecified(fleet, speeds, jobs, trace, names, a.seed)
    else:
        compare(fleet, speeds, jobs, trace, names, a.seed)


def compare(fleet, speeds, jobs, trace, names, seed) -> None:  # type: ignore[no-untyped-def]
    jct: dict[str, float] = {}
    for name in names:
        m = simulate(fleet, jobs, make_policy(name), speeds, SimConfig(seed=seed)).metrics
        jct[name] = m["jct_avg_s"]
        print(f"[{trace}] {name:15s} avg JCT {m['jct_avg_s'] / 3600:7.2f} h  p99 "
              f"{m['jct_p99_s'] / 3600:8.1f} h  Nvidia {m['nvidia_device_hours']:10,.0f} "
              f"dev-h  non-Nvidia work {m['non_nvidia_work_share']:.1%}  lost "
              f"{m['goodput_lost_device_hours']:7,.0f} dev-h  moves {m['migrations']:6,d}  "
              f"(history estimates: error p50 {m['estimate_error_p50']:.0%}, p90 "
              f"{m['estimate_error_p90']:.0%})", flush=True)
    o = simulate(fleet, jobs, make_policy(DEFAULT), speeds,
                 SimConfig(seed=seed, estimates="oracle")).metrics["jct_avg_s"]
    print(f"[{trace}] {DEFAULT:15s} avg JCT {o / 3600:7.2f} h  (ORACLE lengths: upper bound)")
    g = jct.get(DEFAULT, o)
    ratios = "  ".join(f"{n}/{DEFAULT} {jct[n] / g:.2f}" for n in ("fifo", "gavel") if n in jct)
    fifo = f"fifo/{DEFAULT} {jct['fifo'] / o:.2f}" if "fifo" in jct else ""
    print(f"policy_quality: [{trace}] history estimates: {ratios};  oracle: {fifo}")


def misspecified(fleet, speeds, jobs, trace, names, seed) -> None:  # type: ignore[no-untyped-def]
    truth = misspecified_truth(pool_views(fleet), speeds, seed)
    # the fleet told the truth: its pools' profiles are the true ones
    told = dataclasses.replace(fleet, pools=tuple(
        dataclasses.replace(p, reliability=r)
        for p, r in zip(fleet.pools, truth.reliability, strict=True)))
    cfg = SimConfig(seed=seed)
    ratio: dict[str, float] = {}
    for name in names:
        t = simulate(told, jobs, make_policy(name), truth.speed, cfg, truth=truth).metrics
        m = simulate(fleet, jobs, make_policy(name), speeds, cfg, truth=truth).metrics
        ratio[name] = m["jct_avg_s"] / t["jct_avg_s"]
        print(f"[{trace}; truth: {truth.note}, seed {seed}] {name:15s} avg JCT true inputs "
              f"{t['jct_avg_s'] / 3600:7.2f} h  misspecified {m['jct_avg_s'] / 3600:7.2f} h  "
              f"loss {ratio[name] - 1:+.1%}", flush=True)
    print(f"policy_quality --misspecified: [{trace}] default {DEFAULT}: avg JCT misspecified "
          f"/ true inputs {ratio[DEFAULT]:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
