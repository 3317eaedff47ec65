"""``gavel``: heterogeneity-aware max-min fairness over normalized throughput (Gavel,
Narayanan et al. OSDI 2020), as a linear program solved by HiGHS through scipy.

Variables X[j, p] = share of time job j spends on pool p. With s[j, p] its relative speed
there and prop_j = sum_p s[j, p] cap_p / sum_p cap_p its throughput under an equal share of
every pool (Gavel's normalization)::

    maximize t
    subject to  w_j sum_p s[j, p] X[j, p] / prop_j >= t  for every job j
                sum_p X[j, p] <= 1                        for every job j
                sum_j devices_j X[j, p] <= cap_p          for every pool p
                X >= 0, only on pools the job fits

with w_j = devices_j (Gavel's ``max_min_fairness.py`` multiplies each job's term by its
scale factor, so a 1-device job gets ``scale_factor`` times the time of an otherwise equal
job on ``scale_factor`` devices); ``weight_by_devices=False`` gives w_j = 1 (each job's
normalized throughput equal, whatever its size).

Jobs with the same relative speeds, options and device count are interchangeable in this
LP, and averaging an optimum over their permutations is again an optimum, so the LP is
solved over job *classes* (one set of variables per class, its devices counted once per
member) and every member gets its class's shares. The LP depends only on the multiset of
classes and the pools' capacities, not on which jobs run where, so its solution is reused
(a small cache) for as long as that multiset is unchanged: in a quiet cluster a round
costs no solve at all.

Rounds (default 6 minutes, as Gavel) turn X into placements: (job, pool) pairs are taken in
order of priority X[j, p] / (share of time the job has had on p), while devices last;
then any still-free devices go to waiting jobs on their fastest fitting pool (a
work-conserving fill; Gavel's round mechanism fills leftover workers too). Above
``max_lp_jobs`` classes the problem is split POP-style into equal partitions of the
classes (round robin), each with an equal share of every pool.
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
                  capacity: list[float], counts: list[int] | None = None,
                  weights: list[float] | None = None
                  ) -> tuple[float, list[dict[int, float]]]:
    """Solve the max-min LP. ``speeds[j]``: pool -> relative speed on the pools job j fits.
    ``weights[j]``: the factor of job j's fairness term (Gavel: its device count; default
    1 each).
    ``counts[j]``: how many interchangeable jobs row j stands for (default 1 each; their
    devices count that many times against capacity, and each gets the row's shares).
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
    weight = np.asarray(devices, dtype=float)
    if counts is not None:
        weight = weight * np.asarray(counts, dtype=float)
    fair = np.ones(nj) if weights is None else np.asarray(weights, dtype=float)
    vals = [np.ones(n), weight[jj], -sv * fair[jj] / prop[jj], np.ones(nj)]
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

    def __init__(self, round_s: float = 360.0, max_lp_jobs: float = 400,
                 weight_by_devices: bool = True):
        if not round_s > 0:
            raise ConfigError(f"gavel round_s must be > 0 (got {round_s}); e.g. 360")
        if not max_lp_jobs >= 1:
            raise ConfigError(f"gavel max_lp_jobs must be >= 1 (got {max_lp_jobs})")
        self.round_s: float | None = float(round_s)
        self.max_lp_jobs = int(max_lp_jobs)
        self.weight_by_devices = bool(weight_by_devices)
        """Weight each job's fairness term by its device count, as Gavel does."""
        self._cache: dict[tuple[object, ...], list[dict[int, float]]] = {}
        self._sig_owner: object = None
        self._sigs: dict[tuple[str, int, tuple[int, ...]],
                         tuple[int, tuple[tuple[int, float], ...]]] = {}
        self.solves = 0
        """LPs solved (the rest of the rounds reused a cached solution)."""

    def shares(self, snap: Snapshot) -> dict[str, dict[int, float]]:
        """The LP's time shares per job id (solved over job classes; POP partitions above
        ``max_lp_jobs`` classes)."""
        classes: dict[tuple[int, tuple[tuple[int, float], ...]], list[JobView]] = {}
        if self._sig_owner is not snap.speed:  # class signatures hold for one speed table
            self._sig_owner, self._sigs = snap.speed, {}
        sigs_of = self._sigs
        for j in snap.jobs:
            if not j.options:
                continue
            k = (j.workload, j.devices, j.options)
            sig = sigs_of.get(k)
            if sig is None:
                sp = snap.speed[j.workload]
                sig = sigs_of[k] = (j.devices, tuple((p, sp[p] or 0.0) for p in j.options))
            members = classes.get(sig)
            if members is None:
                classes[sig] = [j]
            else:
                members.append(j)
        sigs = sorted(classes)
        cap = tuple(float(p.capacity) for p in snap.pools)
        key = (cap, tuple((s, len(classes[s])) for s in sigs))
        xs = self._cache.get(key)
        if xs is None:
            xs = self._solve(sigs, [len(classes[s]) for s in sigs], cap)
            if len(self._cache) >= 64:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = xs
        out: dict[str, dict[int, float]] = {}
        for s, x in zip(sigs, xs, strict=True):
            for j in classes[s]:
                out[j.id] = x
        return out

    def _solve(self, sigs: list[tuple[int, tuple[tuple[int, float], ...]]],
               counts: list[int], cap: tuple[float, ...]) -> list[dict[int, float]]:
        """Shares per class, in the order of ``sigs``."""
        self.solves += 1
        parts = max(1, math.ceil(len(sigs) / self.max_lp_jobs))
        pcap = [c / parts for c in cap]
        out: list[dict[int, float]] = [{} for _ in sigs]
        for k in range(parts):
            idx = list(range(k, len(sigs), parts))
            _, x = solve_max_min([dict(sigs[i][1]) for i in idx],
                                 [sigs[i][0] for i in idx], pcap,
                                 [counts[i] for i in idx],
                                 [float(sigs[i][0]) if self.weight_by_devices else 1.0
                                  for i in idx])
            for i, xi in zip(idx, x, strict=True):
                out[i] = xi
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
