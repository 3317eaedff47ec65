"""``gavel``: heterogeneity-aware max-min fairness over normalized throughput (Gavel,
Narayanan et al. OSDI 2020), as a linear program solved by HiGHS through scipy.

Variables X[j, p] = share of time job j spends on pool p. With s[j, p] its relative speed
there and prop_j = sum_p s[j, p] cap_p / sum_p cap_p its throughput under an equal share of
every pool (Gavel's normalization)::

    maximize t
    subject to  sum_p s[j, p] X[j, p] / prop_j >= t      for every job j
                sum_p X[j, p] <= 1                        for every job j
                sum_j devices_j X[j, p] <= cap_p          for every pool p
                X >= 0, only on pools the job fits

Rounds (default 6 minutes, as Gavel) turn X into placements: (job, pool) pairs are taken in
order of priority X[j, p] / (share of time the job has had on p), while devices last;
then any still-free devices go to waiting jobs on their fastest fitting pool (a
work-conserving fill, which Gavel's mechanism lacks). Above ``max_lp_jobs`` active jobs the
problem is split POP-style into equal random-free partitions (round robin in arrival
order), each with an equal share of every pool.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from mixfleet.errors import ConfigError, MixfleetError
from mixfleet.fleet.policies.base import Allocation, JobView, Snapshot, register

__all__ = ["GavelPolicy", "solve_max_min"]


def solve_max_min(speeds: list[dict[int, float]], devices: list[int],
                  capacity: list[float]) -> tuple[float, list[dict[int, float]]]:
    """Solve the max-min LP. ``speeds[j]``: pool -> relative speed on the pools job j fits.
    Returns (t, X) with X[j]: pool -> time share."""
    total = float(sum(capacity))
    rows, cols, vals = [], [], []
    pairs: list[tuple[int, int]] = []
    for j, sp in enumerate(speeds):
        for p in sp:
            pairs.append((j, p))
    n, nj, npool = len(pairs), len(speeds), len(capacity)
    if n == 0:
        return 0.0, [{} for _ in speeds]
    jj = np.fromiter((j for j, _ in pairs), dtype=np.int64, count=n)
    pp = np.fromiter((p for _, p in pairs), dtype=np.int64, count=n)
    sv = np.fromiter((speeds[j][p] for j, p in pairs), dtype=float, count=n)
    capv = np.asarray(capacity, dtype=float)
    prop = np.zeros(nj)
    np.add.at(prop, jj, sv * capv[pp] / total)
    k = np.arange(n)
    # rows [0, nj): sum_p X <= 1; [nj, nj+npool): capacity; [nj+npool, 2nj+npool): fairness
    rows = [jj, nj + pp, nj + npool + jj, nj + npool + np.arange(nj)]
    cols = [k, k, k, np.full(nj, n)]
    vals = [np.ones(n), np.asarray(devices, dtype=float)[jj], -sv / prop[jj], np.ones(nj)]
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(2 * nj + npool, n + 1)).tocsr()
    b = np.concatenate([np.ones(nj), capv, np.zeros(nj)])
    c = np.zeros(n + 1)
    c[n] = -1.0
    res = linprog(c, A_ub=a, b_ub=b, bounds=[(0, 1)] * n + [(0, None)], method="highs")
    if res.status != 0:
        raise MixfleetError(f"gavel LP failed ({res.message}) for {nj} jobs")
    x = res.x
    out: list[dict[int, float]] = [{} for _ in speeds]
    for i, (j, p) in enumerate(pairs):
        if x[i] > 1e-9:
            out[j][p] = float(x[i])
    return float(x[n]), out


@register("gavel")
class GavelPolicy:
    """Gavel's max-min fairness with round-based time sharing."""

    name = "gavel"
    preemptive = True
    needs_remaining = False

    def __init__(self, round_s: float = 360.0, max_lp_jobs: float = 400):
        if not round_s > 0:
            raise ConfigError(f"gavel round_s must be > 0 (got {round_s}); e.g. 360")
        if not max_lp_jobs >= 1:
            raise ConfigError(f"gavel max_lp_jobs must be >= 1 (got {max_lp_jobs})")
        self.round_s: float | None = float(round_s)
        self.max_lp_jobs = int(max_lp_jobs)

    def shares(self, snap: Snapshot) -> dict[str, dict[int, float]]:
        """The LP's time shares per job id (POP partitions above ``max_lp_jobs``)."""
        jobs = [j for j in snap.jobs if j.options]
        parts = max(1, math.ceil(len(jobs) / self.max_lp_jobs))
        cap = [p.capacity / parts for p in snap.pools]
        out: dict[str, dict[int, float]] = {}
        for k in range(parts):
            group = jobs[k::parts]
            speeds = [{p: snap.speed[j.workload][p] or 0.0 for p in j.options} for j in group]
            _, x = solve_max_min(speeds, [j.devices for j in group], cap)
            for j, xs in zip(group, x, strict=True):
                out[j.id] = xs
        return out

    def allocate(self, snap: Snapshot) -> Allocation:
        shares = self.shares(snap)
        now = snap.time
        prio: list[tuple[float, float, int, int, JobView]] = []
        for i, j in enumerate(snap.jobs):
            age = now - j.arrival_s
            for p, x in shares.get(j.id, {}).items():
                got = j.run_s[p] / age if age > 0 else 0.0
                prio.append((-(x / got if got > 0 else math.inf), j.arrival_s, i, p, j))
        prio.sort(key=lambda t: t[:4])
        free = [p.capacity for p in snap.pools]
        alloc: Allocation = {}
        for _, _, _, p, j in prio:
            if j.id not in alloc and free[p] >= j.devices:
                alloc[j.id] = p
                free[p] -= j.devices
        for j in snap.jobs:  # work-conserving fill
            if j.id in alloc:
                continue
            s = snap.speed[j.workload]
            cands = [p for p in j.options if free[p] >= j.devices]
            if cands:
                p = max(cands, key=lambda q: (s[q] or 0.0, -q))
                alloc[j.id] = p
                free[p] -= j.devices
        return alloc
