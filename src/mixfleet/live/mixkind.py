"""Mixed-kind jobs in the live scheduler: a waiting job that allows several chip kinds
(``[job] kinds``) started at once on free devices of two or more kinds, when the decision of
:mod:`mixfleet.fleet.mixing` (the simulator's own) predicts it ends sooner than waiting for
devices of one kind (docs/fleet-elastic.md).

The job's throughput on a split of devices over pools is the per-job cost model's
(:func:`cost_rate`: :func:`mixfleet.train.autoplan.plan_run` on ranks of those chips, the
job's own parallel mode or, under ``auto``, the fastest plan that fits), in samples/s.
A mixed attempt is one ``mixfleet train`` with ``--ranks`` naming each rank's device
(its ``[[ranks]]``: ``emu:<chip>`` on emulated pools), run on one machine: all its
devices on the fleet's virtual nodes (the embedded and local fleets) or on one node of a
cluster. Its pool per slot is kept in its handle (``pools``); it is never resized by the
scheduler (a drain under it is left to its own launcher, which relaunches on the ranks
left, as for a job without a size range).
"""

from __future__ import annotations

import collections
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixfleet.errors import MixfleetError
from mixfleet.fleet.jobshape import RankSpec
from mixfleet.fleet.mixing import MixDecision, MixJob, RateFn, Split, mix_decision, split_text
from mixfleet.live.backend import Bundle, NodeInfo, pick_devices, virtual_nodes
from mixfleet.live.elastic import live_items
from mixfleet.live.spec import FleetSpec, JobSpec, PoolSpec, visible_devices_var
from mixfleet.live.store import AttemptRow, JobRow
from mixfleet.train.mixed.placement import slots_env

if TYPE_CHECKING:
    from mixfleet.live.store import Store

__all__ = ["MixedScheduling", "cost_rate", "slot_pools", "mixed_bundles", "mixable"]


def mixable(spec: JobSpec, fleet: FleetSpec) -> list[int]:
    """Pools a job may be mixed over: those it fits, when it names two or more ``kinds``
    (a job that names none is never mixed: mixing is asked for); else []."""
    opts = [i for i, p in enumerate(fleet.pools) if spec.fits(p)]
    return opts if len(spec.kinds) >= 2 and len(opts) >= 2 else []


def cost_rate(spec: JobSpec, fleet: FleetSpec) -> RateFn:
    """The job's predicted samples/s on a split (the per-job cost model; 0 where no plan
    fits or the model refuses the job), cached per split. Ranks of an emulated fleet are
    all on one machine (node 0), as a mixed attempt runs; else one node per pool."""
    from mixfleet.train.autoplan import plan_run
    from mixfleet.train.launch import resolve_config

    try:
        cfg = resolve_config(None, [], data=tomllib.loads(spec.config_toml))
    except (MixfleetError, ValueError):  # validated at submit; priced 0: never mixed
        return lambda split: 0.0
    modes = None if cfg.parallel.mode == "auto" else (cfg.parallel.mode,)
    one_host = all(p.emulated for p in fleet.pools)
    cache: dict[Split, float] = {}

    def rate(split: Split) -> float:
        if split not in cache:
            ranks = [RankSpec(device=_device(fleet.pools[q]), chip=fleet.pools[q].chip,
                              node=0 if one_host else q) for q, n in split for _ in range(n)]
            try:
                pick = plan_run(cfg, ranks=ranks, modes=modes).pick
            except (MixfleetError, ValueError, RuntimeError):  # the model refuses it
                pick = None
            cache[split] = pick.samples_per_s if pick is not None else 0.0
        return cache[split]

    return rate


def _device(p: PoolSpec) -> str:
    return f"emu:{p.chip}" if p.emulated else p.chip


def slot_pools(a: AttemptRow) -> list[str]:
    """The pool of each of the attempt's slots (a mixed attempt's from its handle)."""
    pools = a.handle.get("pools")
    return list(pools) if isinstance(pools, list) else [a.pool] * len(a.slots)


