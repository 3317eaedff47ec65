"""Elastic jobs in the live scheduler: shrink on a drained chip or a lost node, grow on
free devices, with the decisions of :mod:`mixfleet.fleet.elastic` (the simulator's own) and
every resize persisted step by step in SQLite (docs/fleet-elastic.md).

- A drain under an elastic job: the decision is taken when the run's block list shows it.
  ``shrink``: the attempt goes on, its launcher relaunching the ranks left from the newest
  snapshot with the same global batches (mixfleet train's own relaunch); recorded as a
  resize, done at once. ``requeue``: the attempt is stopped and the job waits for its count.
- A lost node under an elastic job: ``shrink`` starts a new attempt on the devices left;
  ``requeue`` is the scheduler's usual path.
- A waiting elastic job that no pool can take at its full count:
  :func:`~mixfleet.fleet.elastic.on_start` may start it on the devices free now (at least
  ``min_devices``; an ``elastic_start`` event with the reason and predicted gain), after
  the policy's placements and the mixed-kind starts, first come, never on a pool that a
  job ahead of it in the queue waits for.
- Free devices that no queued job may use: :func:`~mixfleet.fleet.elastic.grow` picks the
  jobs that gain most; each is stopped and relaunched on its devices plus the new ones.

A relaunching resize is ``planned`` -> ``launching`` -> ``done`` in the ``resizes`` table
(:mod:`mixfleet.live.resizes`); :meth:`ElasticScheduling.resume_resizes` carries on any
that a killed scheduler left half done, before anything else is looked at.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mixfleet.errors import MixfleetError
from mixfleet.fleet.elastic import ElasticJob, Resize, grow, loss_decision, on_start
from mixfleet.live.backend import pick_devices
from mixfleet.live.estimate import attempt_rate, last_step
from mixfleet.live.store import AttemptRow, JobRow
from mixfleet.train.mixed.blocklist import read_entries

if TYPE_CHECKING:
    from mixfleet.live.backend import Backend, NodeInfo
    from mixfleet.live.estimate import Estimates
    from mixfleet.live.spec import FleetSpec, PoolSpec
    from mixfleet.live.store import Store

__all__ = ["ElasticScheduling", "live_slots", "live_items", "live_indices"]

T = TypeVar("T")


def live_slots(a: AttemptRow, run_root: Path) -> list[tuple[str, int]]:
    """The attempt's devices still in use: its slots less those drained in it (each
    block-list entry's rank indexes the ranks left after the drains before it)."""
    return live_items(a, list(a.slots), run_root)


def live_items(a: AttemptRow, items: list[T], run_root: Path) -> list[T]:
    """``items``, one per slot of ``a`` (its slots, their pools), less the drained ones."""
    return [items[i] for i in live_indices(a, run_root)]


def live_indices(a: AttemptRow, run_root: Path) -> list[int]:
    """The indices of ``a``'s slots still in use (one read of the block list: take every
    per-slot list through the same indices)."""
    idx = list(range(len(a.slots)))
    try:
        entries = read_entries(run_root)
    except (OSError, MixfleetError):
        return idx
    for e in [e for e in entries if e.get("t", 0) >= a.started][:a.drains_seen]:
        r = int(e.get("rank", -1))
        if 0 <= r < len(idx):
            idx.pop(r)
    return idx


