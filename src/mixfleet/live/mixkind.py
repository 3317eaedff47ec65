"""Mixed-kind jobs in the live scheduler: a waiting job that allows several chip kinds
(``[job] kinds``) started at once on free devices of two or more kinds, when the decision of
:mod:`mixfleet.fleet.mixing` (the simulator's own) predicts it ends sooner than waiting for
devices of one kind (docs/fleet-elastic.md).

The job's throughput on a split of devices over pools is the per-job cost model's
(:func:`cost_rate`: :func:`mixfleet.train.autoplan.plan_run` on ranks of those chips, the
job's own parallel mode or, under ``auto``, the fastest plan that fits), in samples/s.
A mixed attempt is one ``mixfleet train`` whose ``[[ranks]]`` (given with ``--set``) name
each rank's device and chip (``emu:<chip>`` on emulated pools, the chip's torch device,
e.g. ``cuda`` with ``chip = "kunlun-p800"``, on real ones), run on one machine: mixing
happens only when all the fleet's nodes are its virtual nodes on this machine (the
embedded and local fleets; never on a joined cluster, where such a job runs on one kind).
Its pool per slot is kept in its handle (``pools``); it is never resized by the
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
from mixfleet.fleet.mixing import MixDecision, MixJob, Split, mix_decision, split_text
from mixfleet.live.backend import Bundle, NodeInfo, pick_devices, virtual_nodes
from mixfleet.live.elastic import live_items
from mixfleet.live.spec import FleetSpec, JobSpec, PoolSpec, visible_devices_var
from mixfleet.live.store import AttemptRow, JobRow
from mixfleet.train.mixed.placement import slots_env

if TYPE_CHECKING:
    from mixfleet.live.store import Store

__all__ = ["MixedScheduling", "CostRate", "cost_rate", "slot_pools", "mixed_bundles",
           "mixable", "rank_device"]


def mixable(spec: JobSpec, fleet: FleetSpec) -> list[int]:
    """Pools a job may be mixed over: those it fits, when it names two or more ``kinds``
    (a job that names none is never mixed: mixing is asked for); else []."""
    opts = [i for i, p in enumerate(fleet.pools) if spec.fits(p)]
    return opts if len(spec.kinds) >= 2 and len(opts) >= 2 else []


class CostRate:
    """The job's predicted samples/s on a split (the per-job cost model; 0 where no plan
    fits or the model refuses the job), cached per split; :attr:`error` keeps the last
    refusal's message (the reason a job that prices 0 everywhere waits). Ranks of an
    emulated fleet are all on one machine (node 0), as a mixed attempt runs; else one node
    per pool."""

    def __init__(self, spec: JobSpec, fleet: FleetSpec) -> None:
        from mixfleet.train.launch import resolve_config

        self.fleet = fleet
        self.error: str | None = None
        self._cache: dict[Split, float] = {}
        self._one_host = all(p.emulated for p in fleet.pools)
        try:
            self._cfg: Any = resolve_config(None, [], data=tomllib.loads(spec.config_toml))
        except (MixfleetError, ValueError) as e:  # validated at submit: priced 0, and why
            self._cfg, self.error = None, f"its train config does not resolve: {e}"
            return
        mode = self._cfg.parallel.mode
        self._modes = None if mode == "auto" else (mode,)

    def __call__(self, split: Split) -> float:
        from mixfleet.train.autoplan import plan_run

        if self._cfg is None:
            return 0.0
        if split not in self._cache:
            ranks = [RankSpec(device=rank_device(self.fleet.pools[q]),
                              chip=self.fleet.pools[q].chip,
                              node=0 if self._one_host else q)
                     for q, n in split for _ in range(n)]
            try:
                pick = plan_run(self._cfg, ranks=ranks, modes=self._modes).pick
            except (MixfleetError, ValueError) as e:  # the model refuses it (a bug raises)
                pick, self.error = None, f"the cost model refuses {split_text(split)}: {e}"
            if pick is None and self.error is None:
                self.error = f"no parallel plan fits {split_text(split)}"
            self._cache[split] = pick.samples_per_s if pick is not None else 0.0
        return self._cache[split]


def cost_rate(spec: JobSpec, fleet: FleetSpec) -> CostRate:
    """The job's :class:`CostRate` (a :data:`~mixfleet.fleet.mixing.RateFn`)."""
    return CostRate(spec, fleet)


