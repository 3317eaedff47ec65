"""``srtf``: shortest remaining time first, each job on its best available chip.

Remaining time = estimated remaining work / (devices x the job's relative speed); the
estimate is the simulator's (:mod:`mixfleet.fleet.estimates`), not the trace's truth. Speeds
only: no failure or throttle figures, and a stop costs nothing in the ranking.

Decided incrementally, as SRTF changes only at arrivals and completions (goodput's
mechanism, :mod:`.goodput`, with these rates and margins): waiting jobs, shortest first,
take the fastest pool with room; one that finds no room, or only a slower pool, stops the
running jobs with the most time left, when that time exceeds its own (they move to a pool
with room when one fits them, else wait, and pay the migration stall when they start
again). A running job moves to a faster pool with room when its estimated remaining time
there is shorter by more than ``move_gain`` x the migration stall
(``Snapshot.migration_s``). Never re-sorts the whole cluster, so a decision costs the
waiting jobs it scans, not every job (the Philly trace's 52,849 jobs in seconds).
"""

from __future__ import annotations

from mixfleet.errors import ConfigError
from mixfleet.fleet.policies.base import Snapshot, register
from mixfleet.fleet.policies.goodput import GoodputPolicy

__all__ = ["SrtfPolicy"]


@register("srtf")
class SrtfPolicy(GoodputPolicy):
    """Shortest remaining time first on the best available chip."""

    name = "srtf"

    def __init__(self, move_gain: float = 2.0, window: float = 128):
        if not move_gain >= 0:
            raise ConfigError(f"srtf move_gain must be >= 0 (got {move_gain}); e.g. 2.0")
        super().__init__(window=window, reservations=0, move_gain=move_gain,
                         preempt_gain=0.0, preempt_scan=window)

    def rate(self, snap: Snapshot, workload: str, devices: int, pool: int) -> float:
        """Work per second on ``pool``: devices x relative speed (failures not counted)."""
        return devices * (snap.speed[workload][pool] or 0.0)
