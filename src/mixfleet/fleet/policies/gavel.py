"""``gavel``: heterogeneity-aware max-min fairness over normalized throughput (Gavel,
Narayanan et al. OSDI 2020), as a linear program solved by HiGHS through scipy (called
directly with ``linprog``'s model and options, the same solution at a fraction of the
per-call cost; ``linprog`` itself where scipy's binding differs).

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

import functools
import math
from typing import Any

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from mixfleet.errors import ConfigError, MixfleetError
from mixfleet.fleet.policies.base import Allocation, Snapshot, register

__all__ = ["GavelPolicy", "solve_max_min"]


def solve_max_min(speeds: list[dict[int, float]], devices: list[int],
                  capacity: list[float], counts: list[int] | None = None,
                  weights: list[float] | None = None, direct: bool = True
                  ) -> tuple[float, list[dict[int, float]]]:
    """Solve the max-min LP. ``speeds[j]``: pool -> relative speed on the pools job j fits.
    ``weights[j]``: the factor of job j's fairness term (Gavel: its device count; default
    1 each).
    ``counts[j]``: how many interchangeable jobs row j stands for (default 1 each; their
    devices count that many times against capacity, and each gets the row's shares).
    ``direct``: call HiGHS directly where scipy's binding allows (:func:`_highs_direct`,
    the same solution as ``linprog``); False: through ``scipy.optimize.linprog``.
    Returns (t, X) with X[j]: pool -> time share."""
    total = float(sum(capacity))
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
    rows = np.concatenate([jj, nj + pp, nj + npool + jj, nj + npool + np.arange(nj)])
    cols = np.concatenate([k, k, k, np.full(nj, n)])
    weight = np.asarray(devices, dtype=float)
    if counts is not None:
        weight = weight * np.asarray(counts, dtype=float)
    fair = np.ones(nj) if weights is None else np.asarray(weights, dtype=float)
    vals = np.concatenate([np.ones(n), weight[jj], -sv * fair[jj] / prop[jj], np.ones(nj)])
    b = np.concatenate([np.ones(nj), capv, np.zeros(nj)])
    c = np.zeros(n + 1)
    c[n] = -1.0
    x = None
    if direct and not _DIRECT_OFF:
        try:
            x = _highs_direct(c, rows, cols, vals, b, n)
        except (TypeError, ValueError, AttributeError, RuntimeError):
            _DIRECT_OFF.append(True)  # a binding that differs: linprog from now on
    if x is None:
        a = coo_matrix((vals, (rows, cols)), shape=(2 * nj + npool, n + 1)).tocsr()
        res = linprog(c, A_ub=a, b_ub=b, bounds=[(0, 1)] * n + [(0, None)], method="highs")
        if res.status != 0:
            raise MixfleetError(f"gavel LP failed ({res.message}) for {nj} jobs")
        x = res.x
    out: list[dict[int, float]] = [{} for _ in speeds]
    xs = x.tolist()
    for (j, p), xi in zip(pairs, xs, strict=False):  # xs ends with t
        if xi > 1e-9:
            out[j][p] = xi
    return xs[n], out


def _highs_direct(c: np.ndarray, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                  b: np.ndarray, n: int) -> np.ndarray | None:
    """min c x s.t. A x <= b (A given as distinct (row, col, value) entries), 0 <= x[:n] <= 1,
    x[n] >= 0, solved by the HiGHS that scipy bundles, with the model and options
    ``linprog(method="highs")`` passes it, hence the same solution, without linprog's
    per-call input checks and dual extraction (most of a small solve's time). None where
    scipy's binding lacks what this needs (then the caller goes through linprog)."""
    core = _core()
    if core is None:
        return None
    h, dual = core
    order = np.lexsort((rows, cols))  # column-wise, rows ascending: linprog's CSC
    lp = h.HighsLp()
    lp.num_col_ = lp.a_matrix_.num_col_ = len(c)
    lp.num_row_ = lp.a_matrix_.num_row_ = len(b)
    lp.a_matrix_.format_ = h.MatrixFormat.kColwise
    lp.col_cost_ = c
    lp.col_lower_ = np.zeros(len(c))
    lp.col_upper_ = np.concatenate([np.ones(n), [np.inf]])
    lp.row_lower_ = np.full(len(b), -np.inf)
    lp.row_upper_ = b
    lp.a_matrix_.start_ = np.concatenate(
        [[0], np.cumsum(np.bincount(cols, minlength=len(c)))]).astype(np.int32)
    lp.a_matrix_.index_ = rows[order].astype(np.int32)
    lp.a_matrix_.value_ = vals[order]
    highs = h._Highs()
    opts = h.HighsOptions()
    opts.presolve = "on"
    opts.highs_debug_level = h.HighsDebugLevel.kHighsDebugLevelNone
    opts.log_to_console = opts.output_flag = False
    opts.simplex_strategy = dual
    if highs.passOptions(opts) == h.HighsStatus.kError or \
            highs.passModel(lp) == h.HighsStatus.kError or \
            highs.run() == h.HighsStatus.kError or \
            highs.getModelStatus() != h.HighsModelStatus.kOptimal:
        status = highs.modelStatusToString(highs.getModelStatus())
        raise MixfleetError(f"gavel LP failed ({status}) for {len(c) - 1} pairs")
    return np.array(highs.getSolution().col_value)


#: Set once the direct call failed in a way a changed scipy binding would (then linprog).
_DIRECT_OFF: list[bool] = []


@functools.cache
def _core() -> tuple[Any, Any] | None:
    """scipy's HiGHS binding and its dual simplex strategy, or None where it differs."""
    try:
        from scipy.optimize._highspy import _core as h

        dual = h.simplex_constants.SimplexStrategy.kSimplexStrategyDual
        for name in ("HighsLp", "_Highs", "HighsOptions", "MatrixFormat", "HighsStatus",
                     "HighsModelStatus", "HighsDebugLevel"):
            getattr(h, name)
    except (ImportError, AttributeError):
        return None
    return h, dual


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
        jobs = list(snap.jobs)
        return {jobs[i].id: x for members, x in self._class_shares(snap) for i in members}

    def _class_shares(self, snap: Snapshot) -> list[tuple[list[int], dict[int, float]]]:
        """Per job class: its members (indices into ``snap.jobs``) and their time shares,
        the LP solved only when the multiset of classes is not in the cache."""
        classes: dict[tuple[int, tuple[tuple[int, float], ...]], list[int]] = {}
        if self._sig_owner is not snap.speed:  # class signatures hold for one speed table
            self._sig_owner, self._sigs = snap.speed, {}
        sigs_of = self._sigs
        for i, j in enumerate(snap.jobs):
            if not j.options:
                continue
            k = (j.workload, j.devices, j.options)
            sig = sigs_of.get(k)
            if sig is None:
                sp = snap.speed[j.workload]
                sig = sigs_of[k] = (j.devices, tuple((p, sp[p] or 0.0) for p in j.options))
            members = classes.get(sig)
            if members is None:
                classes[sig] = [i]
            else:
                members.append(i)
        sigs = sorted(classes)
        cap = tuple(float(p.capacity) for p in snap.pools)
        key = (cap, tuple((s, len(classes[s])) for s in sigs))
        xs = self._cache.get(key)
        if xs is None:
            xs = self._solve(sigs, [len(classes[s]) for s in sigs], cap)
            if len(self._cache) >= 64:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = xs
        return [(classes[s], x) for s, x in zip(sigs, xs, strict=True)]

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
        jobs = list(snap.jobs)
        if not jobs:
            return {}
        now = snap.time
        inf = math.inf
        # (-priority, arrival, job index, pool): (index, pool) is unique, so the order is
        # total and the tuples sort without a key
        prio: list[tuple[float, float, int, int]] = []
        add = prio.append
        for members, x in self._class_shares(snap):
            items = tuple(x.items())
            for i in members:
                j = jobs[i]
                arrival = j.arrival_s
                age = now - arrival
                run = j.run_s
                for p, xp in items:
                    got = run[p] / age if age > 0 else 0.0
                    add((-(xp / got) if got > 0 else -inf, arrival, i, p))
        prio.sort()
        free = [p.capacity for p in snap.pools]
        alloc: Allocation = {}
        least = min(j.devices for j in jobs)  # once no pool has room for it, none fits
        room = max(free)
        for _, _, i, p in prio:
            if room < least:
                break
            j = jobs[i]
            if free[p] >= j.devices and j.id not in alloc:
                alloc[j.id] = p
                free[p] -= j.devices
                room = max(free)
        for j in jobs:  # work-conserving fill
            if room < least:
                break
            if j.id in alloc:
                continue
            s = snap.speed[j.workload]
            cands = [p for p in j.options if free[p] >= j.devices]
            if cands:
                p = max(cands, key=lambda q: (s[q] or 0.0, -q))
                alloc[j.id] = p
                free[p] -= j.devices
                room = max(free)
        return alloc