def rank_device(p: PoolSpec) -> str:
    """A rank's ``[[ranks]] device`` on pool ``p``: ``emu:<chip>`` when emulated, else the
    chip's torch device type (``cuda``, ``npu``, ...; the rank's ``chip`` says which)."""
    from mixfleet.catalog.base import get_chip

    return f"emu:{p.chip}" if p.emulated else get_chip(p.chip).torch_device


def slot_pools(a: AttemptRow) -> list[str]:
    """The pool of each of the attempt's slots (a mixed attempt's from its handle)."""
    pools = a.handle.get("pools")
    return list(pools) if isinstance(pools, list) else [a.pool] * len(a.slots)


def mixed_bundles(spec: JobSpec, fleet: FleetSpec, slots: list[tuple[str, int]],
                  pools: list[str], cfg: Path, rd: Path,
                  extra_env: dict[str, str] | None = None) -> list[Bundle]:
    """One ``mixfleet train --set ranks=[...]`` on the first slot's node holding every
    device, each rank's entry naming its device and chip (each pool's chip resource; each
    vendor's visible-devices variable set)."""
    byid = {p.id: p for p in fleet.pools}
    ranks = ", ".join(f'{{device = "{rank_device(byid[p])}", chip = "{byid[p].chip}"}}'
                      for p in pools)
    argv = ["-m", "mixfleet", "train", str(cfg), "--nproc", str(len(slots)), "--set",
            f"ranks=[{ranks}]", "--run-dir", str(rd), "--json"]
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
    _rates: dict[str, CostRate]
    _waited: set[str]

    if TYPE_CHECKING:
        def _left(self, job: JobRow) -> float: ...
        def _rd(self, jid: str) -> Path: ...
        def _start(self, job: JobRow, pool: PoolSpec, slots: list[tuple[str, int]],
                   handle: dict[str, Any] | None = None) -> None: ...

    def _rate(self, job: JobRow) -> CostRate:
        if job.id not in self._rates:
            self._rates[job.id] = cost_rate(job.spec, self.fleet)
        return self._rates[job.id]

    def _mixed_split(self, a: AttemptRow) -> Split:
        """The devices per pool index a mixed attempt still holds (its drained ones out)."""
        pools = live_items(a, slot_pools(a), self._rd(a.job_id))
        return tuple(sorted(collections.Counter(self._index[p] for p in pools
                                                if p in self._index).items()))

    def _mixed_ends(self, a: AttemptRow, job: JobRow, now: float
                    ) -> list[tuple[int, float, int]]:
        """(pool, ETA, devices) of a mixed attempt, one entry per pool it holds devices of;
        the ETA from its job's cost-model rate on those devices (the rate the decision
        prices a waiting job with, as the simulator's replay does)."""
        split = self._mixed_split(a)
        if not split:
            return []
        r = self._rate(job)(split)
        eta = now + (self._left(job) / r if r > 0 else float("inf"))
        return [(q, eta, n) for q, n in split]

    def _mix_ends(self) -> list[tuple[int, float, int]]:
        """(pool, ETA, devices) of every running attempt, one entry per pool it holds
        devices of (:meth:`_mixed_ends`; an attempt on one pool is a one-part split)."""
        now, out = self.clock(), []
        for a in self.store.attempts(states=("running",)):
            job = self.store.job(a.job_id)
            if job is not None:
                out += self._mixed_ends(a, job, now)
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
                    why = {"error": self._rate(job).error} if not d.split else {}
                    self.store.event("mix_declined", job.id, None, **d.detail(), **why)
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
