"""The live scheduler: one decision loop over SQLite, a backend and a placement policy.

Each :meth:`Scheduler.tick` (i) ends attempts whose job was cancelled, (ii) polls every
running attempt: a clean exit with ``summary.json`` finishes the job; a non-zero exit
(after torchrun's own restarts), a lost worker or a dead node re-queues it with its run
directory (it resumes from its newest checkpoint or snapshot), until ``max_restarts``;
chips the thermal guard drained (``RUN_DIR/blocklist.json``) go on the fleet's block list;
(iii) when something changed (a submission, an end, a failure, the inventory), asks the
policy: the same :meth:`Policy.allocate` on the same :class:`Snapshot` the simulator
builds, with work and speeds *estimated* (:mod:`mixfleet.live.estimate`), and starts each
job it places on free, unblocked devices of that pool.

Everything the scheduler knows is in SQLite, so a killed scheduler restarted later picks
up the running attempts from their handles (a Ray actor outlives its driver) and loses or
duplicates nothing: an attempt is recorded before it is started, and a job has at most one
running attempt (a unique index). A policy that moves jobs (``goodput``) has its stops and
moves of running jobs carried out as the simulator does (:mod:`mixfleet.live.preempt`); a
preemptive policy's (``gavel``'s) leaving a running job out is not.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixfleet.errors import MixfleetError
from mixfleet.fleet.plan import PlanJob
from mixfleet.fleet.policies.base import STOP, Policy, Snapshot, pool_views
from mixfleet.live.backend import Backend, Bundle, NodeInfo, pick_devices
from mixfleet.live.elastic import ElasticScheduling, live_indices
from mixfleet.live.estimate import Estimates, attempt_rate, last_step
from mixfleet.live.mixkind import MixedScheduling, mixed_bundles, slot_pools
from mixfleet.live.preempt import PreemptScheduling
from mixfleet.live.spec import FleetSpec, JobSpec, PoolSpec, visible_devices_var
from mixfleet.live.store import AttemptRow, JobRow, Store
from mixfleet.train.mixed.blocklist import read_entries
from mixfleet.train.mixed.placement import slots_env

__all__ = ["Scheduler", "job_dir", "run_dir"]


def job_dir(fleet_dir: Path, jid: str) -> Path:
    return fleet_dir / "jobs" / jid


def run_dir(fleet_dir: Path, jid: str) -> Path:
    """The job's run directory, the same for every attempt (so each resumes the last)."""
    return job_dir(fleet_dir, jid) / "run"


_View = PlanJob  # a job as the policy sees it (JobView)


