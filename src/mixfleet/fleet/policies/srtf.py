"""``srtf``: shortest remaining time first, each job on its best available chip.

Remaining time = estimated remaining work / (devices x the job's best relative speed); the
estimate is the simulator's (:mod:`mixfleet.fleet.estimates`), not the trace's truth.
Jobs are taken shortest first; a waiting one takes the fastest pool with enough free
devices. A running job keeps its pool while there is room for it, unless a faster pool has
room and moving pays: its estimated remaining time there is shorter by more than
``move_gain`` x the migration stall (``Snapshot.migration_s``). Preemptive: a short arrival
can displace a long running job (which checkpoints and waits).
"""

from __future__ import annotations

from mixfleet.errors import ConfigError
from mixfleet.fleet.policies.base import Allocation, JobView, Snapshot, best, register

__all__ = ["SrtfPolicy"]


@register("srtf")
class SrtfPolicy:
    """Shortest remaining time first on the best available chip."""

    name = "srtf"
    round_s: float | None = None
    preemptive = True

    def __init__(self, move_gain: float = 2.0):
        if not move_gain >= 0:
            raise ConfigError(f"srtf move_gain must be >= 0 (got {move_gain}); e.g. 2.0")
        self.move_gain = float(move_gain)
        """A running job moves when it saves more than this many migration stalls."""

    def allocate(self, snap: Snapshot) -> Allocation:
        free = [p.capacity for p in snap.pools]
        speed = snap.speed
        stall = self.move_gain * snap.migration_s

        def key(j: JobView) -> tuple[float, float]:
            b = best(j.options, speed[j.workload])
            return (j.remaining / (j.devices * b), j.arrival_s)

        alloc: Allocation = {}
        for j in sorted(snap.jobs, key=key):
            s = speed[j.workload]
            cands = [p for p in j.options if free[p] >= j.devices]
            if not cands:
                continue
            p = max(cands, key=lambda q: (s[q] or 0.0, -q))
            cur = j.pool
            if cur is not None and cur in cands and p != cur:
                rem, n = j.remaining, j.devices
                gain = rem / (n * (s[cur] or 0.0)) - rem / (n * (s[p] or 0.0))
                if not gain > stall:
                    p = cur
            alloc[j.id] = p
            free[p] -= j.devices
        return alloc
