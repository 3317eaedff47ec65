"""Resizing elastic jobs: the one decision the live scheduler and the simulator both make
(docs/fleet-elastic.md).

A job that declares ``min_devices``/``max_devices`` may run on any count in that range
with the same global batches (the sampler is split-invariant; the dp/fsdp resume takes
any rank count). Two decisions, both pure functions of what the scheduler knows:

- :func:`on_loss`: devices under a running job were drained or their node was lost.
  Either **shrink** (relaunch on the devices left from its checkpoint or snapshot) or
  **requeue** (wait for its full count again), whichever is predicted to end it sooner:
  shrink ends at ``restart_s + remaining / rate(left)``, requeue at ``wait_s + restart_s +
  remaining / rate(size)``, where ``wait_s`` comes from :func:`expected_wait`.
- :func:`grow`: devices are free that no waiting job can use. Each goes to the job whose
  predicted completion moves earliest (``remaining / rate(n) - restart_s - remaining /
  rate(n + k)``), a whole job's share at a time, while that gain is above ``min_gain_s``;
  a job may also grow by moving to another pool it may use whose free devices alone are
  more than it has (a job shrunk by a drain whose own pool has nothing left to give).

The rate of a job on ``n`` devices is ``n * per_device * scaling ** (n - 1)`` with
``scaling`` an *assumed* per-added-device efficiency (1.0: linear) until the per-job cost
model gives a figure per size. Every decision carries its reason and predicted gain
(seconds of completion time saved; negative for a requeue that shrinking would lose).

- :func:`on_start`: a waiting job that no pool can take at its full count now. Either
  **start** on the devices free now (at least ``min_devices``), going on until its pool
  frees the rest and then growing, or **wait** for the full count, whichever is predicted
  to end it sooner: waiting ends at ``wait_s + remaining / rate(size)``; starting on ``k``
  devices ends at ``w + restart_s + (remaining - w * rate(k)) / rate(size)``, growing (on
  its pool or by a move) where ``size`` devices are free first, after ``w`` seconds (or at
  ``remaining / rate(k)`` when that comes first): it starts when the work it does while
  it waits outweighs the growth's restart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["ElasticJob", "Resize", "on_loss", "loss_decision", "on_start", "grow",
           "expected_wait", "RESTART_S"]

RESTART_S = 30.0
"""Assumed cost of one relaunch (stop, start, resume from a snapshot), seconds: a job's
unless its file says otherwise (``[job] restart_s``)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ElasticJob:
    """What a resize decision sees of one running job."""

    id: str
    pool: int
    size: int
    """Devices it runs on now."""
    lo: int
    hi: int
    remaining: float
    """Work left, samples (or any unit ``per_device`` is in per second)."""
    per_device: float
    """Throughput of one device of its pool, work per second."""
    scaling: float = 1.0
    """Efficiency kept per added device (assumed; 1.0 is linear)."""
    moves: Mapping[int, float] = dataclasses.field(default_factory=dict)
    """Other pools it may grow onto by moving there: pool -> per-device throughput."""
    restart_s: float = RESTART_S
    """What one relaunch costs it, seconds (the decisions' ``restart_s`` when they are
    given none; a job file's ``restart_s``, assumed)."""

    def rate(self, n: int, pool: int | None = None) -> float:
        per = self.per_device if pool is None or pool == self.pool else self.moves[pool]
        return n * per * self.scaling ** max(n - 1, 0)

    def time_on(self, n: int, pool: int | None = None) -> float:
        """Seconds to finish on ``n`` devices of its pool (or ``pool``); inf on none."""
        r = self.rate(n, pool)
        return self.remaining / r if r > 0 else math.inf


@dataclasses.dataclass(frozen=True, kw_only=True)
class Resize:
    """One decision: ``action`` is ``shrink``, ``grow`` or ``requeue`` (of a running job),
    ``start`` or ``wait`` (of a waiting one, :func:`on_start`)."""

    job: str
    action: str
    old: int
    new: int
    reason: str
    gain_s: float
    pool: int | None = None
    """The pool whose free devices a grow or a start takes."""

    def key(self) -> tuple[str, str, int, int]:
        """What two runs of the same trace must agree on."""
        return (self.job, self.action, self.old, self.new)


def expected_wait(now: float, need: int, free_now: int,
                  frees: Iterable[tuple[float, int]]) -> float:
    """Seconds until ``need`` devices are free, given ``free_now`` and the (time, devices)
    the running jobs free when they end (their ETAs); inf when they never add up."""
    have = free_now
    if have >= need:
        return 0.0
    for t, n in sorted(frees):
        have += n
        if have >= need:
            return max(t - now, 0.0)
    return math.inf


def on_loss(job: ElasticJob, lost: int, wait_s: float, why: str,
            restart_s: float | None = None) -> Resize:
    """Shrink to the devices left, or requeue for the full count (see the module doc);
    ``restart_s``: None for the job's own."""
    restart_s = job.restart_s if restart_s is None else restart_s
    left = job.size - lost
    full = wait_s + restart_s + job.time_on(job.size)
    if left < max(job.lo, 1):
        return Resize(job=job.id, action="requeue", old=job.size, new=0,
                      reason=f"{why}; {left} device(s) left < min_devices = {job.lo}",
                      gain_s=0.0)
    small = restart_s + job.time_on(left)
    if small <= full:
        gain = full - small
        return Resize(job=job.id, action="shrink", old=job.size, new=left,
                      reason=f"{why}; {left} device(s) left end it sooner than waiting "
                      f"{_s(wait_s)} for {job.size}", gain_s=gain)
    return Resize(job=job.id, action="requeue", old=job.size, new=0,
                  reason=f"{why}; waiting {_s(wait_s)} for {job.size} device(s) ends it "
                  f"sooner than {left}", gain_s=small - full)


