"""``goodput`` (mixfleet's): place each job where its effective throughput is highest.

Effective throughput of a job on a pool = devices x relative speed x expected availability
under the pool's failure rate at the Young/Daly checkpoint interval x the share kept under
its throttle episodes (:meth:`Snapshot.goodput_factor`). Waiting jobs, highest priority
then oldest first, take the free pool with the highest effective throughput; a job waits
rather than take a pool giving less than ``min_share`` of its best effective throughput
anywhere (a slow placement would hold devices longer than waiting for the right ones).
Never preempts.
"""

from __future__ import annotations

from mixfleet.errors import ConfigError
from mixfleet.fleet.policies.base import Allocation, Snapshot, register

__all__ = ["GoodputPolicy"]


@register("goodput")
class GoodputPolicy:
    """Maximize cluster goodput, greedily per job."""

    name = "goodput"
    round_s: float | None = None
    preemptive = False

    def __init__(self, min_share: float = 0.5):
        if not 0 <= min_share <= 1:
            raise ConfigError(f"goodput min_share must be in [0, 1] (got {min_share}); "
                              f"e.g. 0.5")
        self.min_share = min_share

    def ranked(self, snap: Snapshot, workload: str, devices: int,
               options: tuple[int, ...]) -> list[tuple[float, int]]:
        """(effective throughput, pool) for each option, best first."""
        s = snap.speed[workload]
        r = [((s[p] or 0.0) * snap.goodput_factor(p, devices), p) for p in options]
        r.sort(key=lambda x: (-x[0], x[1]))
        return r

    def allocate(self, snap: Snapshot) -> Allocation:
        free = [p.capacity for p in snap.pools]
        alloc: Allocation = {}
        waiting = []
        for j in snap.jobs:
            if j.pool is None:
                waiting.append(j)
            else:
                alloc[j.id] = j.pool
                free[j.pool] -= j.devices
        if any(j.priority for j in waiting):
            waiting.sort(key=lambda j: -j.priority)  # stable: oldest first within a level
        memo: dict[tuple[str, int, tuple[int, ...]], list[tuple[float, int]]] = {}
        most = max(free)
        for j in waiting:
            if j.devices > most:
                continue
            k = (j.workload, j.devices, j.options)
            ranked = memo.get(k)
            if ranked is None:
                ranked = memo[k] = self.ranked(snap, j.workload, j.devices, j.options)
            floor = self.min_share * ranked[0][0]
            for g, p in ranked:
                if g < floor:
                    break
                if free[p] >= j.devices:
                    alloc[j.id] = p
                    free[p] -= j.devices
                    most = max(free)
                    break
        return alloc
