"""``nvidia-sparing``: non-Nvidia pools first; Nvidia only for jobs that need it.

A job may use an Nvidia pool only when no non-Nvidia pool fits its memory (or size), or
when its best non-Nvidia speed is more than ``bound`` times slower than its best Nvidia
speed. Such a job prefers Nvidia, fastest pool first; every other job goes to the fastest
non-Nvidia pool with room, or waits. Never preempts.
"""

from __future__ import annotations

from typing import Any

from mixfleet.errors import ConfigError
from mixfleet.fleet.policies.base import Allocation, Snapshot, first_fit, register

__all__ = ["NvidiaSparingPolicy"]


@register("nvidia-sparing")
class NvidiaSparingPolicy:
    """Keep Nvidia for the jobs whose memory or slowdown elsewhere demands it."""

    name = "nvidia-sparing"
    round_s: float | None = None
    preemptive = False
    needs_remaining = False

    def __init__(self, bound: float = 2.0):
        if not bound >= 1:
            raise ConfigError(f"nvidia-sparing bound must be >= 1 (got {bound}); e.g. 2.0")
        self.bound = bound

    def order(self, snap: Snapshot, workload: str, options: tuple[int, ...]) -> list[int]:
        """The pools a job may use, in order of preference."""
        s = snap.speed[workload]
        nv = sorted((p for p in options if snap.pools[p].is_nvidia),
                    key=lambda p: (-(s[p] or 0.0), p))
        other = sorted((p for p in options if not snap.pools[p].is_nvidia),
                       key=lambda p: (-(s[p] or 0.0), p))
        if not other:
            return nv
        if nv and (s[nv[0]] or 0.0) > self.bound * (s[other[0]] or 0.0):
            return nv + other
        return other

    def allocate(self, snap: Snapshot) -> Allocation:
        memo: dict[tuple[str, tuple[int, ...]], list[int]] = {}

        def pools_for(j: Any) -> list[int]:
            k = (j.workload, j.options)
            order = memo.get(k)
            if order is None:
                order = memo[k] = self.order(snap, j.workload, j.options)
            return order

        return first_fit(snap, pools_for)
