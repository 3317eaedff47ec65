"""The simulator: replays jobs on a fleet under one policy, with failures and throttling.

Failures and throttle episodes are Poisson processes per device, sampled per job as their
superposition (a job on n devices fails at n / MTBF; memoryless, so this is the same
process as sampling each device). A failure loses the computation since the job's last
checkpoint and costs ``restart_s`` of stall; jobs checkpoint at the Young/Daly interval
sqrt(2 C M) of their pool and size, each checkpoint stalling ``checkpoint_s``. A job that a
policy moves or preempts saves its state on the way out and pays ``migration_s`` when it
starts again. Every start and restart first pays the job's own ``startup_s`` (0 unless its
jobs file or trace gives one), so ``restart_s`` and ``migration_s`` are the rest of a
restart's stall. With failures off there are no failures and no checkpoints.
Policies see what the fleet knows, the run draws the truth (:mod:`mixfleet.sim.knowledge`);
checkpoint intervals follow the fleet's prior profiles.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence

from mixfleet.config import Section, field
from mixfleet.errors import ConfigError, MixfleetError
from mixfleet.fleet.estimates import ESTIMATORS, make_estimator, relative_errors
from mixfleet.fleet.model import Fleet, Job
from mixfleet.fleet.policies.base import STOP, Policy, Snapshot, fit_options, pool_views
from mixfleet.fleet.reliability import young_daly_interval
from mixfleet.sim import events as ev
from mixfleet.sim.cluster import STALL_CKPT, STALL_MIGRATE, STALL_RESTART, JobState, PoolState
from mixfleet.sim.knowledge import FleetKnowledge, Truth
from mixfleet.sim.metrics import SimResult, collect

__all__ = ["SimConfig", "Simulator", "simulate"]

Progress = Callable[[int, int, float], None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimConfig(Section):
    """Settings of one simulation run (``mixfleet simulate`` flags)."""

    seed: int = field(0, help="seed of the failure and throttle draws")
    failures: bool = field(True, help="sample failures (and checkpoint at the Young/Daly "
                           "interval)")
    throttles: bool = field(True, help="sample throttle episodes")
    migration_s: float = field(60.0, help="stall when a job starts again after a preemption "
                               "or a move, seconds", ge=0, flag="--migration-s")
    estimates: str = field("history", help="what policies know of job lengths: history "
                           "(learned from finished jobs), declared (the jobs' stated limits) "
                           "or oracle (the truth; an upper bound only); see "
                           "mixfleet.fleet.estimates", choices=ESTIMATORS, flag="--estimates")


class Simulator:
    """One run of ``jobs`` on ``fleet`` under ``policy``; ``speeds`` is the throughput table
    policies see, ``truth`` what the run draws from (default: the table and profiles)."""

    def __init__(self, fleet: Fleet, jobs: Sequence[Job], policy: Policy,
                 speeds: dict[str, tuple[float | None, ...]],
                 config: SimConfig | None = None, progress: Progress | None = None,
                 truth: Truth | None = None):
        self.fleet, self.policy, self.speeds, self.progress = fleet, policy, speeds, progress
        self.cfg = config or SimConfig()
        order = sorted(range(len(jobs)), key=lambda i: jobs[i].arrival_s)
        self.jobs = [jobs[i] for i in order]
        self.pools = pool_views(fleet)
        self.known = FleetKnowledge(self.pools, speeds)
        self.truth = Truth.or_table(truth, speeds, self.pools)
        self.true_rel = self.truth.reliability
        self.rng = random.Random(self.cfg.seed)
        self.q = ev.EventQueue()
        self._on_placed_event = {ev.FAIL: self._on_fail, ev.THROTTLE_START: self._on_throttle_start,
                                 ev.THROTTLE_END: self._on_throttle_end}
        t0 = self.jobs[0].arrival_s if self.jobs else 0.0
        self.pstate = [PoolState(p.capacity, t0) for p in self.pools]
        self.states: list[JobState] = []
        self.active: dict[str, JobState] = {}
        self.wait: dict[str, JobState] = {}
        self.run_by_pool: list[dict[str, JobState]] = [{} for _ in self.pools]
        self.unplaceable: list[tuple[Job, str]] = []
        self.waiting = 0
        self.wait_sizes: dict[int, int] = {}
        """devices -> number of waiting jobs of that size."""
        self.free = fleet.capacity
        self.pfree = [p.capacity for p in self.pools]
        self.tau: dict[tuple[int, int], float] = {}
        self._fit: dict[tuple[str, int, float], tuple[tuple[int, ...], str]] = {}
        self.needs_remaining = getattr(policy, "needs_remaining", True)
        self.moves = bool(getattr(policy, "moves", False))
        """A non-preemptive policy that may move or STOP running jobs (asked always)."""
        self.estimator = make_estimator(self.cfg.estimates)
        self.est_pairs: list[tuple[float, float]] = []
        """(estimate at arrival, true work) of each completed job."""

    # -- placement ------------------------------------------------------------------
    def _resched(self, js: JobState, t: float) -> None:
        js.rate_ver += 1
        ft = js.finish_time(t)
        if ft < math.inf:
            self.q.push(ft, ev.COMPLETE, js.index, js.rate_ver)

    def _interval(self, p: int, n: int) -> float:
        tau = self.tau.get((p, n))
        if tau is None:
            rel = self.pools[p].reliability
            tau = self.tau[(p, n)] = young_daly_interval(rel.checkpoint_s, rel.job_mtbf_s(n))
        return tau

    def _start(self, js: JobState, p: int, t: float) -> None:
        js.pool, js.last, js.placed_at = p, t, t
        if js.ran:
            js.stall(t, self.cfg.migration_s, STALL_MIGRATE, start=True)
            js.migrations += 1
        else:
            js.stall(t, 0.0, js.stall_kind, start=True)
            js.start_s = t
        js.ran = True
        js.base_rate = js.rate = js.devices * (self.truth.speed[js.workload][p] or 0.0)
        js.place_ver += 1
        js.ckpt_ver += 1
        rel = self.true_rel[p]
        if self.cfg.failures:
            self.q.push(t + self.rng.expovariate(1.0 / rel.job_mtbf_s(js.devices)), ev.FAIL,
                        js.index, js.place_ver)
            self.q.push(max(t, js.stall_until) + self._interval(p, js.devices), ev.CHECKPOINT,
                        js.index, js.ckpt_ver)
        if self.cfg.throttles and rel.throttle_per_h > 0 and rel.throttle_slowdown > 0:
            self._next_throttle(js, rel.throttle_per_h, t)
        self.pstate[p].change(t, js.devices)
        self.free -= js.devices
        self.pfree[p] -= js.devices
        self.waiting -= 1
        del self.wait[js.id]
        self._wait_size(js.devices, -1)
        self.run_by_pool[p][js.id] = js
        self._resched(js, t)

    def _wait_size(self, n: int, d: int = 1) -> None:
        c = self.wait_sizes[n] = self.wait_sizes.get(n, 0) + d
        if not c:
            del self.wait_sizes[n]

    def _could_start(self) -> bool:
        """Whether asking the policy can start a job: a non-preemptive one that neither
        moves nor stops jobs starts none unless a pool has room for the smallest."""
        if self.policy.preemptive or self.moves:
            return True
        return self.free > 0 and max(self.pfree) >= min(self.wait_sizes)

    def _next_throttle(self, js: JobState, per_h: float, t: float) -> None:
        self.q.push(t + self.rng.expovariate(js.devices * per_h / 3600.0), ev.THROTTLE_START,
                    js.index, js.place_ver)

    def _release(self, js: JobState, t: float) -> int:
        p = js.pool
        assert p is not None
        self.pstate[p].change(t, -js.devices)
        self.free += js.devices
        self.pfree[p] += js.devices
        del self.run_by_pool[p][js.id]
        js.run_s[p] += t - js.placed_at
        js.pool = None
        js.rate = js.base_rate = 0.0
        js.throttled = 0
        js.place_ver += 1
        js.ckpt_ver += 1
        js.rate_ver += 1
        return p

    def _stop(self, js: JobState, t: float) -> None:
        js.advance(t)
        js.ckpt_done = js.done  # a preempted job saves its state on the way out
        js.compute_since_ckpt = 0.0
        self._release(js, t)
        self.waiting += 1
        self.wait[js.id] = js
        self._wait_size(js.devices)

    # -- events ---------------------------------------------------------------------
    def _arrive(self, i: int, t: float) -> None:
        job = self.jobs[i]
        key = (job.workload, job.devices, job.mem_gib)
        fit = self._fit.get(key)
        if fit is None:
            sp = self.speeds.get(job.workload) or (None,) * len(self.pools)
            fit = self._fit[key] = fit_options(self.pools, sp, job.devices, job.mem_gib)
        if not fit[0]:
            self.unplaceable.append((job, fit[1]))
            return
        js = JobState(job, len(self.states), fit[0], len(self.pools), self.estimator)
        if job.id in self.active:
            raise ConfigError(f"job id {job.id!r} appears twice; give each job its own id")
        self.states.append(js)
        self.active[js.id] = js
        self.wait[js.id] = js
        self.waiting += 1
        self._wait_size(js.devices)

    def _handle(self, t: float, kind: int, ji: int, ver: int) -> None:
        """One event of a job: stale ones (an older version) are dropped."""
        js = self.states[ji]
        if kind == ev.COMPLETE:
            if ver == js.rate_ver and js.pool is not None:
                self._on_complete(js, t)
            return
        if js.pool is None:
            return
        if kind == ev.CHECKPOINT:
            if ver == js.ckpt_ver:
                self._on_checkpoint(js, ji, t)
            return
        if ver != js.place_ver:
            return
        js.advance(t)
        self._on_placed_event[kind](js, ji, t)
        self._resched(js, t)

    def _on_complete(self, js: JobState, t: float) -> None:
        js.advance(t)
        assert js.pool is not None
        js.work_by_pool[js.pool] += js.work - js.done
        js.done = js.work
        js.end_s = t
        self._release(js, t)
        del self.active[js.id]
        self.estimator.observe(js.job)
        self.est_pairs.append((js.est0, js.work))

    def _on_checkpoint(self, js: JobState, ji: int, t: float) -> None:
        assert js.pool is not None
        rel = self.true_rel[js.pool]
        js.advance(t)
        js.ckpt_done, js.compute_since_ckpt = js.done, 0.0
        js.stall(t, rel.checkpoint_s, STALL_CKPT)
        js.ckpt_ver += 1
        self.q.push(js.stall_until + self._interval(js.pool, js.devices), ev.CHECKPOINT,
                    ji, js.ckpt_ver)
        self._resched(js, t)

    def _on_fail(self, js: JobState, ji: int, t: float) -> None:
        """The work since the last checkpoint is lost; restart stall; the next failure."""
        assert js.pool is not None
        rel = self.true_rel[js.pool]
        self.known.observe_failure(js.pool)
        lost = js.done - js.ckpt_done
        js.work_by_pool[js.pool] -= lost
        js.done = js.ckpt_done
        js.lost_compute_s += js.compute_since_ckpt
        js.compute_since_ckpt = 0.0
        js.failures += 1
        js.stall(t, rel.restart_s, STALL_RESTART, start=True)
        js.ckpt_ver += 1
        self.q.push(js.stall_until + self._interval(js.pool, js.devices), ev.CHECKPOINT,
                    ji, js.ckpt_ver)
        self.q.push(t + self.rng.expovariate(1.0 / rel.job_mtbf_s(js.devices)), ev.FAIL,
                    ji, js.place_ver)

    def _on_throttle_start(self, js: JobState, ji: int, t: float) -> None:
        assert js.pool is not None
        rel = self.true_rel[js.pool]
        self.known.observe_throttle(js.pool)
        js.throttled += 1
        js.throttles += 1
        js.rate = js.base_rate * (1.0 - rel.throttle_slowdown)
        self.q.push(t + rel.throttle_s, ev.THROTTLE_END, ji, js.place_ver)
        self._next_throttle(js, rel.throttle_per_h, t)

    def _on_throttle_end(self, js: JobState, ji: int, t: float) -> None:
        js.throttled -= 1
        if js.throttled == 0:
            js.rate = js.base_rate

    # -- scheduling -----------------------------------------------------------------
    def _schedule(self, t: float) -> None:
        if self.needs_remaining or self.policy.round_s is not None:
            for running in self.run_by_pool:
                for js in running.values():
                    js.run_s[js.pool] += t - js.placed_at  # type: ignore[index]
                    js.placed_at = t
                    js.advance(t)
        pools = self.known.pools(t, [s.busy_s + s.busy * (t - s.last) for s in self.pstate])
        snap = Snapshot(time=t, pools=pools, jobs=self.active.values(),
                        speed=self.known.speed, failures=self.cfg.failures,
                        waiting=self.wait.values(),
                        running=tuple(r.values() for r in self.run_by_pool),
                        free=tuple(self.pfree), migration_s=self.cfg.migration_s)
        alloc = self.policy.allocate(snap)
        keep = not self.policy.preemptive
        used = [0] * len(self.pools) if not keep else [p.capacity - f for p, f in
                                                       zip(self.pools, self.pfree, strict=True)]
        moved: list[JobState] = []
        for jid, p in alloc.items():
            cand = self.active.get(jid)
            stop = p == STOP and keep and cand is not None and cand.pool is not None
            if cand is None or (p not in cand.options and not stop) or \
                    (keep and cand.pool is not None and not self.moves):
                raise MixfleetError(f"policy {self.policy.name!r} placed job {jid!r} on pool "
                                    f"{p} where it is not active, not waiting or does not fit")
            if keep and cand.pool is not None:  # a move (or a no-op to its own pool)
                if cand.pool == p:
                    continue
                used[cand.pool] -= cand.devices
                moved.append(cand)
                if stop:
                    continue
            used[p] += cand.devices
        for p, u in enumerate(used):
            if u > self.pools[p].capacity:
                raise MixfleetError(f"policy {self.policy.name!r} put {u} devices on pool "
                                    f"{self.pools[p].id!r} of {self.pools[p].capacity}")
        if not keep:
            for js in list(self.active.values()):
                if js.pool is not None and alloc.get(js.id) != js.pool:
                    self._stop(js, t)
        for js in moved:
            self._stop(js, t)
        for jid, p in alloc.items():
            st = self.active[jid]
            if st.pool is None and p != STOP:
                self._start(st, p, t)

    def run(self) -> SimResult:
        """Simulate until every placeable job has completed."""
        q, jobs, n = self.q, self.jobs, len(self.jobs)
        round_s = self.policy.round_s
        nxt = 0
        if n:
            q.push(jobs[0].arrival_s, ev.ARRIVAL, 0)
        round_pending = False
        handled = 0

        def outdated(e: ev.Event) -> bool:  # an event _handle would drop (events.py)
            return e[1] < ev.ARRIVAL and self.states[e[3]].outdated(e[1], e[4], round_s is not None)
        while len(q):
            t = q.peek_time()
            assert t is not None
            dirty = freed = False
            while len(q) and q.peek_time() == t:
                _, kind, _, ji, ver = q.pop()
                handled += 1
                if kind == ev.ARRIVAL:
                    self._arrive(ji, t)
                    nxt = ji + 1
                    if nxt < n:
                        q.push(jobs[nxt].arrival_s, ev.ARRIVAL, nxt)
                    if round_s is not None and not round_pending and self.active:
                        q.push(max(t, math.ceil(t / round_s) * round_s), ev.ROUND)
                        round_pending = True
                    dirty = True
                elif kind == ev.ROUND:
                    round_pending = False
                    if self.active:
                        self._schedule(t)
                        q.push(t + round_s, ev.ROUND)  # type: ignore[operator]
                        round_pending = True
                        if self.free == self.fleet.capacity and len(q) == 1 and nxt >= n:
                            raise MixfleetError(f"policy {self.policy.name!r} leaves "
                                                f"{len(self.active)} job(s) waiting on an "
                                                f"idle fleet")
                else:
                    if kind == ev.COMPLETE:
                        dirty = freed = True
                    self._handle(t, kind, ji, ver)
            if dirty and round_s is None and (self.waiting and self._could_start()
                                              or freed and self.active and
                                              (self.moves or self.policy.preemptive)):
                self._schedule(t)
            if len(q) >= q.next_compact:
                handled += q.compact(outdated)
            if self.progress is not None and handled >= 5000:
                self.progress(len(self.states) - len(self.active) + len(self.unplaceable),
                              n, t)
                handled = 0
        if self.active:
            raise MixfleetError(f"policy {self.policy.name!r} leaves {len(self.active)} "
                                f"job(s) waiting on an idle fleet")
        if self.progress is not None:
            self.progress(n, n, self.q.peek_time() or 0.0)
        if n and not self.states:
            job, why = self.unplaceable[0]
            raise ConfigError(f"none of the {n} jobs fits any pool of fleet "
                              f"{self.fleet.name!r} (e.g. job {job.id!r}: {why}); add pools "
                              f"that fit them, or pass --throughput / [pool.assumption] for "
                              f"pools without a throughput figure")
        res = collect(self.policy.name, self.fleet, self.states, self.pstate,
                      self.unplaceable, q.popped)
        err = relative_errors(self.est_pairs)
        res.metrics.update(estimates=self.cfg.estimates, estimate_error_p50=err["p50"],
                           estimate_error_p90=err["p90"])
        return res


def simulate(fleet: Fleet, jobs: Sequence[Job], policy: Policy,
             speeds: dict[str, tuple[float | None, ...]], config: SimConfig | None = None,
             progress: Progress | None = None, truth: Truth | None = None) -> SimResult:
    """Run one simulation and return its metrics (see :class:`SimResult`); policies see
    ``speeds``, the run draws from ``truth`` (default: the same)."""
    return Simulator(fleet, jobs, policy, speeds, config, progress, truth).run()