class Scheduler(ElasticScheduling, MixedScheduling, PreemptScheduling):
    """Places the fleet's jobs; see the module docstring (:mod:`mixfleet.live.elastic` for
    jobs that declare a size range, :mod:`mixfleet.live.mixkind` for jobs mixed over
    kinds, :mod:`mixfleet.live.preempt` for the policy's stops and moves)."""

    def __init__(self, fleet: FleetSpec, store: Store, backend: Backend, policy: Policy, *,
                 fleet_dir: str | Path, mark: str, clock: Callable[[], float] = time.time,
                 extra_env: dict[str, str] | None = None) -> None:
        self.fleet = fleet
        self.store = store
        self.backend = backend
        self.policy = policy
        self.dir = Path(fleet_dir)
        self.mark = mark
        self.clock = clock
        self.extra_env = dict(extra_env or {})
        self.est = Estimates(fleet)
        self._index = {p.id: i for i, p in enumerate(fleet.pools)}
        self._last_sig: Any = None
        self.decisions = 0
        self._inv: list[NodeInfo] = []
        self._rates, self._waited = {}, set()  # mixed-kind jobs: cost-model rates, declined
        for a in store.attempts(states=("done", "failed", "lost", "resized",
                                             "preempted", "moved")):
            self._observe(a, store.job(a.job_id))

    # -- one round ----------------------------------------------------------------------
    def tick(self) -> None:
        inv = self._inv = self.backend.inventory()
        for job in self.store.jobs(("running",)):
            if job.cancel:
                for a in self.store.attempts(job.id, ("running",)):
                    self.backend.stop(a.handle)
                    self.store.end_attempt(a.id, state="cancelled", rc=None,
                                           reason="cancelled by user", job_state="cancelled")
        self.resume_resizes()
        self.resume_preempts()
        alive = {n.node for n in inv if n.alive}
        for a in self.store.attempts(states=("running",)):
            self._poll(a, alive)
        self._place(inv)
        self._grow(inv)

    def _poll(self, a: AttemptRow, alive_nodes: set[str]) -> None:
        job = self.store.job(a.job_id)
        assert job is not None
        rd = run_dir(self.dir, job.id)
        mixed = bool(a.handle.get("pools"))  # never resized: its launcher handles drains
        elastic = job.spec.elastic and not a.handle.get("pending") and not mixed
        new = self._check_drains(a, job, rd, count=not elastic)
        if new and elastic and self._after_drain(a, job, new):
            return
        if a.handle.get("pending"):
            st_state, rc, reason = "lost", None, "the scheduler stopped while placing it"
        else:
            st = self.backend.poll(a.handle)
            st_state, rc, reason = st.state, st.rc, st.reason
            dead = sorted({n for n, _ in a.slots if n not in alive_nodes})
            if st_state == "running" and dead and job.spec.elastic and not mixed:
                self._after_node_loss(a, job, dead)
                return
            if st_state == "running" and dead:
                st_state, reason = "lost", f"node(s) {', '.join(dead)} left the cluster"
        if st_state == "running":
            return
        self.backend.stop(a.handle)
        self._check_drains(a, job, rd)
        if st_state == "exit" and rc == 0 and (rd / "summary.json").exists():
            self.store.end_attempt(a.id, state="done", rc=0, reason="", job_state="done")
        else:
            if st_state == "exit":
                reason = (f"mixfleet train exited with code {rc} (after torchrun's own "
                          f"restarts); see `mixfleet logs {job.id}`")
                state = "failed"
            else:
                reason = f"worker lost: {reason}"
                state = "lost"
            self.store.end_attempt(a.id, state=state, rc=rc, reason=reason,
                                   job_state="queued", max_restarts=job.spec.max_restarts)
        ended = self.store.attempts(job.id)
        self._observe(next(x for x in ended if x.id == a.id), job)

    def _observe(self, a: AttemptRow, job: JobRow | None) -> None:
        if job is None or a.handle.get("pools"):  # a mixed attempt's rate is no pool's
            return
        sps = attempt_rate(run_dir(self.dir, job.id), a.started, a.ended)
        if sps and a.pool in self._index:
            self.est.observe(job.spec.workload, self._index[a.pool], sps / len(a.slots))

    def _check_drains(self, a: AttemptRow, job: JobRow, rd: Path, count: bool = True) -> int:
        """Put chips drained in this attempt on the fleet's block list; returns how many
        are new (counted as seen unless ``count`` is False: an elastic job's resize counts
        them in its own transaction). Each block-list entry's rank indexes the ranks left
        after the drains before it."""
        try:
            entries = read_entries(rd)
        except (OSError, MixfleetError):  # damaged or a link: the run's own launch says so
            return 0
        mine = [e for e in entries if e.get("t", 0) >= a.started]
        if len(mine) <= a.drains_seen:
            return 0
        slots, pools = list(a.slots), slot_pools(a)
        for i, e in enumerate(mine):
            r = int(e.get("rank", -1))
            if not 0 <= r < len(slots):
                continue
            (node, dev), pool = slots.pop(r), pools.pop(r)
            if i >= a.drains_seen:
                self.store.block(pool, node, dev, job.id,
                                 f"drained by the thermal guard at step {e.get('step')}")
        if count:
            self.store.count_drains(a.id, len(mine))
        return len(mine) - a.drains_seen

    # -- placement ----------------------------------------------------------------------
    def _free_slots(self, inv: list[NodeInfo]) -> dict[str, dict[str, list[int]]]:
        """Per pool, per alive node, the free unblocked device indices."""
        blocked = self.store.blocked()
        held: set[tuple[str, str, int]] = set()
        for a in self.store.attempts(states=("running",)):
            pools = slot_pools(a)  # a mixed attempt's span several pools
            idx = (live_indices(a, run_dir(self.dir, a.job_id)) if a.drains_seen
                   else range(len(a.slots)))  # one read of its block list for both
            held |= {(pools[i], *a.slots[i]) for i in idx}
        out: dict[str, dict[str, list[int]]] = {p.id: {} for p in self.fleet.pools}
        for n in inv:
            if not n.alive or n.pool not in out:
                continue
            out[n.pool][n.node] = [d for d in range(n.devices)
                                   if (n.pool, n.node, d) not in blocked
                                   and (n.pool, n.node, d) not in held]
        return out

    def _capacity(self, inv: list[NodeInfo]) -> dict[str, int]:
        blocked = self.store.blocked()
        cap = {p.id: 0 for p in self.fleet.pools}
        for n in inv:
            if n.alive and n.pool in cap:
                cap[n.pool] += sum((n.pool, n.node, d) not in blocked for d in range(n.devices))
        return cap

    def snapshot(self, inv: list[NodeInfo]) -> tuple[Snapshot, list[JobRow]]:
        """The :class:`Snapshot` a policy sees now (work and speeds estimated)."""
        now = self.clock()
        cap = self._capacity(inv)
        pools = pool_views(self.fleet, cap)
        running = {a.job_id: a for a in self.store.attempts(states=("running",))}
        active = [j for j in self.store.jobs(("queued", "running")) if not j.cancel]
        speed: dict[str, tuple[float | None, ...]] = {}
        views: list[_View] = []
        placed: list[_View] = []  # per pool part of each running job
        for j in active:
            s = j.spec
            rel, ref = self.est.speeds(s.workload)
            speed[s.workload] = rel
            left = max(s.steps - last_step(run_dir(self.dir, j.id)), 0) * s.global_batch
            opts = tuple(i for i, p in enumerate(self.fleet.pools)
                         if s.fits(p) and cap[p.id] >= s.devices)
            a = running.get(j.id)
            size = s.devices if a is None else len(a.slots) - a.drains_seen  # resized
            v = _View(id=j.id, workload=s.workload, devices=size, mem_gib=s.mem_gib,
                      priority=j.priority, arrival_s=j.submitted, remaining=left / ref,
                      options=opts, run_s=[0.0] * len(pools))
            parts: list[tuple[int, float, int]] = []
            if a is not None and a.handle.get("pools"):  # mixed: its devices per pool
                parts = self._mixed_ends(a, j, now)  # its cost-model ETA, as _mix_ends
                v.pool = parts[0][0] if parts else self._index[a.pool]
                v.eta = parts[0][1] if parts else float("inf")
            elif a is not None:
                v.pool = self._index[a.pool]
                per = self.est.per_device(s.workload, v.pool)[0]
                v.eta = now + left / max(per * max(size, 1), 1e-9)
                parts = [(v.pool, v.eta, size)]
            # in the running list of each pool it holds devices of, with those devices
            placed += [dataclasses.replace(v, pool=q, devices=n) if len(parts) > 1 else v
                       for q, _, n in parts]
            views.append(v)
        # the devices no running attempt holds (a mixed one holds some of several pools)
        fs = self._free_slots(inv)
        free = tuple(sum(len(v) for v in fs[self.fleet.pools[p.index].id].values())
                     for p in pools)
        run = tuple([v for v in placed if v.pool == p.index] for p in pools)
        snap = Snapshot(time=now, pools=pools, jobs=views, speed=speed,
                        waiting=[v for v in views if v.pool is None], running=run,
                        free=free)
        return snap, active

    def _place(self, inv: list[NodeInfo]) -> None:
        queued = [j for j in self.store.jobs(("queued",)) if not j.cancel]
        moves = getattr(self.policy, "moves", False) and not self.policy.preemptive
        if not queued and not (moves and self.store.attempts(states=("running",))):
            return  # a policy that moves jobs is asked at ends too, as in the simulator
        atts = self.store.attempts()
        sig = (tuple(j.id for j in queued), tuple(a.state for a in atts),
               len(self.store.blocked()), tuple(inv))
        if sig == self._last_sig:
            return
        self._last_sig = sig
        snap, active = self.snapshot(inv)
        byid = {j.id: j for j in active}
        alloc = self.policy.allocate(snap)
        self.decisions += 1
        self._stops_and_moves(snap, alloc)
        free = self._free_slots(inv)
        for jid, p in alloc.items():
            job = byid.get(jid)
            if job is None or job.state != "queued" or p == STOP:
                continue  # running: kept, or stopped or moved above
            pool = self.fleet.pools[p]
            slots = pick_devices(free[pool.id], job.devices)
            if slots is None:
                continue
            self._start(job, pool, slots)
        placed = {a.job_id for a in self.store.attempts(states=("running",))}
        self._mix(inv, free, [j for j in queued if j.id not in placed])
        placed = {a.job_id for a in self.store.attempts(states=("running",))}
        self._start_small(inv, free, [j for j in queued if j.id not in placed])

    def _start(self, job: JobRow, pool: PoolSpec, slots: list[tuple[str, int]],
               handle: dict[str, Any] | None = None) -> None:
        aid = self.store.start_attempt(job.id, pool.id, slots, {"pending": True,
                                                                 **(handle or {})})
        self._launch(job, pool, slots, aid)

    def _launch(self, job: JobRow, pool: PoolSpec, slots: list[tuple[str, int]],
                aid: int) -> None:
        """Start recorded attempt ``aid`` (its handle pending) on ``slots``."""
        jd = job_dir(self.dir, job.id)
        jd.mkdir(parents=True, exist_ok=True)
        cfg = jd / "config.toml"
        if not cfg.exists():
            tmp = jd / "config.toml.tmp"
            tmp.write_text(job.spec.config_toml)
            tmp.replace(cfg)
        atts = self.store.attempts(job.id)
        n = [a.id for a in atts].index(aid) + 1
        marker = f"{self.mark}:{aid}"
        mine = next(a for a in atts if a.id == aid)
        keep = {"pools": mine.handle["pools"]} if mine.handle.get("pools") else {}
        bundles = (mixed_bundles(job.spec, self.fleet, slots, keep["pools"], cfg,
                                 run_dir(self.dir, job.id), self.extra_env) if keep else
                   build_bundles(job.spec, pool, slots, cfg, run_dir(self.dir, job.id), aid,
                                 self.extra_env))
        # what a restarted scheduler needs to stop a half-started attempt
        self.store.set_handle(aid, {**keep, "pending": True, "marker": marker, "aid": aid,
                                    "actors": [f"mixfleet-attempt-{aid}-{i}"
                                               for i in range(len(bundles))],
                                    "pg": f"mixfleet-pg-{aid}", "pids": [], "rcfiles": []})
        try:
            handle = self.backend.start(aid, pool, bundles, jd / f"attempt-{n}.log", marker)
        except Exception as e:  # noqa: BLE001 - any start failure re-queues the job
            self.backend.stop({**[a for a in self.store.attempts(job.id)
                                  if a.id == aid][0].handle, "pending": True})
            self.store.end_attempt(aid, state="failed", rc=None,
                                   reason=f"could not start: {e}", job_state="queued",
                                   max_restarts=job.spec.max_restarts)
            return
        self.store.set_handle(aid, {**keep, **handle})


