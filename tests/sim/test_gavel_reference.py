"""The fast ``gavel`` policy against its reference: the straightforward implementation it
replaced (every job's shares from an LP through ``scipy.optimize.linprog``, no cache, one
sort key per (job, pool) pair, no early exits) kept here to compare with."""

import math
import random

import pytest
from sim_helpers import fleet

from mixfleet.fleet.model import Job
from mixfleet.fleet.policies import make_policy
from mixfleet.fleet.policies.gavel import GavelPolicy, solve_max_min
from mixfleet.sim import SimConfig, simulate


def reference_shares(pol: GavelPolicy, snap) -> dict[str, dict[int, float]]:
    classes: dict = {}
    for j in snap.jobs:
        if j.options:
            sp = snap.speed[j.workload]
            sig = (j.devices, tuple((p, sp[p] or 0.0) for p in j.options))
            classes.setdefault(sig, []).append(j)
    sigs = sorted(classes)
    cap = [float(p.capacity) for p in snap.pools]
    parts = max(1, math.ceil(len(sigs) / pol.max_lp_jobs))
    out: dict[str, dict[int, float]] = {}
    for k in range(parts):
        idx = list(range(k, len(sigs), parts))
        _, x = solve_max_min([dict(sigs[i][1]) for i in idx], [sigs[i][0] for i in idx],
                             [c / parts for c in cap], [len(classes[sigs[i]]) for i in idx],
                             [float(sigs[i][0]) if pol.weight_by_devices else 1.0
                              for i in idx], direct=False)
        for i, xi in zip(idx, x, strict=True):
            for j in classes[sigs[i]]:
                out[j.id] = xi
    return out


def reference_allocate(pol: GavelPolicy, snap) -> dict[str, int]:
    shares = reference_shares(pol, snap)
    prio = []
    for i, j in enumerate(snap.jobs):
        age = snap.time - j.arrival_s
        for p, x in shares.get(j.id, {}).items():
            got = j.run_s[p] / age if age > 0 else 0.0
            prio.append((-(x / got if got > 0 else math.inf), j.arrival_s, i, p, j))
    prio.sort(key=lambda t: t[:4])
    free = [p.capacity for p in snap.pools]
    alloc: dict[str, int] = {}
    for _, _, _, p, j in prio:
        if j.id not in alloc and free[p] >= j.devices:
            alloc[j.id] = p
            free[p] -= j.devices
    for j in snap.jobs:
        if j.id in alloc:
            continue
        s = snap.speed[j.workload]
        cands = [p for p in j.options if free[p] >= j.devices]
        if cands:
            p = max(cands, key=lambda q: (s[q] or 0.0, -q))
            alloc[j.id] = p
            free[p] -= j.devices
    return alloc


class Checked(GavelPolicy):
    """The fast policy, asserting at every round that the reference decides the same
    (placements and their order, which sets the order of starts and random draws)."""

    rounds = contended = 0

    def allocate(self, snap):
        fast = super().allocate(snap)
        assert list(fast.items()) == list(reference_allocate(self, snap).items())
        self.rounds += 1
        self.contended += len(fast) < len(snap.jobs)
        return fast


@pytest.mark.parametrize("options", [{}, {"max_lp_jobs": 2}, {"weight_by_devices": False}])
def test_fast_gavel_decides_as_the_reference_at_every_round(options):
    """On a contended trace with failures, every round's allocation of the fast gavel equals
    the reference's, in order (POP partitions and unweighted fairness too), so the whole
    schedule is the same."""
    rng = random.Random(11)
    f = fleet([(6, 80, True), (4, 64, False), (3, 96, True)],
              {"mtbf_h": 3.0, "throttle_per_h": 2.0, "throttle_s": 200.0,
               "throttle_slowdown": 0.5})
    speeds = {"a": (1.0, 0.6, 1.4), "b": (1.0, 1.2, 0.8), "c": (1.0, None, 2.0)}
    jobs = [Job(id=f"j{i}", workload=rng.choice("abc"), arrival_s=rng.uniform(0, 30000),
                devices=rng.choice([1, 1, 2, 3, 4]), work=rng.uniform(500, 80000),
                mem_gib=rng.choice([8, 40, 70])) for i in range(60)]
    pol = Checked(**options)
    r = simulate(f, jobs, pol, speeds, SimConfig(seed=2, migration_s=30.0))
    assert pol.rounds > 100 and pol.contended > 20
    assert r.metrics["jobs_completed"] == len(jobs)
    again = simulate(f, jobs, make_policy("gavel", **options), speeds,
                     SimConfig(seed=2, migration_s=30.0))
    assert again.jobs == r.jobs


def test_direct_highs_solves_as_linprog():
    """HiGHS called directly returns bit for bit linprog's solution of the max-min LP (the
    pinned scipy has the binding, so the direct path is the one compared)."""
    from mixfleet.fleet.policies import gavel

    assert gavel._core() is not None and not gavel._DIRECT_OFF
    rng = random.Random(0)
    for _ in range(60):
        npool = rng.randint(1, 6)
        nj = rng.randint(1, 80)
        speeds = [{p: rng.choice([0.3, 0.5, 0.8, 1.0, 1.3, 2.0])
                   for p in sorted(rng.sample(range(npool), rng.randint(1, npool)))}
                  for _ in range(nj)]
        devs = [rng.choice([1, 1, 2, 4, 8]) for _ in range(nj)]
        cap = [float(rng.randint(8, 600)) for _ in range(npool)]
        counts = [rng.randint(1, 5) for _ in range(nj)]
        args = (speeds, devs, cap, counts, [float(d) for d in devs])
        assert solve_max_min(*args, direct=True) == solve_max_min(*args, direct=False)
    assert not gavel._DIRECT_OFF
