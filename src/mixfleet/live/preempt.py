"""The policy's stops and moves of running jobs, carried out by the live scheduler (the
simulator's, :mod:`mixfleet.sim.engine`, on real processes; docs/fleet-live.md, "Stops and
moves").

A non-preemptive policy that moves jobs (``moves = True``, as ``goodput``) may answer, for a
running job, ``STOP`` (it saves its state and waits) or another pool (a move). The
scheduler reads them as the simulator does: a stop only of a running job, a move only to
a pool in the job's options, only for such a policy; a job the policy leaves where it is
keeps running. Each is carried out before the starts of the same decision (they may need
the devices it frees):

- **stop**: the attempt's processes are stopped (SIGTERM: each rank persists its newest
  in-memory snapshot, the dying gasp), the attempt ends ``preempted`` and the job goes back
  to the queue with its run directory, so its next attempt resumes from that snapshot or
  its newest checkpoint with the same global batches. Not counted as a restart.
- **move**: the same stop, then a new attempt on the other pool's free devices (as many as
  the attempt holds now), from the same run directory.

Churn is limited as in the simulator: the policy is asked at arrivals and ends (and when
the fleet changes), never on a timer, and each stop or move is priced in the policy's own
rule at ``Snapshot.migration_s`` (its default, the simulator's); a job being started, a
mixed-kind job and a job in the middle of a resize are never stopped or moved.

Each action is a row of ``preempts`` (:mod:`mixfleet.live.preempts`), one transaction per
step, with the reason (from the snapshot the policy saw: which waiting job takes the
devices, the estimated times); :meth:`PreemptScheduling.resume_preempts` carries on any
that a killed scheduler left, before anything else is looked at.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixfleet.fleet.policies.base import STOP, Allocation, JobView, Policy, Snapshot
from mixfleet.live.backend import pick_devices
from mixfleet.live.preempts import OPEN, PreemptRow

if TYPE_CHECKING:
    from mixfleet.live.backend import Backend, NodeInfo
    from mixfleet.live.spec import FleetSpec, PoolSpec
    from mixfleet.live.store import AttemptRow, JobRow, Store

__all__ = ["PreemptScheduling", "actions", "explain"]


def actions(policy: Policy, snap: Snapshot, alloc: Allocation) -> list[tuple[JobView, int]]:
    """The stops (``STOP``) and moves (a pool index) in ``alloc``, as the simulator reads
    them: only from a non-preemptive policy that moves jobs, only of running jobs, a move
    only to a pool in the job's options and not its own."""
    if policy.preemptive or not getattr(policy, "moves", False):
        return []
    running = {j.id: j for r in snap.running for j in r}
    out = []
    for jid, p in alloc.items():
        j = running.get(jid)
        if j is None or p == j.pool or (p != STOP and p not in j.options):
            continue
        out.append((j, p))
    return out


def explain(snap: Snapshot, alloc: Allocation, j: JobView, to: int) -> str:
    """Why the policy stops or moves ``j`` (to pool ``to`` or ``STOP``), in the estimated
    figures of the snapshot it decided on."""
    assert j.pool is not None
    ids = [p.id for p in snap.pools]
    here = max(j.eta - snap.time, 0.0)
    takers = [w for w in snap.waiting if alloc.get(w.id) == j.pool]
    cost = f"a restart costs {snap.migration_s:g} s"
    if takers:
        runs = ", ".join(f"{w.id} (est. {_run_s(snap, w, j.pool):.0f} s)" for w in takers)
        what = "stopped" if to == STOP else f"moved {ids[j.pool]} -> {ids[to]}"
        wait = "; it waits with its progress kept" if to == STOP else ""
        return (f"{what} for shorter {runs} on {ids[j.pool]}: this job has est. "
                f"{here:.0f} s left; {cost}{wait}")
    if to == STOP:
        return f"stopped on {ids[j.pool]} with est. {here:.0f} s left; it waits"
    there = _run_s(snap, j, to)
    return (f"moved {ids[j.pool]} -> {ids[to]}: est. {there:.0f} s left there vs "
            f"{here:.0f} s here; {cost}")


def _run_s(snap: Snapshot, j: JobView, pool: int) -> float:
    """Estimated seconds ``j`` runs on ``pool`` (its remaining work at the table's speed)."""
    sp = (snap.speed.get(j.workload) or ())[pool:pool + 1]
    rate = j.devices * (sp[0] or 0.0) if sp else 0.0
    return j.remaining / rate if rate > 0 else float("inf")


