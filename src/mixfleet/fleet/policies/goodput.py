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
import operator

from mixfleet.fleet.policies.base import Allocation, Snapshot, register

__all__ = ["GoodputPolicy"]


@register("goodput")
class GoodputPolicy:
    """Earliest expected finish under speed, failures and throttling."""

    name = "goodput"
    round_s: float | None = None
    preemptive = False
    needs_remaining = False

    def __init__(self, window: float = 128):
        self.window = int(window)
        """Waiting jobs considered per decision, oldest first (bounds the cost of a call,
        as backfill schedulers bound their queue scan)."""

    def rate(self, snap: Snapshot, workload: str, devices: int, pool: int) -> float:
        """Expected kept work per second of a job on ``pool``."""
        factor = max(snap.goodput_factor(pool, devices), 1e-6)  # 0 would strand the job
        return devices * (snap.speed[workload][pool] or 0.0) * factor

    def allocate(self, snap: Snapshot) -> Allocation:
        npools = len(snap.pools)
        free = list(snap.free)
        alloc: Allocation = {}
        now = snap.time
        release: dict[int, tuple[list[float], list[int]]] = {}

        def released(p: int) -> tuple[list[float], list[int]]:
            """(end times, devices freed by then) of the jobs running on pool p."""
            r = release.get(p)
            if r is None:
                ends = sorted((j.eta, j.devices) for j in snap.running[p])
                acc, cum = 0, []
                for _, n in ends:
                    acc += n
                    cum.append(acc)
                r = release[p] = ([t for t, _ in ends], cum)
            return r

        waiting = list(itertools.islice(snap.waiting, self.window))
        if any(j.priority for j in waiting):
            waiting.sort(key=lambda j: -j.priority)  # stable: oldest first within a level
        reserved = [0] * npools
        memo: dict[tuple[str, int], list[float]] = {}
        room = max(free)
        for j in waiting:
            if room < 1:
                break  # nothing can start now; later decisions would only reserve
            n = j.devices
            rates = memo.get((j.workload, n))
            if rates is None:
                rates = memo[(j.workload, n)] = [self.rate(snap, j.workload, n, p)
                                                  for p in range(npools)]
            best_t, best_p = math.inf, -1
            for p in j.options:
                r = rates[p]
                if r <= 0:
                    continue
                need = n + reserved[p] - free[p]
                if need <= 0:
                    start = now
                else:
                    times, cum = released(p)
                    k = bisect.bisect_left(cum, need)
                    start = times[k] if k < len(times) else math.inf
                t = start + j.remaining / r
                if t < best_t:
                    best_t, best_p = t, p
            if best_p < 0:
                continue
            if n + reserved[best_p] <= free[best_p]:
                alloc[j.id] = best_p
                free[best_p] -= n
            else:
                reserved[best_p] += n
            room = max(map(operator.sub, free, reserved))
        return alloc
