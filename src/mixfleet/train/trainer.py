"""The training loop of one rank.

Each step takes this rank's slice of the global batch from the
:class:`~mixfleet.train.sampler.GlobalBatchSampler` and hands it to the
:class:`~mixfleet.train.step.StepManager`, which runs forward and backward (loss scaled by
1/B), reduces gradients and control signals through the reduction strategy (``dp``: one
flat all-reduce, :mod:`mixfleet.train.parallel.strategy`) and says whether the step commits. The
health checks (:mod:`mixfleet.train.health.checks`) observe the outcome and return actions, which
the trainer applies in one place (:func:`~mixfleet.train.health.actions.apply_actions`) through
its public methods below. Saving and restoring go through the
:class:`~mixfleet.train.checkpoint.manager.CheckpointManager`; faults fire at the hook points of the
:class:`~mixfleet.train.health.faults.FaultInjector`. The trainer never prints: it reports
through ``emit`` (events) and ``on_step`` (metrics).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mixfleet.config import config_hash
from mixfleet.emulate import EmulatedDevice
from mixfleet.emulate.links import LinkPacer
from mixfleet.runs import Event, StepLog
from mixfleet.train.checkpoint.dcp import Checkpointer
from mixfleet.train.checkpoint.manager import CheckpointManager
from mixfleet.train.checkpoint.stateful import Adapter, SchedulerState
from mixfleet.train.clock import Clock, SystemClock
from mixfleet.train.config import RunConfig
from mixfleet.train.device import synchronize
from mixfleet.train.health import checks as C
from mixfleet.train.health.actions import Action, Drain, Restage, apply_actions
from mixfleet.train.health.base import HealthCheck, StepOutcome
from mixfleet.train.health.detectors import StepGuard, ThermalGuard, Watchdog
from mixfleet.train.health.faults import FaultInjector, FaultPlan
from mixfleet.train.health.signals import ControlSignals
from mixfleet.train.mixed.blocklist import add_drained
from mixfleet.train.mixed.rebalance import MixedFleet
from mixfleet.train.mixed.shares import shed_shares
from mixfleet.train.optim import build_optimizer, lr_factor
from mixfleet.train.parallel.factory import make_strategy
from mixfleet.train.parallel.pipeplan import PipelinePlan
from mixfleet.train.rundir import RunDir, read_skip_list, write_restage, write_skip_list
from mixfleet.train.sampler import GlobalBatchSampler, equal_shares
from mixfleet.train.step import StepManager
from mixfleet.workloads import Workload

__all__ = ["Trainer", "lr_factor"]  # lr_factor: re-exported from mixfleet.train.optim


class Trainer:
    """Trains ``workload`` on this rank; see the module docstring."""

    def __init__(self, cfg: RunConfig, workload: Workload, *, run: RunDir, device: torch.device,
                 rank: int = 0, world: int = 1, group: Any = None, ckpt_group: Any = None,
                 shares: list[int] | None = None, emu: EmulatedDevice | None = None,
                 fleet: MixedFleet | None = None, thermal: ThermalGuard | None = None,
                 watchdog: Watchdog | None = None, faults: FaultInjector | None = None,
                 clock: Clock | None = None, checks: Sequence[HealthCheck] = (),
                 local_world: int = 1, groups: Sequence[dict[str, Any]] = (),
                 on_step: Callable[[dict[str, Any]], None] | None = None,
                 pacer: LinkPacer | None = None, pipeline: PipelinePlan | None = None) -> None:
        self.cfg, self.workload, self.run, self.device = cfg, workload, run, device
        self.rank, self.world, self.emu, self.fleet = rank, world, emu, fleet
        self.thermal, self.watchdog, self.on_step = thermal, watchdog, on_step
        self.clock = clock or SystemClock()
        t, h = cfg.train, cfg.health
        self.B, self.step = t.global_batch, 0
        self._shares = list(shares or equal_shares(self.B, world))
        self.sampler = GlobalBatchSampler(len(workload.train_set), self.B, t.seed)
        torch.manual_seed(t.seed)
        self.model = workload.build_model().to(device)
        shard = getattr(workload, "shard_units", None)  # the blocks of an LLM workload
        units = shard(self.model) if shard is not None else None
        self.strategy = make_strategy(cfg.parallel, self.model, device=device, world=world,
                                      group=group, units=units,
                                      all_reduce=fleet.steps.all_reduce if fleet else None,
                                      control_reduce=(fleet.steps.all_reduce_small if fleet
                                                      else None),
                                      pacer=pacer, pipeline=pipeline, rank=rank,
                                      loss=workload.loss, global_batch=self.B)
        self.pipeline = pipeline
        self._eval_model: torch.nn.Module | None = None  # rank 0's whole model (pipeline)
        self.opt, self.sched = build_optimizer(  # this rank's parameters (its stage's)
            (p for p in self.strategy.model.parameters() if p.requires_grad), t,
            foreach=self.strategy.optimizer_foreach)
        self.faults = faults or FaultInjector(
            FaultPlan(cfg.faults.specs(cfg.launch.nproc, t.steps), rank, run.root),
            rank=rank, emit=run.emit, clock=self.clock)
        self.guard = StepGuard(nan_guard=h.nan_guard, spike_factor=h.spike_factor,
                               rollback_after=h.rollback_after)
        self.signals = ControlSignals(world=world, rank=rank)
        self.manager = StepManager(self.strategy, self.signals, guard=self.guard,
                                   faults=self.faults, clock=self.clock, global_batch=self.B,
                                   emit=run.emit, rank=rank, grad_clip=t.grad_clip)
        self.snap_every = cfg.checkpoint.snapshot_interval
        self.pacing = C.SnapshotPacing(interval=lambda: self.snap_every,
                                       max_fraction=cfg.checkpoint.snapshot_max_cost)
        self.checks = C.default_checks(
            h, world=world, rank=rank, emit=run.emit, guard=self.guard, pacing=self.pacing,
            watchdog=watchdog, thermal=thermal,
            rebalancer=fleet.rebalancer if fleet is not None else None, shares=lambda: self.shares,
            total_steps=t.steps) + list(checks)
        if pipeline is not None:  # measured stage times (each checkpoint interval), re-split
            from mixfleet.train.parallel.resplit import StageBalance
            from mixfleet.train.parallel.stagetimes import StageTimes

            chunks = self.strategy.chunks  # type: ignore[attr-defined]
            self.checks.append(StageTimes(
                pipeline, chunks, every=cfg.checkpoint.interval,
                total_steps=t.steps, emit=run.emit if rank == 0 else None,
                emulated=emu is not None))
            if cfg.parallel.resplit_every:
                self.checks.append(StageBalance(
                    pipeline, lambda: chunks.busy_s, every=cfg.parallel.resplit_every,
                    hysteresis=cfg.parallel.resplit_hysteresis, world=world))
        self.manager.bind(self.checks)
        self._loss = functools.partial(workload.loss, self.model)  # loss(batch)
        take = workload.train_set.take  # samples -> a batch on this rank's device
        self._take = take if device.type == "cpu" else (
            lambda i: tuple(x.to(device, non_blocking=True) for x in take(i)))
        labels = {"device": str(device), **({"emulated": emu.device_string} if emu else {}),
                  **({"device_slot": emu.slot} if emu and emu.slot else {})}
        self.state = CheckpointManager(
            strategy=self.strategy, opt=self.opt, run=run, rank=rank, world=world, group=group,
            device=device, labels=labels, host_rng=cfg.checkpoint.snapshot_host_rng,
            overlap=cfg.checkpoint.snapshot_overlap,
            ckpt=Checkpointer(run.checkpoints, rank=rank, group=ckpt_group,
                              keep=cfg.checkpoint.keep, asynchronous=cfg.checkpoint.asynchronous,
                              emit=run.emit, faults=self.faults),
            shared={"sampler": Adapter(lambda: self.sampler.state_at(self.step),
                                       self.sampler.load_state_dict),
                    "lr_schedule": SchedulerState(self.sched),
                    "shares": Adapter(lambda: list(self.shares), self._load_shares),
                    "guards": self.guard},
            own={"emu": emu} if emu is not None else {},
            info={"config_hash": config_hash(cfg), "workload": workload.name,
                  "parallel": self.strategy.name, "groups": list(groups),
                  **({"stages": pipeline.fields()} if pipeline is not None else {})})
        if self.snap_every and not self.state.snapshots.fit(
                t.optimizer, cfg.checkpoint.snapshot_memory_gib, local_world, self.snap_every):
            self.snap_every = 0
        # Rank 0's step records (flushed before anything commits) and the step reached.
        self.metrics = StepLog(run) if rank == 0 else None
        self.skip: set[int] = set(t.skip_batches) | read_skip_list(run)
        self._saved = -1
        self._drained: Drain | Restage | None = None

    # -- state objects ---------------------------------------------------------------------
    @property
    def shares(self) -> list[int]:
        return list(self._shares)

    def _load_shares(self, shares: Any) -> None:
        fits = (self.fleet.rebalancer.fits(shares) if self.fleet is not None else
                shares == equal_shares(self.B, self.world))
        if fits and shares != self._shares:
            self.set_shares(shares, "resume")

    def resume(self) -> int | None:
        """Resume from the newest committed state (memory or disk); its step, or None."""
        step = self.state.resume(enabled_memory=bool(self.snap_every))
        if step is not None:
            self.step = self._saved = step
        return step

    # -- what the actions call -------------------------------------------------------------
    def checkpoint_now(self) -> None:
        if self.step % self.cfg.checkpoint.interval:
            self._save()

    def flush_metrics(self) -> None:
        """Write the step records gathered so far (before anything commits)."""
        if self.metrics is not None:
            self.metrics.flush()

    def _save(self) -> None:
        if self._saved != self.step:
            self._saved = self.step
            self.flush_metrics()
            self.state.save(self.step)

    def drain(self, rank: int, reason: str) -> None:
        """Checkpoint, put ``rank``'s device on the block list; the loop then stops on
        every rank and the launcher restarts the run without it."""
        self._save()
        self.state.ckpt.wait()
        if self.world > 1:
            torch.distributed.barrier(group=self.strategy.group)
        if self.rank == 0:  # the job's rank ([[ranks]] order; a pipeline's ranks are permuted)
            job_rank = self.pipeline.order[rank] if self.pipeline is not None else rank
            add_drained(self.run.root, rank=job_rank, step=self.step)
            self.run.emit(Event.DRAIN, rank=rank, step=self.step, world_size=self.world,
                          reason=reason)

    def restage(self, blocks: Sequence[int], reason: str, **details: Any) -> None:
        """A pipeline's new split: checkpoint, record it for the launcher (which relaunches
        with it); the loop then stops on every rank."""
        self._save()
        self.state.ckpt.wait()
        if self.world > 1:
            torch.distributed.barrier(group=self.strategy.group)
        if self.rank == 0:
            write_restage(self.run, {"blocks": list(blocks), "reason": reason,
                                     "step": self.step, **details})

    def shed(self, rank: int) -> None:
        new = shed_shares(self._shares, rank)
        if new is not None:
            self.set_shares(new, f"thermal shed of rank {rank}")

    def set_shares(self, shares: Sequence[int], reason: str, **details: Any) -> None:
        old, self._shares = self._shares, list(shares)
        if self.rank == 0:
            self.run.emit(Event.SHARES_CHANGED, step=self.step, old=old, new=list(shares),
                          reason=reason, **details)

    def set_snapshot_interval(self, interval: int, reason: str) -> None:
        self.snap_every = interval  # every rank at once: snapshots stay aligned
        if self.rank == 0:
            self.run.emit(Event.SNAPSHOT_INTERVAL, interval=interval, step=self.step, reason=reason)

    def rollback(self, bad_steps: Sequence[int]) -> None:
        """Skip ``bad_steps``' batches from now on and reload the newest checkpoint before
        them (the same restore path as a resume)."""
        self.skip |= set(bad_steps)
        self.guard.reset()
        if self.rank == 0:
            write_skip_list(self.run, self.skip)
        target = self.state.newest_before(min(bad_steps))
        if self.rank == 0:
            self.run.emit(Event.ROLLBACK, bad_steps=list(bad_steps),
                          to_step=target[0] if target else None)
        step = self.state.load_disk(target[1]) if target else None
        if step is not None:
            self.step = self._saved = step

    def pause_until_cool(self, guard: ThermalGuard) -> None:
        self.flush_metrics()
        with self.watchdog.paused() if self.watchdog is not None else contextlib.nullcontext():
            paused = guard.cool(self.clock, self.emu.idle if self.emu is not None else None)
        self.run.emit(Event.THERMAL_RESUMED, rank=self.rank, step=self.step,
                      temp_c=round(guard.temperature(), 2), paused_s=round(paused, 3))

    # -- the loop --------------------------------------------------------------------------
    def train_step(self) -> StepOutcome:
        """One global step (committed or not); the emulated chip paces it."""
        if self.emu is not None:
            self.emu.step_begin()
        if self.step + 1 in self.skip:  # a batch skipped after a rollback: every rank alike
            out = self.manager.skipped(self.step)
        else:
            if self.pipeline is not None:  # the schedule cuts the whole global batch
                out = self.manager.step(self.step, [(self._pipeline_batch(), True)], self._loss)
            elif self.fleet is None:  # one micro-batch: the whole slice
                idx = self.sampler.rank_batch(self.step, self._shares, self.rank)
                out = self.manager.step(self.step, [(self._take(idx), True)], self._loss)
            else:  # a mixed fleet: micro-batches, an emulated chip paced around them
                idx = self.sampler.rank_batch(self.step, self._shares, self.rank)
                out = self.fleet.steps.step(self.manager, self.step, idx, self._shares,
                                            self._take, self._loss)
            if out.committed:
                if self.state.snapshots.pending is not None:  # finish the overlapped copy
                    self.state.snapshots.wait()
                self.strategy.optimizer_step(self.opt)
        self.sched.step()
        self.step += 1
        if self.emu is not None:  # raises EmulatedFault when the chip "crashes"
            self.emu.end_step(self.run.emit, train_step=self.step)
        return out

    def _pipeline_batch(self) -> Any:
        """The global batch on a pipeline's first and last stages (inputs, targets); None
        on the stages between, which read only activations."""
        pipe = getattr(self.strategy, "pipe", None)
        if pipe is not None and not (pipe.is_first or pipe.is_last):
            return None
        return self._take(self.sampler.global_batch_at(self.step))

    def evaluate(self) -> tuple[str, float] | None:
        if self.workload.evaluate is None:
            return None
        model = self.model
        if self.pipeline is not None:  # the stages gathered into rank 0's whole model
            weights = self.strategy.full_state_dict()  # every rank takes part
            if self.rank != 0:
                return None
            if self._eval_model is None:
                with torch.random.fork_rng(devices=[]):  # the training's random stream
                    self._eval_model = self.workload.build_model().to(self.device)
            model = self._eval_model
            model.load_state_dict(weights)
        model.eval()
        try:
            return self.workload.evaluate(model, self.device)
        finally:
            model.train()

    def fit(self) -> dict[str, Any]:
        """Train until ``train.steps`` or a drain; returns {steps_run, elapsed_s,
        final_metric, drained}."""
        t, clock, faults, metrics = self.cfg.train, self.clock, self.faults, self.metrics
        on_step, checks, interval = self.on_step, self.checks, self.cfg.checkpoint.interval
        start, sps = self.step, 0.0
        t0 = last = clock.perf()
        cpu0 = clock.cpu()
        while self.step < t.steps:
            if faults.active:
                faults.step_start(self.step)
            out = self.train_step()
            now, cpu = clock.perf(), clock.cpu()
            out.step_s, last = now - last, now
            sps = self.B / out.step_s if sps == 0.0 else 0.9 * sps + 0.1 * self.B / out.step_s
            rec: dict[str, Any] = {"step": self.step, "loss": out.loss,
                                   "lr": self.opt.param_groups[0]["lr"], "step_s": out.step_s,
                                   "cpu_s": round(cpu - cpu0, 6), "samples_per_s": sps,
                                   "t": clock.wall()}
            if self.emu is not None:
                rec["emulated"] = True
                rec.update(self.emu.labels)  # emulated_as, time_scale
                if self.emu.last_report is not None:  # the pace the chip set for the step
                    rec["budget_s"] = round(self.emu.last_report.budget_s, 6)
                    if self.emu.links is not None:
                        rec["comm_s"] = round(self.emu.last_report.comm_s, 6)
            held = False  # work after the step that is not a step's (cpu0 is read again)
            if t.eval_every and self.step % t.eval_every == 0 and self._evaluates():
                held = True
                res = self.evaluate()
                if res and self.rank == 0:
                    rec[res[0]] = res[1]
            if metrics is not None:
                metrics.write(rec)
            if on_step is not None:
                on_step(rec)
            if faults.active:
                faults.after_step(self.step, thermal=self.thermal, emu=self.emu)
            actions: list[Action] = []
            for c in checks:
                if acts := c.observe(out):
                    actions += acts
            if actions:
                held = True
                if (drained := apply_actions(self, actions)) is not None:
                    self._drained = drained
                    break
            if self.snap_every and self.step % self.snap_every == 0:
                held = True
                flushed = clock.perf()
                self.flush_metrics()  # the records of the steps a snapshot makes safe
                flushed = clock.perf() - flushed
                self.pacing.record(flushed + self.state.snapshot(self.step))
            if self.step % interval == 0 and self.step < t.steps:
                held = True
                self._save()
            # step_s covers the step itself, cpu_s the step and the loop's bookkeeping of
            # the step before; pauses, evaluations, snapshots and checkpoint staging are not
            # productive time (ETTR). The process's CPU clock is a system call that sums
            # every thread's time (~2 us with gloo's threads): read once a step unless
            # something like that ran since.
            last, cpu0 = clock.perf(), clock.cpu() if held else cpu
        self.flush_metrics()
        synchronize(self.device)
        elapsed = clock.perf() - t0
        if self._drained is not None:  # a drain or a re-split: the launcher relaunches
            return {"steps_run": self.step - start, "elapsed_s": elapsed, "final_metric": None,
                    "drained": getattr(self._drained, "rank", -1)}
        self._save()
        self.state.finish(self.step)
        return {"steps_run": self.step - start, "elapsed_s": elapsed, "drained": None,
                "final_metric": self.evaluate() if self._evaluates() else None}

    def _evaluates(self) -> bool:
        """Rank 0 evaluates; every rank when a forward is a collective (fsdp)."""
        return self.rank == 0 or self.strategy.collective_forward

    def final_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model as CPU tensors (under fsdp a collective: every rank calls it,
        rank 0 gets the weights)."""
        return self.strategy.full_state_dict()
