"""``mixfleet plan``: one placement of a list of jobs, and the Nvidia capacity it spares."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mixfleet.fleet.model import Fleet, Job
from mixfleet.fleet.policies.base import Policy, Snapshot, fit_options

__all__ = ["Placement", "PlanResult", "plan", "idle_pools"]


@dataclasses.dataclass(kw_only=True)
class PlanJob:
    """A job as a policy sees it (:class:`JobView`), mutable while a plan is built."""

    id: str
    workload: str
    devices: int
    mem_gib: float
    priority: int
    arrival_s: float
    remaining: float
    options: tuple[int, ...]
    run_s: list[float]
    pool: int | None = None
    eta: float = float("inf")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Placement:
    """Where one job goes."""

    job: Job
    status: str  # placed | queued | unplaceable
    pool: str | None
    chip: str | None
    speed: float | None
    """Throughput of one device there, relative to the reference chip."""
    hours: float | None
    """Expected wall hours there without failures."""
    nvidia_hours_replaced: float
    """Nvidia device-hours the job would need on the fastest Nvidia pool it fits (else the
    reference chip), when it is placed on a non-Nvidia pool; else 0."""
    reason: str = ""
    origin: str | None = None
    """Origin of ``speed``: measured, emulated, estimated or assumed (a fleet file's
    [pool.assumption], never a measurement); None when unknown or not placed."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanResult:
    policy: str
    placements: list[Placement]

    @property
    def nvidia_hours_replaced(self) -> float:
        return sum(p.nvidia_hours_replaced for p in self.placements)


def idle_pools(fleet: Fleet, speeds: dict[str, tuple[float | None, ...]]) -> list[int]:
    """Pools with no throughput figure for any workload (they can take no job)."""
    return [i for i in range(len(fleet.pools))
            if all(s[i] is None for s in speeds.values())]


def plan(fleet: Fleet, jobs: Sequence[Job], policy: Policy,
         speeds: dict[str, tuple[float | None, ...]],
         origins: dict[str, tuple[str | None, ...]] | None = None) -> PlanResult:
    """Ask ``policy`` once, at time 0, where all ``jobs`` go. ``origins`` (from
    :func:`mixfleet.fleet.speeds.origin_matrix`) labels each placement's speed."""
    from mixfleet.fleet.policies.base import pool_views

    pools = pool_views(fleet)
    views: list[PlanJob] = []
    why: dict[str, str] = {}
    for j in jobs:
        sp = speeds.get(j.workload) or (None,) * len(pools)
        opts, reason = fit_options(pools, sp, j.devices, j.mem_gib)
        if not opts:
            why[j.id] = reason
            continue
        views.append(PlanJob(id=j.id, workload=j.workload, devices=j.devices,
                              mem_gib=j.mem_gib, priority=j.priority, arrival_s=0.0,
                              remaining=j.work, options=opts, run_s=[0.0] * len(pools)))
    snap = Snapshot(time=0.0, pools=pools, jobs=views, speed=speeds)
    alloc = policy.allocate(snap) if views else {}
    out: list[Placement] = []
    for j in jobs:
        if j.id in why:
            out.append(Placement(job=j, status="unplaceable", pool=None, chip=None, speed=None,
                                 hours=None, nvidia_hours_replaced=0.0, reason=why[j.id]))
            continue
        p = alloc.get(j.id)
        if p is None:
            out.append(Placement(job=j, status="queued", pool=None, chip=None, speed=None,
                                 hours=None, nvidia_hours_replaced=0.0,
                                 reason="no room now under this policy"))
            continue
        sp = speeds[j.workload]
        s = sp[p] or 0.0
        replaced = 0.0
        if not pools[p].is_nvidia:
            nv = [sp[q.index] or 0.0 for q in pools if q.is_nvidia and q.index in
                  fit_options(pools, sp, j.devices, j.mem_gib)[0]]
            replaced = j.work / (max(nv) if nv else 1.0) / 3600.0
        out.append(Placement(job=j, status="placed", pool=pools[p].id, chip=pools[p].chip,
                             speed=s, hours=j.work / (j.devices * s) / 3600.0,
                             nvidia_hours_replaced=replaced,
                             origin=(origins or {}).get(j.workload, (None,) * len(pools))[p]))
    return PlanResult(policy=policy.name, placements=out)
