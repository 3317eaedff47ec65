"""``goodput`` (mixfleet's): place each job where it is expected to finish first, counting
each chip's speed and its failures, and move it when a faster pool frees up.

Effective throughput of a job on a pool = devices x relative speed x expected availability
under the pool's failure rate at the Young/Daly checkpoint interval x the share kept under
its throttle episodes (:meth:`Snapshot.goodput_factor`). Waiting jobs are taken highest
priority, then oldest first (only the ``window`` oldest per decision). Each starts on the
pool with room where its estimated remaining work over that throughput ends first.

Reservations (``reservations`` >= 1; default 0) are EASY backfilling's: a job that would
finish sooner by waiting for a busy, faster pool (estimated from when the running jobs
there end) holds devices there from that *shadow time*, for at most ``reservations`` jobs
per decision; a later job may still use the held devices when its estimated finish comes
before the shadow time (it does not delay the reservation), and a job that finds no
reservation left starts now on the best pool with room, so no device that a waiting job
fits stays idle unless it is held for a reservation it would delay.

Moves (``moves = True``: the simulator also asks at completions): after the waiting jobs, a
running job moves to a faster pool with room left (not held for a reservation) when its
estimated remaining time there is shorter by more than ``move_gain`` x the migration stall
(``Snapshot.migration_s``). Never preempts a job for another.

Remaining work and the end of running jobs are the simulator's *estimates*
(:mod:`mixfleet.fleet.estimates`), never the trace's true durations (except under
``--estimates oracle``).
"""

from __future__ import annotations

import bisect
import itertools
import math

from mixfleet.errors import ConfigError
from mixfleet.fleet.policies.base import Allocation, Snapshot, register

__all__ = ["GoodputPolicy"]