class PreemptScheduling:
    """The stop-and-move part of :class:`mixfleet.live.scheduler.Scheduler` (a mixin)."""

    store: Store
    backend: Backend
    fleet: FleetSpec
    policy: Policy
    dir: Path
    clock: Callable[[], float]
    _inv: list[NodeInfo]

    if TYPE_CHECKING:
        def _free_slots(self, inv: list[NodeInfo]) -> dict[str, dict[str, list[int]]]: ...
        def _launch(self, job: JobRow, pool: PoolSpec, slots: list[tuple[str, int]],
                    aid: int) -> None: ...
        def _check_drains(self, a: AttemptRow, job: JobRow, rd: Path,
                          count: bool = True) -> int: ...
        def _observe(self, a: AttemptRow, job: JobRow | None) -> None: ...

    def _stops_and_moves(self, snap: Snapshot, alloc: Allocation) -> None:
        """Carry out the policy's stops and moves of running jobs (before its starts)."""
        acts = actions(self.policy, snap, alloc)
        if not acts:
            return
        busy = {r.job_id for r in self.store.resizes(states=("planned", "launching"))}
        running = {a.job_id: a for a in self.store.attempts(states=("running",))}
        ids = []
        for j, to in acts:
            a = running.get(j.id)
            job = self.store.job(j.id)
            if a is None or job is None or job.cancel or j.id in busy or \
                    a.handle.get("pending") or a.handle.get("pools"):
                continue  # being started, mixed over kinds, or mid-resize: left alone
            pool = None if to == STOP else snap.pools[to].id
            ids.append(self.store.plan_preempt(
                j.id, a.id, action="stop" if to == STOP else "move", src=a.pool, pool=pool,
                reason=f"{self.policy.name}: {explain(snap, alloc, j, to)}"))
        self._carry_out_preempts(ids)

    def resume_preempts(self) -> None:
        """Finish every stop or move a killed scheduler left half done."""
        self._carry_out_preempts([r.id for r in self.store.preempts(states=OPEN)])

    def _rows(self, ids: list[int]) -> list[PreemptRow]:
        want = set(ids)
        return [r for r in self.store.preempts(states=OPEN) if r.id in want]

    def _carry_out_preempts(self, ids: list[int]) -> None:
        """Stop every attempt first, then requeue the stopped jobs, then switch the moved
        ones (each move's devices picked once the others have let theirs go), then start
        them. A move whose pool has no room left after all that waits as a stop."""
        if not ids:
            return
        for r in self._rows(ids):
            if r.state == "launching":
                continue
            (a,) = [x for x in self.store.attempts(r.job_id) if x.id == r.old_aid]
            job = self.store.job(r.job_id)
            if r.state == "planned" and (a.state != "running" or job is None
                                         or self.backend.poll(a.handle).state != "running"):
                self.store.finish_preempt(r.id, "abandoned")  # it ended first: _poll's
                continue
            self.store.mark_stopping(r.id)
            self.backend.stop(a.handle)
            if job is not None and a.state == "running":
                self._check_drains(a, job, self.dir / "jobs" / job.id / "run")
        for r in self._rows(ids):
            if r.action == "stop" and r.state == "stopping":
                self._end_stopped(r)
        moves = [r for r in self._rows(ids) if r.action == "move"]
        while True:  # a move may need the devices another move frees
            switched = False
            for r in [r for r in moves if r.state == "stopping"]:
                (a,) = [x for x in self.store.attempts(r.job_id) if x.id == r.old_aid]
                size = len(a.slots) - a.drains_seen
                free = self._free_slots(self._inv)
                slots = pick_devices(free.get(r.pool or "", {}), size)
                if slots is not None and self.store.switch_moved(r.id, slots):
                    self._observe(a, self.store.job(r.job_id))
                    switched = True
            moves = self._rows([r.id for r in moves])
            if not switched:
                break
        for r in moves:
            if r.state == "stopping":  # no room left there: it waits instead
                self._end_stopped(r, f"; no room left on {r.pool}, so it waits")
            elif r.state == "launching":
                self._launch_moved(r)

    def _end_stopped(self, r: PreemptRow, note: str = "") -> None:
        (a,) = [x for x in self.store.attempts(r.job_id) if x.id == r.old_aid]
        if self.store.requeue_preempted(r.id, note):
            self._observe(a, self.store.job(r.job_id))

    def _launch_moved(self, r: PreemptRow) -> None:
        job = self.store.job(r.job_id)
        new = [a for a in self.store.attempts(r.job_id) if a.id == r.new_aid]
        if job is None or not new or new[0].state != "running" or r.pool is None:
            self.store.finish_preempt(r.id, "abandoned")
            return
        h: dict[str, Any] = new[0].handle
        if h.get("pending"):
            self.backend.stop(h)  # whatever a start cut short left behind
            self._launch(job, self.fleet.pool(r.pool), r.slots, new[0].id)
        self.store.finish_preempt(r.id)
