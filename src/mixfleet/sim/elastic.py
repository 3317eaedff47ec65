"""Elastic jobs in the simulator: a replay of drains and freed devices under the resize
decisions of :mod:`mixfleet.fleet.elastic` (the live scheduler's own), so simulation and
live stay one policy (docs/fleet-elastic.md).

The model is the live fleet's: a job runs on ``size`` devices of one pool at
``rate(size)``; a drain takes one of its devices out of the pool for good and asks
:func:`~mixfleet.fleet.elastic.loss_decision` (shrink, or requeue for the full count); a
freed device (``free`` event) and a job's end free devices, which go first to waiting
jobs (first come, at their full count, on the first pool that has room), then to waiting
elastic jobs that :func:`~mixfleet.fleet.elastic.on_start` starts on fewer devices (first
come, never on a pool a job ahead of it waits for), and then to
:func:`~mixfleet.fleet.elastic.grow`. Each relaunch stalls the job
``restart_s``.

A job that carries a ``rate`` (its predicted throughput on any split of devices over
pools, which then also sets its pace and ETA) and allows several pools is a mixed-kind
candidate: when it still waits after the
single-pool placements, :func:`~mixfleet.fleet.mixing.mix_decision` (the live scheduler's
own) may start it at once on free devices of two or more pools. A mixed run is never
grown; a drain under it takes one device of the drained pool (the run's own launcher
relaunching on the ranks left), as in the live fleet.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from mixfleet.errors import ConfigError
from mixfleet.fleet.elastic import RESTART_S, ElasticJob, Resize, grow, loss_decision, on_start
from mixfleet.fleet.mixing import MixDecision, MixJob, RateFn, Split, mix_decision

__all__ = ["TraceJob", "TraceEvent", "ElasticResult", "replay"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TraceJob:
    id: str
    size: int
    lo: int
    hi: int
    work: float
    """Work, samples."""
    per_device: tuple[float, ...]
    """Samples/s of one device, per pool."""
    options: tuple[int, ...]
    """Pools it may run on, in order of preference."""
    elastic: bool = True
    """False: a drain always requeues it (today's behaviour, the baseline)."""
    rate: RateFn | None = None
    """Predicted samples/s on a split ``((pool, devices), ...)``: the job may be mixed
    over its ``options`` (None: one pool at a time)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TraceEvent:
    t: float
    kind: str
    """``drain`` (one device of ``job``) or ``free`` (``n`` devices of ``pool``)."""
    job: str = ""
    pool: int = 0
    n: int = 1


@dataclasses.dataclass
class _Run:
    job: TraceJob
    left: float
    pool: int | None = None
    size: int = 0
    stall_until: float = 0.0
    end: float | None = None
    split: Split = ()
    """Its devices per pool when it runs mixed (empty: ``size`` of ``pool``)."""

    def parts(self) -> Split:
        return self.split or (((self.pool or 0), self.size),)


@dataclasses.dataclass(frozen=True)
class ElasticResult:
    decisions: list[tuple[float, Resize]]
    jct: dict[str, float]
    """Completion time of each job (all arrive at 0)."""
    mixes: list[tuple[float, MixDecision]] = dataclasses.field(default_factory=list)
    """Each start on several kinds, and each job's first decision to wait instead (the
    live fleet's ``mixed`` and ``mix_declined`` events)."""


def replay(capacity: Sequence[int], jobs: Sequence[TraceJob], events: Sequence[TraceEvent],
           *, restart_s: float = RESTART_S, blocked: Sequence[int] | None = None
           ) -> ElasticResult:
    """Run ``jobs`` (all submitted at 0, placed first come) through ``events``."""
    free = [c - b for c, b in zip(capacity, blocked or [0] * len(capacity), strict=True)]
    runs = {j.id: _Run(job=j, left=j.work) for j in jobs}
    waiting = [j.id for j in jobs]
    out: list[tuple[float, Resize]] = []
    mixes: list[tuple[float, MixDecision]] = []
    declined: set[str] = set()
    todo = sorted(events, key=lambda e: e.t)
    for e in todo:
        if e.kind not in ("drain", "free") or e.kind == "drain" and e.job not in runs:
            raise ConfigError(f"trace event {e!r}: kind must be drain (of a job) or free")
    now = 0.0

    def view(r: _Run, pool: int | None = None) -> ElasticJob:
        """The job as the decisions see it: on its pool, or waiting (``pool``: the first
        it may use, ``size`` the count it asks for)."""
        p = r.pool if pool is None else pool
        assert p is not None
        return ElasticJob(id=r.job.id, pool=p, size=r.size if pool is None else r.job.size,
                          lo=r.job.lo, hi=r.job.hi, remaining=r.left,
                          per_device=r.job.per_device[p],
                          moves={q: r.job.per_device[q] for q in r.job.options if q != p})

    def running_ends(but: _Run | None = None) -> list[tuple[int, float, int]]:
        """(pool, ETA, devices) of each running job (a mixed one: per pool) but ``but``."""
        return [(q, finish_at(x), n) for x in runs.values()
                if x.pool is not None and x.end is None and x is not but
                for q, n in x.parts()]

    def settle(t: float) -> None:
        for w in list(waiting):
            r = runs[w]
            p = next((q for q in r.job.options if free[q] >= r.job.size), None)
            if p is not None:
                waiting.remove(w)
                r.pool, r.size, r.stall_until = p, r.job.size, t + (restart_s if r.left <
                                                                      r.job.work else 0.0)
                free[p] -= r.size
        for w in list(waiting):
            r = runs[w]
            if r.job.rate is None or len(r.job.options) < 2:
                continue
            m = mix_decision(MixJob(id=w, size=r.job.size, remaining=r.left,
                                    options=r.job.options), t, dict(enumerate(free)),
                             running_ends(), r.job.rate)
            if m is not None and m.action != "mix" and w not in declined:
                declined.add(w)
                mixes.append((t, m))
            if m is None or m.action != "mix":
                continue
            waiting.remove(w)
            for q, n in m.split:
                free[q] -= n
            r.pool, r.size, r.split = m.split[0][0], r.job.size, m.split
            r.stall_until = t + (restart_s if r.left < r.job.work else 0.0)
            mixes.append((t, m))
        claimed: set[int] = set()  # pools a job ahead in the queue waits for
        for w in list(waiting):  # an elastic job on the devices free now, or it waits
            r = runs[w]
            opts = [q for q in r.job.options if q not in claimed]
            s = (on_start(view(r, r.job.options[0]), t, dict(enumerate(free)),
                          running_ends(), opts, restart_s)
                 if r.job.elastic and r.job.lo < r.job.size and opts else None)
            if s is None or s.action != "start" or s.pool is None:
                claimed |= set(r.job.options)
                continue
            waiting.remove(w)
            free[s.pool] -= s.new
            r.pool, r.size = s.pool, s.new
            r.stall_until = t + (restart_s if r.left < r.job.work else 0.0)
            out.append((t, s))
        busy = {q for w in waiting for q in runs[w].job.options}
        room = {q: n for q, n in enumerate(free) if n > 0 and q not in busy}
        live = [view(r) for r in runs.values() if r.pool is not None and r.end is None
                and r.job.elastic and not r.split]
        for d in grow(live, room, restart_s=restart_s):
            r = runs[d.job]
            q = (r.pool or 0) if d.pool is None else d.pool
            free[r.pool or 0] += r.size
            free[q] -= d.new
            r.pool, r.size, r.stall_until = q, d.new, t + restart_s
            out.append((t, d))

    def speed(r: _Run) -> float:
        if r.job.rate is not None:  # the job's own prediction, mixed or not
            return r.job.rate(r.parts())
        return view(r).rate(r.size)

    def finish_at(r: _Run) -> float:
        return max(r.stall_until, now) + r.left / max(speed(r), 1e-12)

    settle(0.0)
    while any(r.end is None for r in runs.values()):
        running = [r for r in runs.values() if r.pool is not None and r.end is None]
        nxt = min((finish_at(r) for r in running), default=math.inf)
        t = min(nxt, todo[0].t if todo else math.inf)
        if math.isinf(t):
            raise ConfigError(f"jobs {waiting} can never run on capacity {list(capacity)}")
        for r in running:
            r.left = max(r.left - max(t - max(r.stall_until, now), 0.0) * speed(r), 0.0)
        now = t
        for r in running:
            if r.left <= 1e-9 * r.job.work:
                r.end = t
                for q, n in r.parts():
                    free[q] += n
        while todo and todo[0].t <= t:
            e = todo.pop(0)
            if e.kind == "free":
                free[e.pool] += e.n
                continue
            r = runs[e.job]
            if r.pool is None or r.end is not None:
                continue
            if r.split:  # the run's own launcher goes on with the ranks left
                r.split = _less(r.split, e.pool)
                r.size, r.stall_until = r.size - 1, t + restart_s
                if len(r.split) == 1:
                    r.pool, r.split = r.split[0][0], ()
                continue
            why = "a device was drained"
            d = (loss_decision(view(r), 1, t, dict(enumerate(free)), running_ends(r),
                               r.job.options, why, restart_s) if r.job.elastic else
                 Resize(job=r.job.id, action="requeue", old=r.size, new=0, reason=why,
                        gain_s=0.0))
            out.append((t, d))
            if d.action == "shrink":
                r.size, r.stall_until = d.new, t + restart_s
            else:
                free[r.pool] += r.size - 1
                r.pool, r.size = None, 0
                waiting.append(r.job.id)
        settle(t)
    return ElasticResult(decisions=out, jct={k: r.end or 0.0 for k, r in runs.items()},
                         mixes=mixes)


def _less(split: Split, pool: int) -> Split:
    """``split`` less one device of ``pool`` (of its largest part when it has none)."""
    q = pool if any(p == pool for p, _ in split) else max(split, key=lambda x: (x[1], -x[0]))[0]
    return tuple((p, n - (p == q)) for p, n in split if n - (p == q) > 0)
