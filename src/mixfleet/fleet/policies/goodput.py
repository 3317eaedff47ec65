"""``goodput`` (mixfleet's): place each job where it is expected to finish first, counting
each chip's speed and its failures.

Effective throughput of a job on a pool = devices x relative speed x expected availability
under the pool's failure rate at the Young/Daly checkpoint interval x the share kept under
its throttle episodes (:meth:`Snapshot.goodput_factor`). For each waiting job (highest
priority, then oldest first) and each pool it fits, the expected finish is the time its
devices become free there (now, or when enough running jobs there end, estimated from their
remaining work) plus its work over its effective throughput. The job takes the pool with the
earliest expected finish: now if that pool has room, else it waits and its devices there are
counted as reserved for the jobs behind it. Never preempts. Only the ``window`` oldest
waiting jobs are considered per decision.
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

    def __init__(self, window: float = 128, reservations: float = 1):
        if not reservations >= 0 or not window >= 1:
            raise ConfigError(f"goodput window must be >= 1 and reservations >= 0 (got "
                              f"{window}, {reservations}); e.g. window=128, reservations=1")
        self.reservations = int(reservations)
        """Waiting jobs per decision that may hold devices of a busy, faster pool (EASY
        backfilling holds one: the head of the queue)."""
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
        if not waiting:
            return alloc
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
        shadow = [inf] * npools  # earliest time a reservation on the pool needs its devices
        nres = 0
        room = max(free)
        rates_of = self._rates
        for i, j in enumerate(waiting):
            if room < least[i]:
                break
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
        return alloc
