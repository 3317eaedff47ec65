"""fifo vs goodput under load, on Gavel-style jobs (Gavel's generator, our code) on 16 V100 +
16 P100 (reference V100), 200 jobs per run, 3 seeds x 3 arrival rates (0.3, 0.5, 0.8 jobs/h),
failures off (Gavel simulates none), policies on ``history`` estimates (pass ``oracle`` as
the first argument for the upper bound).

The P100/V100 speeds per job type are ASSUMED here (within the 0.3-0.9 range Gavel's paper
reports for these two GPUs), not Gavel's measured table; replay Gavel's own files with
``mixfleet simulate --trace gavel:FILE --throughput gavel:FILE`` for that.

Per load: average JCT of fifo and goodput (geometric means over seeds) and their ratio.
Last line: the worst load's fifo/goodput ratio (target > 1 at every load)."""

from __future__ import annotations

import math
import sys

from mixfleet.catalog.base import load_catalog
from mixfleet.fleet.model import parse_fleet
from mixfleet.fleet.policies import make_policy
from mixfleet.sim import SimConfig, simulate
from mixfleet.sim.gavel import gavel_style_jobs

#: job type -> (V100, P100) speed relative to V100 (assumed; see the docstring)
SPEEDS = {"resnet50": (1.0, 0.36), "transformer": (1.0, 0.45), "lm": (1.0, 0.55),
          "recommendation": (1.0, 0.70), "a3c": (1.0, 0.90)}
LOADS = (0.3, 0.5, 0.8)
SEEDS = (0, 1, 2)
JOBS = 200


def gavel_fleet():  # type: ignore[no-untyped-def]
    data = {"name": "gavel-16v100-16p100", "reference_chip": "nvidia-v100",
            "pool": [{"chip": "nvidia-v100", "nodes": 4, "per_node": 4},
                     {"chip": "nvidia-p100", "nodes": 4, "per_node": 4}]}
    return parse_fleet(data, "policy_load.py", load_catalog())


def gmean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def main() -> None:
    estimates = sys.argv[1] if len(sys.argv) > 1 else "history"
    fleet = gavel_fleet()
    cfg_of = {s: SimConfig(seed=s, failures=False, throttles=False, estimates=estimates)
              for s in SEEDS}
    worst = math.inf
    worst_load = 0.0
    for load in LOADS:
        jct: dict[str, list[float]] = {"fifo": [], "goodput": []}
        for s in SEEDS:
            jobs = gavel_style_jobs(JOBS, load, s, SPEEDS)
            for name in jct:
                r = simulate(fleet, jobs, make_policy(name), dict(SPEEDS), cfg_of[s])
                jct[name].append(r.metrics["jct_avg_s"])
        f, g = gmean(jct["fifo"]), gmean(jct["goodput"])
        ratio = f / g
        print(f"load {load:.1f} jobs/h: avg JCT fifo {f / 3600:6.2f} h  goodput "
              f"{g / 3600:6.2f} h  fifo/goodput {ratio:.2f}  ({estimates} estimates)",
              flush=True)
        if ratio < worst:
            worst, worst_load = ratio, load
    print(f"policy_load: worst fifo/goodput {worst:.2f} at {worst_load:.1f} jobs/h "
          f"({estimates} estimates; target > 1)")


if __name__ == "__main__":
    main()