@register("goodput")
class GoodputPolicy:
    """Earliest expected finish under speed, failures and throttling."""

    name = "goodput"
    round_s: float | None = None
    preemptive = False
    needs_remaining = False
    moves = True

    def __init__(self, window: float = 128, reservations: float = 0, move_gain: float = 2.0):
        if not reservations >= 0 or not window >= 1:
            raise ConfigError(f"goodput window must be >= 1 and reservations >= 0 (got "
                              f"{window}, {reservations}); e.g. window=128, reservations=1")
        self.move_gain = float(move_gain)
        """A running job moves to a pool with room where its estimated remaining time is
        shorter by more than this many migration stalls (0 < ... ; inf: never)."""
        self.reservations = int(reservations)
        """Waiting jobs per decision that may hold devices of a busy, faster pool (EASY
        backfilling holds one: the head of the queue). Default 0: a job starts on the pool
        where it finishes first among those with room, and moves later (measured better on
        the Philly trace and on Gavel-style jobs with history estimates; docs/fleet.md)."""
        self.window = int(window)
        """Waiting jobs considered per decision, oldest first (bounds the cost of a call,
        as backfill schedulers bound their queue scan)."""
        self._owner: tuple[object, object, bool] | None = None
        self._memo: dict[tuple[str, int], list[float]] = {}

    def rate(self, snap: Snapshot, workload: str, devices: int, pool: int) -> float:
        """Expected kept work per second of a job on ``pool``."""
        factor = max(snap.goodput_factor(pool, devices), 1e-6)  # 0 would strand the job
        return devices * (snap.speed[workload][pool] or 0.0) * factor

    def _rates(self, snap: Snapshot, workload: str, devices: int) -> list[float]:
        """Per pool, :meth:`rate` of a (workload, devices) job; memoized across calls for
        as long as the snapshots share their pools, speeds and failure setting (a
        simulation's), which are all the rate depends on."""
        owner = self._owner
        if owner is None or owner[0] is not snap.speed or owner[1] is not snap.pools \
                or owner[2] != snap.failures:
            self._owner = (snap.speed, snap.pools, snap.failures)
            self._memo = {}
        key = (workload, devices)
        rates = self._memo.get(key)
        if rates is None:
            rates = self._memo[key] = [self.rate(snap, workload, devices, p)
                                       for p in range(len(snap.pools))]
        return rates

    def allocate(self, snap: Snapshot) -> Allocation:
        npools = len(snap.pools)
        free = list(snap.free)
        alloc: Allocation = {}
        now = snap.time
        inf = math.inf
        bisect_left = bisect.bisect_left
        # per pool, lazily: (estimated end times, devices freed by then) of its running jobs
        release: list[tuple[list[float], list[int]] | None] = [None] * npools

        waiting = list(itertools.islice(snap.waiting, self.window))
        if any(j.priority for j in waiting):
            waiting.sort(key=lambda j: -j.priority)  # stable: oldest first within a level
        # smallest job at or behind each position: once no pool has room for it, no later
        # job can start now (not even by backfilling) and the rest of the scan is moot
        least = [0] * len(waiting)
        m = 1 << 62
        for i in range(len(waiting) - 1, -1, -1):
            m = min(m, waiting[i].devices)
            least[i] = m
        reserved = [0] * npools
        if not waiting:
            self._moves(snap, free, reserved, alloc)
            return alloc
        shadow = [inf] * npools  # earliest time a reservation on the pool needs its devices
        nres = 0
        room = max(free)
        rates_of = self._rates
        for i, j in enumerate(waiting):
            if room < least[i] and nres >= self.reservations:
                break  # nothing can start now, and no reservation is left to record
            n = j.devices
            rates = rates_of(snap, j.workload, n)
            rem = j.remaining
            best_t, best_p, best_start = inf, -1, inf
            now_t, now_p = inf, -1  # the best pool it can start on now
            for p in j.options:
                r = rates[p]
                if r <= 0:
                    continue
                dur = rem / r
                f = free[p]
                if f >= n and (f - n >= reserved[p] or now + dur <= shadow[p]):
                    t, start = now + dur, now  # fits, or backfills ahead of the reservation
                    if t < now_t:
                        now_t, now_p = t, p
                else:
                    need = n + reserved[p] - f
                    rel = release[p]
                    if rel is None:
                        ends = sorted((x.eta, x.devices) for x in snap.running[p])
                        acc, cum = 0, []
                        for _, d in ends:
                            acc += d
                            cum.append(acc)
                        rel = release[p] = ([e for e, _ in ends], cum)
                    times, cum = rel
                    k = bisect_left(cum, need)
                    if k >= len(times):
                        continue
                    start = max(times[k], now)
                    t = start + dur
                if t < best_t:
                    best_t, best_p, best_start = t, p, start
            if best_p < 0:
                continue
            if best_p == now_p:
                p = now_p
            elif nres < self.reservations:
                reserved[best_p] += n
                shadow[best_p] = min(shadow[best_p], best_start)
                nres += 1
                continue
            elif now_p >= 0:
                p = now_p  # no reservation left to hold: do not leave its devices idle
            else:
                continue
            alloc[j.id] = p
            free[p] -= n
            room = max(free)
        self._moves(snap, free, reserved, alloc)
        return alloc

    def _moves(self, snap: Snapshot, free: list[int], reserved: list[int],
               alloc: Allocation) -> None:
        """Move running jobs to faster pools with room left after the waiting jobs and the
        reservations, when the estimated time saved exceeds ``move_gain`` migration stalls.
        At most ``window`` running jobs are examined."""
        spare = [f - r for f, r in zip(free, reserved, strict=True)]
        if max(spare) <= 0 or not math.isfinite(self.move_gain):
            return
        cost = self.move_gain * snap.migration_s
        seen = 0
        # slowest pools first: their jobs have the most to gain
        mean = [sum(sp[p] or 0.0 for sp in snap.speed.values()) for p in range(len(free))]
        for p in sorted(range(len(free)), key=lambda q: (mean[q], q)):
            for x in snap.running[p]:
                seen += 1
                if seen > self.window:
                    return
                n = x.devices
                if n > max(spare):
                    continue
                rates = self._rates(snap, x.workload, n)
                cur = rates[p]
                best_q, best_r = -1, cur
                for q in x.options:
                    if spare[q] >= n and rates[q] > best_r:
                        best_q, best_r = q, rates[q]
                if best_q < 0:
                    continue
                left = x.eta - snap.time  # estimated seconds left where it runs
                if left * (1.0 - cur / best_r) > cost:
                    alloc[x.id] = best_q
                    spare[best_q] -= n
                    spare[p] += n
                    if max(spare) <= 0:
                        return
