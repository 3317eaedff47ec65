"""One allocation for 2,000 active jobs on a 10,000-device mixed fleet, per policy.
Target <= 1 s. Last line: the slowest policy's seconds per decision."""

from __future__ import annotations

import dataclasses
import random
import time

from bench_common import ROOT

from mixfleet.catalog.base import load_catalog
from mixfleet.fleet.model import load_fleet
from mixfleet.fleet.policies import POLICY_NAMES, Snapshot, make_policy
from mixfleet.fleet.policies.base import fit_options, pool_views
from mixfleet.fleet.speeds import speed_matrix
from mixfleet.fleet.throughput import ThroughputTable
from mixfleet.fleet.workloads import WORKLOAD_CLASSES


@dataclasses.dataclass
class J:
    id: str
    workload: str
    devices: int
    mem_gib: float
    remaining: float
    options: tuple[int, ...]
    run_s: list[float]
    priority: int = 0
    arrival_s: float = 0.0
    pool: int | None = None
    eta: float = float("inf")


def main() -> None:
    cat = load_catalog()
    base = load_fleet(ROOT / "examples" / "fleet-mixed.toml", cat)
    fleet = dataclasses.replace(base, pools=tuple(dataclasses.replace(p, nodes=p.nodes * 5)
                                                  for p in base.pools))
    speeds = speed_matrix(fleet, ThroughputTable.build(cat.values(),
                                                    assumptions=fleet.assumptions()))
    pools = pool_views(fleet)
    rng = random.Random(0)
    jobs: list[J] = []
    used = [0] * len(pools)
    while len(jobs) < 2000:
        w = rng.choice(list(WORKLOAD_CLASSES))
        n = rng.choice([1, 1, 1, 2, 4, 8, 16])
        opts, _ = fit_options(pools, speeds[w], n, WORKLOAD_CLASSES[w].mem_gib)
        if not opts:
            continue
        p = rng.choice(opts)
        pool = p if rng.random() < 0.6 and used[p] + n <= pools[p].capacity else None
        if pool is not None:
            used[pool] += n
        jobs.append(J(f"j{len(jobs)}", w, n, WORKLOAD_CLASSES[w].mem_gib,
                      rng.uniform(1e3, 1e6), opts, [rng.uniform(0, 1e4)] * len(pools),
                      arrival_s=float(len(jobs)), pool=pool,
                      eta=1e6 if pool is not None else float("inf")))
    snap = Snapshot(time=1e4, pools=pools, jobs=jobs, speed=speeds)
    print(f"{len(jobs)} active jobs ({len(snap.waiting)} waiting) on {fleet.capacity} devices")
    worst = 0.0
    for name in POLICY_NAMES:
        pol = make_policy(name)
        t0 = time.perf_counter()
        alloc = pol.allocate(snap)
        w = time.perf_counter() - t0
        worst = max(worst, w)
        print(f"{name:15s} {w:7.3f} s  {len(alloc)} placements")
    print(f"policy_decision: slowest policy {worst:.3f} s per allocation (target <= 1 s)")


if __name__ == "__main__":
    main()