def mixed_bundles(spec: JobSpec, fleet: FleetSpec, slots: list[tuple[str, int]],
                  pools: list[str], cfg: Path, rd: Path,
                  extra_env: dict[str, str] | None = None) -> list[Bundle]:
    """One ``mixfleet train --ranks ...`` on the first slot's node holding every device
    (each pool's chip resource; each vendor's visible-devices variable set)."""
    byid = {p.id: p for p in fleet.pools}
    ranks = ",".join(_device(byid[p]) for p in pools)
    argv = ["-m", "mixfleet", "train", str(cfg), "--nproc", str(len(slots)), "--ranks",
            ranks, "--run-dir", str(rd), "--json"]
    env = {"MIXFLEET_POOL": "+".join(dict.fromkeys(pools)), "MIXFLEET_PROGRESS": "plain",
           **(extra_env or {}),  # and each device's identity, in the order of the ranks
           **slots_env([(p, n, d) for (n, d), p in zip(slots, pools, strict=True)])}
    res: collections.Counter[str] = collections.Counter()
    for (_, d), pid in zip(slots, pools, strict=True):
        p = byid[pid]
        var = visible_devices_var(p.vendor, p.emulated)
        env[var] = ",".join(x for x in (env.get(var, ""), f"{d}") if x)
        res[p.resource] += 1
    if all(byid[p].emulated for p in pools):
        env.update(MIXFLEET_EMULATED="1", MIXFLEET_CPU_THREADS="1")
    return [Bundle(node=slots[0][0], devices=tuple(d for _, d in slots), argv=tuple(argv),
                   env=env, resources={k: float(v) for k, v in res.items()})]


class MixedScheduling:
    """The mixed-kind part of :class:`mixfleet.live.scheduler.Scheduler` (a mixin)."""

    store: Store
    fleet: FleetSpec
    dir: Path
    clock: Callable[[], float]
    _index: dict[str, int]
    _rates: dict[str, RateFn]
    _waited: set[str]

    if TYPE_CHECKING:
        def _left(self, job: JobRow) -> float: ...
        def _rd(self, jid: str) -> Path: ...
        def _start(self, job: JobRow, pool: PoolSpec, slots: list[tuple[str, int]],
                   handle: dict[str, Any] | None = None) -> None: ...

    def _rate(self, job: JobRow) -> RateFn:
        if job.id not in self._rates:
            self._rates[job.id] = cost_rate(job.spec, self.fleet)
        return self._rates[job.id]

    def _mix_ends(self) -> list[tuple[int, float, int]]:
        """(pool, ETA, devices) of every running attempt, one entry per pool it holds
        devices of; the ETA from its job's cost-model rate on those devices (the rate the
        decision prices the waiting job with, as the simulator's replay does)."""
        now, out = self.clock(), []
        for a in self.store.attempts(states=("running",)):
            job = self.store.job(a.job_id)
            if job is None:
                continue
            pools = live_items(a, slot_pools(a), self._rd(job.id))
            split = tuple(sorted(collections.Counter(self._index[p] for p in pools
                                                     if p in self._index).items()))
            if not split:
                continue
            r = self._rate(job)(split)
            eta = now + (self._left(job) / r if r > 0 else float("inf"))
            out += [(q, eta, n) for q, n in split]
        return out

    def _mix(self, inv: list[NodeInfo], free: dict[str, dict[str, list[int]]],
             waiting: list[JobRow]) -> None:
        """Start each waiting mixable job on several kinds when that is decided (first
        come); ``free``: the free devices per pool and node left after the placements
        (taken devices leave it)."""
        if not self._one_machine(inv):
            return
        names = [p.id for p in self.fleet.pools]
        for job in waiting:
            opts = mixable(job.spec, self.fleet)
            if not opts:
                continue
            counts = {self._index[p]: sum(len(v) for v in nodes.values())
                      for p, nodes in free.items()}
            d = mix_decision(MixJob(id=job.id, size=job.devices, remaining=self._left(job),
                                    options=tuple(opts)), self.clock(), counts,
                             self._mix_ends(), self._rate(job), names=names)
            if d is None:
                continue
            if d.action != "mix":
                if job.id not in self._waited:  # the first time only: it is re-asked often
                    self._waited.add(job.id)
                    self.store.event("mix_declined", job.id, None, **d.detail())
                continue
            slots, pools = [], []
            for q, n in d.split:
                pid = names[q]
                got = pick_devices(free[pid], n)
                assert got is not None  # the split fits the free devices counted above
                slots += got
                pools += [pid] * n
            self._start_mixed(job, d, slots, pools)

    def _start_mixed(self, job: JobRow, d: MixDecision, slots: list[tuple[str, int]],
                     pools: list[str]) -> None:
        self.store.event("mixed", job.id, None, kinds=[self.fleet.pool(p).chip
                                                       for p in dict.fromkeys(pools)],
                         devices=split_text(d.split, [p.id for p in self.fleet.pools]),
                         **d.detail())
        self._start(job, self.fleet.pool(pools[0]), slots, {"pools": pools})

    def _one_machine(self, inv: list[NodeInfo]) -> bool:
        """Whether the fleet's nodes are its virtual nodes, all on this machine (the
        embedded and local fleets): a mixed attempt runs as one ``mixfleet train``."""
        return {n.node for n in inv} <= {v.node for v in virtual_nodes(self.fleet)}
