"""``fifo``: heterogeneity-agnostic first fit, in arrival order (the baseline).

Running jobs stay where they are. Each waiting job, oldest first, goes to the first pool
(in fleet-file order) that fits it and has enough free devices; a job that does not fit
now does not block the younger ones behind it.
"""

from __future__ import annotations

from mixfleet.fleet.policies.base import Allocation, Snapshot, first_fit, register

__all__ = ["FifoPolicy"]


@register("fifo")
class FifoPolicy:
    """First fit in arrival order; never preempts."""

    name = "fifo"
    round_s: float | None = None
    preemptive = False
    needs_remaining = False

    def allocate(self, snap: Snapshot) -> Allocation:
        return first_fit(snap, lambda j: j.options)