class ElasticScheduling:
    """The elastic part of :class:`mixfleet.live.scheduler.Scheduler` (a mixin)."""

    store: Store
    backend: Backend
    fleet: FleetSpec
    est: Estimates
    dir: Path
    clock: Callable[[], float]
    _index: dict[str, int]
    _inv: list[NodeInfo]

    if TYPE_CHECKING:
        def _free_slots(self, inv: list[NodeInfo]) -> dict[str, dict[str, list[int]]]: ...
        def _capacity(self, inv: list[NodeInfo]) -> dict[str, int]: ...
        def _launch(self, job: JobRow, pool: PoolSpec, slots: list[tuple[str, int]],
                    aid: int) -> None: ...
        def _mixed_ends(self, a: AttemptRow, job: JobRow, now: float
                        ) -> list[tuple[int, float, int]]: ...
        def _start(self, job: JobRow, pool: PoolSpec, slots: list[tuple[str, int]],
                   handle: dict[str, Any] | None = None) -> None: ...

    # -- what the decisions see -----------------------------------------------------------
    def _rd(self, jid: str) -> Path:
        return self.dir / "jobs" / jid / "run"

    def _left(self, job: JobRow) -> float:
        s = job.spec
        return max(s.steps - last_step(self._rd(job.id)), 0) * s.global_batch

    def _view(self, job: JobRow, pool: str, size: int, a: AttemptRow | None = None
              ) -> ElasticJob:
        """What the decisions see of ``job`` on ``size`` devices of ``pool``: throughputs
        from the attempts that ended; where none ended on its pool yet, the running
        attempt ``a``'s own steps so far (the fleet measured them; a nominal figure can be
        off by any factor), the other pools scaled from it by their chips' speeds."""
        p = self._index[pool]
        w = job.spec.workload
        per, origin = self.est.per_device(w, p)
        live = (attempt_rate(self._rd(job.id), a.started, None)
                if a is not None and origin == "estimated" else None)
        moves = {}
        for i, q in enumerate(self.fleet.pools):
            if i != p and job.spec.fits(q):
                rate, o = self.est.per_device(w, i)
                moves[i] = (live / len(a.slots) * self.est.chip[i] / self.est.chip[p]
                            if live and a is not None and o == "estimated" else rate)
        if live and a is not None:
            per = live / len(a.slots)
        return ElasticJob(id=job.id, pool=p, size=size, lo=job.spec.lo, hi=job.spec.hi,
                          remaining=self._left(job), per_device=per, moves=moves,
                          restart_s=job.spec.restart_s)

    def _ends(self, but: str) -> list[tuple[int, float, int]]:
        """(pool, ETA, devices) of every other running job (a mixed one: per pool it holds
        devices of, :meth:`~mixfleet.live.mixkind.MixedScheduling._mixed_ends`)."""
        now, out = self.clock(), []
        for a in self.store.attempts(states=("running",)):
            job = self.store.job(a.job_id)
            if a.job_id == but or job is None:
                continue
            if a.handle.get("pools"):
                out += self._mixed_ends(a, job, now)
                continue
            size = len(a.slots) - a.drains_seen
            v = self._view(job, a.pool, size, a)
            out.append((v.pool, now + v.time_on(size), size))
        return out

    def _loss(self, a: AttemptRow, job: JobRow, lost: int, why: str) -> Resize:
        size = len(a.slots) - a.drains_seen
        free = {self._index[p]: sum(len(v) for v in nodes.values())
                for p, nodes in self._free_slots(self._inv).items()}
        cap = self._capacity(self._inv)
        opts = [i for i, p in enumerate(self.fleet.pools)
                if job.spec.fits(p) and cap[p.id] >= size]
        return loss_decision(self._view(job, a.pool, size, a), lost, self.clock(), free,
                             self._ends(job.id), opts, why)

    def _record(self, a: AttemptRow, job: JobRow, d: Resize, slots: list[tuple[str, int]],
                done: bool, drains: int | None = None, pool: str | None = None) -> int:
        return self.store.plan_resize(job.id, a.id, pool or a.pool, slots, action=d.action,
                                      old=d.old, new=d.new, reason=d.reason,
                                      gain_s=d.gain_s, done=done, drains=drains)

    # -- losses -----------------------------------------------------------------------------
    def _after_drain(self, a: AttemptRow, job: JobRow, new: int) -> bool:
        """``new`` devices of ``a`` were just drained (not yet counted as seen: the
        decision counts them in its own transaction); True when the job was requeued."""
        d = self._loss(a, job, new, f"{new} device(s) drained")
        seen = a.drains_seen + new
        left = live_slots(dataclasses.replace(a, drains_seen=seen), self._rd(job.id))
        # a shrink is done at once: the run's own launcher relaunches on the devices left
        rid = self._record(a, job, d, left, done=d.action == "shrink", drains=seen)
        if d.action == "shrink":
            return False
        self._carry_out(rid)
        return True

    def _after_node_loss(self, a: AttemptRow, job: JobRow, dead: list[str]) -> None:
        """Nodes ``dead`` left under ``a``: resize it onto the devices left, or requeue."""
        slots = live_slots(a, self._rd(job.id))
        left = [s for s in slots if s[0] not in dead]
        d = self._loss(a, job, len(slots) - len(left),
                       f"node(s) {', '.join(dead)} left the cluster")
        self._carry_out(self._record(a, job, d, left, done=False))

    # -- starts below the full count ---------------------------------------------------------
    def _start_small(self, inv: list[NodeInfo], free: dict[str, dict[str, list[int]]],
                     waiting: list[JobRow]) -> None:
        """Start each waiting elastic job on fewer devices than it asks for when
        :func:`~mixfleet.fleet.elastic.on_start` says so (first come); ``free``: the free
        devices per pool and node left after the other placements (taken ones leave it)."""
        cap = self._capacity(inv)
        claimed: set[int] = set()  # pools a job ahead in the queue waits for
        for job in waiting:
            s = job.spec
            mine = [i for i, p in enumerate(self.fleet.pools)
                    if s.fits(p) and cap[p.id] >= max(s.lo, 1)]
            opts = [i for i in mine if i not in claimed]
            d = None
            if s.elastic and s.lo < job.devices and opts:
                view = self._view(job, self.fleet.pools[opts[0]].id, job.devices)
                counts = {self._index[p]: sum(len(v) for v in nodes.values())
                          for p, nodes in free.items()}
                d = on_start(view, self.clock(), counts, self._ends(job.id), opts)
            if d is None or d.action != "start" or d.pool is None:
                claimed |= set(mine)
                continue
            pool = self.fleet.pools[d.pool]
            slots = pick_devices(free[pool.id], d.new)
            assert slots is not None  # on_start counted these free devices
            self.store.event("elastic_start", job.id, None, devices=d.new, of=job.devices,
                             pool=pool.id, reason=d.reason,
                             gain_s=round(d.gain_s, 1) if math.isfinite(d.gain_s) else None)
            self._start(job, pool, slots)

    # -- growth -----------------------------------------------------------------------------
    def _grow(self, inv: list[NodeInfo]) -> None:
        running = [a for a in self.store.attempts(states=("running",))
                   if not a.handle.get("pending") and not a.handle.get("pools")]  # not mixed
        jobs = {a.job_id: self.store.job(a.job_id) for a in running}
        cands = [(a, j) for a in running if (j := jobs[a.job_id]) is not None
                 and j.spec.elastic and not j.cancel
                 and len(a.slots) - a.drains_seen < j.spec.hi]
        if not cands:
            return
        free = self._free_slots(inv)
        cap = self._capacity(inv)
        busy = {p.id for j in self.store.jobs(("queued",)) if not j.cancel
                for p in self.fleet.pools if j.spec.fits(p) and cap[p.id] >= j.devices}
        room = {self._index[p]: n for p, nodes in free.items()
                if p not in busy and (n := sum(len(v) for v in nodes.values())) > 0}
        if not room:
            return
        views = [self._view(j, a.pool, len(a.slots) - a.drains_seen, a) for a, j in cands]
        byid = {j.id: (a, j) for a, j in cands}
        for d in grow(views, room):
            a, j = byid[d.job]
            pid = a.pool if d.pool is None else self.fleet.pools[d.pool].id
            if pid == a.pool:
                got = pick_devices(free[pid], d.new - d.old)
                slots = None if got is None else live_slots(a, self._rd(j.id)) + got
            else:  # a move: all its devices on the other pool
                slots = pick_devices(free[pid], d.new)
            if slots is None:
                continue
            self._carry_out(self._record(a, j, d, slots, done=False, pool=pid))

    # -- carrying a resize out (and on, after a restart) ------------------------------------
    def resume_resizes(self) -> None:
        """Finish every resize a killed scheduler left ``planned`` or ``launching``."""
        for r in self.store.resizes(states=("planned", "launching")):
            self._carry_out(r.id)

    def _carry_out(self, rid: int) -> None:
        (r,) = [x for x in self.store.resizes(states=("planned", "launching")) if x.id == rid]
        job = self.store.job(r.job_id)
        assert job is not None
        if r.action == "requeue":  # stop the attempt, the job waits for its full count
            old = [a for a in self.store.attempts(job.id) if a.id == r.old_aid]
            if old and old[0].state == "running":
                self.backend.stop(old[0].handle)
                self.store.end_attempt(old[0].id, state="lost", rc=None,
                                       reason=f"requeued: {r.reason}", job_state="queued",
                                       max_restarts=job.spec.max_restarts)
            self.store.finish_resize(rid)
            return
        if r.state == "planned":
            old = [a for a in self.store.attempts(job.id) if a.id == r.old_aid]
            if old and old[0].state == "running":
                self.backend.stop(old[0].handle)
            self.store.switch_attempt(rid)
            (r,) = [x for x in self.store.resizes(job.id) if x.id == rid]
        new = [a for a in self.store.attempts(job.id) if a.id == r.new_aid]
        if not new or new[0].state != "running":
            self.store.finish_resize(rid, "abandoned")
            return
        h: dict[str, Any] = new[0].handle
        if h.get("pending"):
            self.backend.stop(h)  # whatever a start cut short left behind
            self._launch(job, self.fleet.pool(r.pool), r.slots, new[0].id)
        self.store.finish_resize(rid)
