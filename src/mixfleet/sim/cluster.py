"""The cluster model: the state of each job and pool during a simulation, and the
accounting of work, stalls and lost work as simulated time advances.

Work is in reference device-seconds. A placed job computes at ``rate`` = devices x its
relative speed on the pool (x (1 - slowdown) while throttled), except while stalled
(writing a checkpoint, restarting after a failure, or loading state after a migration).
Every start and restart of an attempt stalls first for the job's own ``startup_s``, then
for the restart's ``restart_s`` or ``migration_s``, each accounted apart.
"""

from __future__ import annotations

from mixfleet.fleet.estimates import Estimator, OracleEstimator
from mixfleet.fleet.model import Job
from mixfleet.sim.events import CHECKPOINT, COMPLETE

__all__ = ["JobState", "PoolState"]

STALL_NONE, STALL_CKPT, STALL_RESTART, STALL_MIGRATE = range(4)


class JobState:
    """One job during a simulation (also the :class:`JobView` policies see)."""

    __slots__ = ("job", "id", "workload", "devices", "mem_gib", "priority", "arrival_s",
                 "work", "options", "index", "done", "ckpt_done", "pool", "rate", "base_rate",
                 "last", "stall_until", "stall_kind", "throttled", "place_ver", "rate_ver",
                 "ckpt_ver", "start_s", "end_s", "run_s", "work_by_pool", "placed_at",
                 "compute_since_ckpt", "lost_compute_s", "restart_s", "ckpt_s", "migrate_s",
                 "failures", "throttles", "migrations", "ran", "est_work", "est0", "estimator",
                 "startup_until", "startup_stall_s")

    def __init__(self, job: Job, index: int, options: tuple[int, ...], npools: int,
                 estimator: Estimator | None = None):
        self.job = job
        self.id = job.id
        self.workload = job.workload
        self.devices = job.devices
        self.mem_gib = job.mem_gib
        self.priority = job.priority
        self.arrival_s = job.arrival_s
        self.work = job.work
        self.options = options
        self.index = index
        self.done = 0.0
        self.ckpt_done = 0.0
        self.pool: int | None = None
        self.rate = 0.0
        self.base_rate = 0.0
        self.last = job.arrival_s
        self.stall_until = 0.0
        self.stall_kind = STALL_NONE
        self.throttled = 0
        self.place_ver = 0
        self.rate_ver = 0
        self.ckpt_ver = 0
        self.start_s: float | None = None
        self.end_s: float | None = None
        self.run_s = [0.0] * npools
        self.work_by_pool = [0.0] * npools
        self.placed_at = 0.0
        self.compute_since_ckpt = 0.0
        self.lost_compute_s = 0.0
        self.restart_s = 0.0
        self.ckpt_s = 0.0
        self.migrate_s = 0.0
        self.startup_until = 0.0
        """End of the start-up part of the current stall (the job's ``startup_s``)."""
        self.startup_stall_s = 0.0
        self.failures = 0
        self.throttles = 0
        self.migrations = 0
        self.ran = False
        self.estimator: Estimator = estimator or OracleEstimator()
        self.est0 = self.est_work = self.estimator.estimate(job)
        """The estimate at arrival (for the error report), and the current one."""

    @property
    def remaining(self) -> float:
        """Work left *as estimated* (what policies see): the estimate minus what is done,
        extended by the estimator once the job outlives it. Never the truth, except under
        the oracle estimator."""
        r = self.est_work - self.done
        if r > 0:
            return r
        self.est_work = self.estimator.extend(self.job, self.done)
        return max(self.est_work - self.done, 1e-9)

    @property
    def eta(self) -> float:
        """When it completes at its current rate by the estimate (inf while waiting)."""
        if self.pool is None or self.rate <= 0:
            return float("inf")
        return max(self.last, self.stall_until) + self.remaining / self.rate

    def stall(self, t: float, seconds: float, kind: int, start: bool = False) -> None:
        """Stall from ``t`` for ``seconds`` of ``kind``; an attempt that starts (``start``:
        a first start, a restart after a failure or a migration) pays its job's
        ``startup_s`` first."""
        up = t + (self.job.startup_s if start else 0.0)
        self.startup_until = up
        self.stall_until, self.stall_kind = up + seconds, kind

    def advance(self, t: float) -> None:
        """Account the time from ``last`` to ``t``: stall first (start-up, then the rest),
        then computation."""
        a = self.last
        if self.pool is None or t <= a:
            self.last = max(a, t)
            return
        if self.startup_until > a:
            up = min(t, self.startup_until)
            self.startup_stall_s += up - a
            a = up
        if self.stall_until > a:
            s_end = min(t, self.stall_until)
            d = s_end - a
            kind = self.stall_kind
            if kind == STALL_RESTART:
                self.restart_s += d
            elif kind == STALL_CKPT:
                self.ckpt_s += d
            else:
                self.migrate_s += d
            a = s_end
        if t > a:
            dt = t - a
            w = self.rate * dt
            self.done += w
            self.work_by_pool[self.pool] += w
            self.compute_since_ckpt += dt
        self.last = t

    def outdated(self, kind: int, version: int, completions: bool) -> bool:
        """Whether its event of ``kind`` (a job event of :mod:`.events`) made at ``version``
        is one the simulator drops whenever it comes due: the job has moved on to a later
        version since (versions only grow). ``completions``: count outdated completions
        too (under rounds; without rounds their time still prompts a decision)."""
        if kind == COMPLETE:
            return completions and version != self.rate_ver
        return version != (self.ckpt_ver if kind == CHECKPOINT else self.place_ver)

    def finish_time(self, now: float) -> float:
        """When the job completes at the current rate (inf if not computing)."""
        if self.rate <= 0:
            return float("inf")
        return max(now, self.stall_until) + max(self.work - self.done, 0.0) / self.rate


class PoolState:
    """Busy devices of one pool, busy device-seconds and a utilization timeline."""

    __slots__ = ("capacity", "busy", "busy_s", "last", "timeline", "peak")

    def __init__(self, capacity: int, t0: float):
        self.capacity = capacity
        self.busy = 0
        self.busy_s = 0.0
        self.last = t0
        self.timeline: list[tuple[float, int]] = [(t0, 0)]
        self.peak = 0

    def change(self, t: float, delta: int) -> None:
        self.busy_s += self.busy * (t - self.last)
        self.last = t
        self.busy += delta
        if self.busy > self.peak:
            self.peak = self.busy
        if self.timeline[-1][0] == t:
            self.timeline[-1] = (t, self.busy)
        else:
            self.timeline.append((t, self.busy))
