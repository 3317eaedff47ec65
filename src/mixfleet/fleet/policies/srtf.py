"""``srtf``: shortest remaining time first, each job on its best available chip.

Remaining time = remaining work / (devices x the job's best relative speed). Jobs are taken
shortest first; a running job keeps its pool while there is room for it, a waiting one
takes the fastest pool with enough free devices. Preemptive: a short arrival can displace
a long running job (which checkpoints and waits).
"""

from __future__ import annotations

from mixfleet.fleet.policies.base import Allocation, JobView, Snapshot, best, register

__all__ = ["SrtfPolicy"]


@register("srtf")
class SrtfPolicy:
    """Shortest remaining time first on the best available chip."""

    name = "srtf"
    round_s: float | None = None
    preemptive = True

    def allocate(self, snap: Snapshot) -> Allocation:
        free = [p.capacity for p in snap.pools]
        speed = snap.speed

        def key(j: JobView) -> tuple[float, float]:
            b = best(j.options, speed[j.workload])
            return (j.remaining / (j.devices * b), j.arrival_s)

        alloc: Allocation = {}
        for j in sorted(snap.jobs, key=key):
            if j.pool is not None and free[j.pool] >= j.devices:
                alloc[j.id] = j.pool
                free[j.pool] -= j.devices
                continue
            s = speed[j.workload]
            cands = [p for p in j.options if free[p] >= j.devices]
            if cands:
                p = max(cands, key=lambda q: (s[q] or 0.0, -q))
                alloc[j.id] = p
                free[p] -= j.devices
        return alloc