def build_bundles(spec: JobSpec, pool: PoolSpec, slots: list[tuple[str, int]], cfg: Path,
                  rd: Path, aid: int, extra_env: dict[str, str] | None = None
                  ) -> list[Bundle]:
    """One ``mixfleet train`` per node of the placement; several nodes meet at torchrun's
    c10d rendezvous on the first bundle's node."""
    by_node: dict[str, list[int]] = {}
    for node, d in slots:
        by_node.setdefault(node, []).append(d)
    var = visible_devices_var(pool.vendor, pool.emulated)
    out = []
    for i, (node, devs) in enumerate(by_node.items()):
        argv = ["-m", "mixfleet", "train", str(cfg), "--nproc", str(len(devs)), "--device",
                pool.device, "--run-dir", str(rd), "--json"]
        if len(by_node) > 1:
            argv += ["--nnodes", str(len(by_node)), "--node-rank", str(i),
                     "--rdzv-backend", "c10d", "--rdzv-endpoint", "{rdzv_endpoint}",
                     "--rdzv-id", f"mixfleet-attempt-{aid}"]
        env = {var: ",".join(map(str, devs)), "MIXFLEET_POOL": pool.id,
               "MIXFLEET_PROGRESS": "plain", **(extra_env or {}),
               **slots_env([(pool.id, node, d) for d in devs])}  # each device's identity
        if pool.emulated:  # its devices share the host's cores with the other jobs'
            env.update(MIXFLEET_EMULATED="1", MIXFLEET_CPU_THREADS="1")
        out.append(Bundle(node=node, devices=tuple(devs), argv=tuple(argv), env=env))
    return out
