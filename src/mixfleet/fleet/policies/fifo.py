"""``fifo``: heterogeneity-agnostic first fit, in arrival order (the baseline).

Running jobs stay where they are. Each waiting job, oldest first, goes to the first pool
(in fleet-file order) that fits it and has enough free devices; a job that does not fit
now does not block the younger ones behind it.
"""

from __future__ import annotations

from mixfleet.fleet.policies.base import Allocation, Snapshot, register

__all__ = ["FifoPolicy"]


@register("fifo")
class FifoPolicy:
    """First fit in arrival order; never preempts."""

    name = "fifo"
    round_s: float | None = None
    preemptive = False
    needs_remaining = False

    def allocate(self, snap: Snapshot) -> Allocation:
        free = list(snap.free)
        alloc: Allocation = {}
        most = max(free)
        for j in snap.waiting:
            if most <= 0:
                break
            if j.devices > most:
                continue
            for p in j.options:
                if free[p] >= j.devices:
                    alloc[j.id] = p
                    free[p] -= j.devices
                    most = max(free)
                    break
        return alloc