def loss_decision(job: ElasticJob, lost: int, now: float, free: Mapping[int, int],
                  ends: Iterable[tuple[int, float, int]], options: Iterable[int], why: str,
                  restart_s: float | None = None) -> Resize:
    """:func:`on_loss` with the wait for the job's full count taken over the pools it may
    use: ``free`` devices per pool now (its own devices left count as free in its pool,
    as a requeue releases them) and ``ends``, the (pool, ETA, devices) of the other running
    jobs."""
    left = job.size - lost
    ends = list(ends)
    wait = min((expected_wait(now, job.size,
                              free.get(q, 0) + (left if q == job.pool else 0),
                              [(t, n) for p, t, n in ends if p == q]) for q in options),
               default=math.inf)
    return on_loss(job, lost, wait, why, restart_s)


def on_start(job: ElasticJob, now: float, free: Mapping[int, int],
             ends: Iterable[tuple[int, float, int]], options: Iterable[int],
             restart_s: float | None = None, min_gain_s: float = 0.0) -> Resize | None:
    """Start waiting ``job`` (``size``: the count it asks for; ``pool`` and ``moves``: the
    per-device rate of each pool in ``options``) on fewer devices now, or wait for its full
    count (see the module doc); None when no pool has ``min_devices`` free, or when one
    has its full count (the policy's placement decides that). ``free``:
    devices free per pool now; ``ends``: the (pool, ETA, devices) of the running jobs."""
    ends, size = list(ends), job.size
    restart_s = job.restart_s if restart_s is None else restart_s
    opts = [q for q in options if q == job.pool or q in job.moves]
    if any(free.get(q, 0) >= size for q in opts):
        return None  # it fits whole: placing it (or not) is the policy's decision

    waits = {q: expected_wait(now, size, free.get(q, 0), [(t, n) for p, t, n in ends if p == q])
             for q in opts}
    full, full_wait = min(((w + job.time_on(size, q), w) for q, w in waits.items()),
                          default=(math.inf, math.inf))
    best: tuple[float, int, int, float] | None = None  # (end, pool, devices, wait)
    for q in opts:
        k = min(free.get(q, 0), size - 1)
        if k < max(job.lo, 1):
            continue
        small, w = job.time_on(k, q), math.inf
        for g, wg in waits.items():  # it grows where its full count is free first (a move)
            done = job.rate(k, q) * wg
            if done < job.remaining:
                end = wg + restart_s + (job.remaining - done) / job.rate(size, g)
                small, w = (end, wg) if end < small else (small, w)
        if best is None or (small, q) < (best[0], best[1]):
            best = (small, q, k, w)
    if best is None:
        return None
    small, q, k, w = best
    gain = full - small if math.isfinite(small) else 0.0
    if gain > min_gain_s:
        grows = f", growing when {size} are free (in {_s(w)})" if math.isfinite(w) else ""
        return Resize(job=job.id, action="start", old=0, new=k, pool=q, gain_s=gain,
                      reason=f"{k} of {size} device(s) free now{grows}: predicted to end "
                      f"{_s(gain)} sooner than waiting {_s(full_wait)} for {size}")
    return Resize(job=job.id, action="wait", old=0, new=0, pool=q, gain_s=gain,
                  reason=f"waiting {_s(full_wait)} for {size} device(s) ends it "
                  f"{_s(-gain)} sooner than starting on {k} now")


def grow(jobs: Sequence[ElasticJob], free: Mapping[int, int], *,
         restart_s: float | None = None, min_gain_s: float = 0.0) -> list[Resize]:
    """Free devices per pool -> the grows that gain most (at most one per job). A job
    grows on its own pool (its devices plus free ones) or, when it lists other pools in
    ``moves``, by moving to one whose free devices alone exceed its size (a shrunk job
    whose own pool has no device left to give)."""
    left = dict(free)
    out: list[Resize] = []
    todo = [j for j in jobs if j.size < j.hi]
    while todo:
        best: tuple[float, str, ElasticJob, int, int] | None = None
        for j in todo:
            for q, n in _targets(j, left):
                gain = j.time_on(j.size) - (j.restart_s if restart_s is None else
                                            restart_s) - j.time_on(n, q)
                if gain > min_gain_s and (best is None or (gain, j.id) > (best[0], best[1])):
                    best = (gain, j.id, j, q, n)
        if best is None:
            break
        gain, _, j, q, n = best
        left[q] -= n - (j.size if q == j.pool else 0)
        where = "" if q == j.pool else f" on pool {q} (a move)"
        out.append(Resize(job=j.id, action="grow", old=j.size, new=n, pool=q,
                          reason=f"{n - j.size if q == j.pool else n} device(s) free{where}; "
                          f"predicted to end {_s(gain)} sooner", gain_s=gain))
        todo = [x for x in todo if x.id != j.id]
    return out


def _targets(j: ElasticJob, left: Mapping[int, int]) -> list[tuple[int, int]]:
    """(pool, devices) a job could grow to with the free devices ``left``."""
    out = []
    k = min(left.get(j.pool, 0), j.hi - j.size)
    if k > 0:
        out.append((j.pool, j.size + k))
    for q in j.moves:
        n = min(left.get(q, 0), j.hi)
        if q != j.pool and n > j.size:
            out.append((q, n))
    return out


def _s(x: float) -> str:
    return "forever" if math.isinf(x) else f"{x:.0f} s"
