"""The training loop of one rank.

Each step takes this rank's slice of the global batch from the
:class:`~mixfleet.train.sampler.GlobalBatchSampler`, backpropagates its summed loss
scaled by 1/B, and sums gradients across ranks with one all-reduce over a flat buffer
that the parameters' ``.grad`` tensors are views of (the global loss rides in its last
slot). With shares summing to B this equals a single process with batch B up to float
rounding, whatever the number of ranks.

The trainer never prints: it reports through ``emit`` (events) and ``on_step`` (metrics).
"""

from __future__ import annotations

import math
import shutil
import socket
import statistics
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from mixfleet import __version__
from mixfleet.config import config_hash
from mixfleet.emulate import EmulatedDevice
from mixfleet.train import actions
from mixfleet.train.checkpoint import (
    Checkpointer,
    committed_steps,
    step_dir_name,
    validate_step_dir,
)
from mixfleet.train.config import RunConfig
from mixfleet.train.device import synchronize
from mixfleet.train.faults import FaultPlan
from mixfleet.train.health import StepGuard, StragglerDetector, ThermalGuard, Watchdog
from mixfleet.train.rebalance import ShareController
from mixfleet.train.rng import get_rng_state, raw_rng_state, set_raw_rng_state, set_rng_state
from mixfleet.train.rundir import (
    JsonLines,
    RunDir,
    read_skip_list,
)
from mixfleet.train.sampler import GlobalBatchSampler, equal_shares
from mixfleet.train.snapshot import MemorySnapshot, peek_snapshot, snapshot_path
from mixfleet.workloads import Workload

__all__ = ["Trainer", "lr_factor"]


def lr_factor(step: int, steps: int, warmup: int, schedule: str) -> float:
    """LR multiplier at ``step``: linear warmup, then constant or cosine down to 10%."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    """Trains ``workload`` on this rank; see the module docstring."""

    def __init__(self, cfg: RunConfig, workload: Workload, *, run: RunDir, device: torch.device,
                 rank: int = 0, world: int = 1, group: Any = None, ckpt_group: Any = None,
                 shares: list[int] | None = None, emu: EmulatedDevice | None = None,
                 on_step: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg, self.workload, self.run, self.device = cfg, workload, run, device
        self.emu = emu  # an emulated chip paces each step and may fail (EmulatedFault)
        self.rank, self.world, self.group = rank, world, group
        t = cfg.train
        self.B = t.global_batch
        self.shares = shares or equal_shares(self.B, world)
        self.sampler = GlobalBatchSampler(len(workload.train_set), self.B, t.seed)
        torch.manual_seed(t.seed)
        self.model = workload.build_model().to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        n = sum(p.numel() for p in params)
        # One flat buffer, one all-reduce a step: [gradients | checkpoint request |
        # drain request per rank | compute seconds per rank | loss]. Every rank then holds
        # the same health data and reaches the same decisions without another collective.
        self.n_grad, self.i_ckpt, self.i_drain, self.i_time = n, n, n + 1, n + 1 + world
        self.i_snap = n + 1 + 2 * world  # a rank asks for sparser snapshots (too costly)
        self.i_shed = n + 2 + 2 * world  # per rank: too hot, give away half its share
        self.flat = torch.zeros(n + 3 + 3 * world, device=device)
        self._flat_np = self.flat.numpy() if device.type == "cpu" else None
        self._grads, self._loss_slot = self.flat[:n], self.flat[-1:]
        off = 0
        for p in params:
            p.grad = self.flat[off: off + p.numel()].view_as(p)
            off += p.numel()
        if t.optimizer == "sgd":
            self.opt: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        else:
            self.opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, t.steps, t.warmup_steps, t.schedule))
        self.step = 0
        self.faults = FaultPlan(cfg.faults.specs(cfg.launch.nproc, t.steps), rank, run.root)
        self.ckpt = Checkpointer(run.checkpoints, rank=rank, group=ckpt_group,
                                 keep=cfg.checkpoint.keep,
                                 asynchronous=cfg.checkpoint.asynchronous,
                                 emit=run.emit, faults=self.faults)
        self.metrics = JsonLines(run.metrics_path) if rank == 0 else None
        self.snap: MemorySnapshot | None = None
        self._snap_nstate = -1
        self._snap_cost: list[float] = []
        self._rng_buf = torch.get_rng_state().clone()
        self._dev_rng_buf = (torch.get_device_module(device).get_rng_state(device).clone()
                             if device.type != "cpu" else None)
        self._scalars = torch.zeros(2 + len(self.opt.param_groups), dtype=torch.float64)
        self._scalars_np = self._scalars.numpy()
        self.snap_path = snapshot_path(run.root, world, rank)
        self.resumed_source: str | None = None
        self.on_step = on_step
        self.hetero: ShareController | None = None  # mixed fleet: set by rebalance.attach
        h = cfg.health
        self.guard = StepGuard(nan_guard=h.nan_guard, spike_factor=h.spike_factor,
                               rollback_after=h.rollback_after)
        self.stragglers = StragglerDetector(world=world, window=h.straggler_window,
                                            factor=h.straggler_factor,
                                            windows=h.straggler_windows)
        self.skip: set[int] = set(cfg.train.skip_batches) | read_skip_list(run)
        self.bad_steps: deque[int] = deque(maxlen=64)  # recent uncommitted steps
        self.thermal: ThermalGuard | None = None  # set by the worker (needs telemetry)
        self.watchdog: Watchdog | None = None
        self._want_ckpt = False
        self._want_drain = False
        self._want_sparser = False
        self._want_shed = False
        self._thermal_quiet_until = 0
        self.snap_every = cfg.checkpoint.snapshot_interval
        self._step_times: deque[float] = deque(maxlen=200)  # recent step times
        self._t_reduced = time.perf_counter()
        self._reduced = False  # whether this step's health slots came from an all-reduce
        self.config_hash = config_hash(cfg)

    # -- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The tensors a checkpoint holds (model and optimizer, by parameter name)."""
        model_sd, optim_sd = get_state_dict(self.model, self.opt)
        return {"model": model_sd, "optim": optim_sd}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_state_dict(self.model, self.opt, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])

    def manifest(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "sampler": {**self.sampler.state_dict(), "cursor_step": self.step,
                        "epoch": self.sampler.epoch_of(self.step)},
            "lr_schedule": {k: v for k, v in self.sched.state_dict().items()
                            if k != "lr_lambdas"},
            "config_hash": self.config_hash,
            "workload": self.workload.name,
            "shares": list(self.shares),
            "world_size": self.world,
            "mixfleet_version": __version__,
            "torch_version": torch.__version__,
            "time": time.time(),
            "per_rank": {"rank": self.rank, "device": str(self.device),
                         "host": socket.gethostname(), "share": self.shares[self.rank],
                         "rng": get_rng_state(self.device),
                         **({"emulated": self.emu.device_string, "emu": self.emu.state_dict()}
                            if self.emu is not None else {})},
        }

    def _checkpoint(self) -> None:
        self.ckpt.save(self.step, self.state_dict(), self.manifest())

    # -- in-memory snapshots -----------------------------------------------------------
    def _snapshot_tensors(self) -> list[tuple[str, torch.Tensor]]:
        named = list(self.model.state_dict().items())
        named += [("rng.torch", self._rng_buf), ("scalars", self._scalars)]
        if self._dev_rng_buf is not None:
            named.append(("rng.device", self._dev_rng_buf))
        params = [p for g in self.opt.param_groups for p in g["params"]]
        for i, p in enumerate(params):
            for k, v in sorted(self.opt.state.get(p, {}).items()):
                if isinstance(v, torch.Tensor):
                    named.append((f"optim.{i}.{k}", v))
        return named

    def _snapshot_store(self) -> MemorySnapshot:
        if self.snap is None or self._snap_nstate != len(self.opt.state):
            self._snap_nstate = len(self.opt.state)
            self.snap = MemorySnapshot(self.snap_path, self._snapshot_tensors())
        return self.snap

    def _snapshot(self) -> None:
        """Copy the state to host shared memory (survives this process's crash).

        Model, optimizer state, torch (and device) RNG and the LR go in as tensors; the
        python/numpy RNG (pickled, ~100 us) only with checkpoint.snapshot_host_rng."""
        t0 = time.perf_counter()
        self._rng_buf.copy_(torch.get_rng_state())
        if self._dev_rng_buf is not None:
            self._dev_rng_buf.copy_(torch.get_device_module(self.device).get_rng_state(
                self.device))
        lrs = [g["lr"] for g in self.opt.param_groups]
        sc = self._scalars_np
        sc[0], sc[1] = self.step, self.sched.last_epoch
        for i, lr in enumerate(lrs):
            sc[2 + i] = lr
        meta = ({"rng": raw_rng_state(torch.device("cpu"))}
                if self.cfg.checkpoint.snapshot_host_rng else None)
        self._snapshot_store().write(self.step, meta)
        self._snap_cost.append(time.perf_counter() - t0)

    def _judge_snapshot_cost(self) -> None:
        """After 20 snapshots: ask (through the next all-reduce) for half as many when one
        costs over 5% of the steps it covers."""
        if len(self._snap_cost) < 20:
            return
        cost = statistics.median(self._snap_cost)
        step_s = statistics.median(self._step_times)
        self._snap_cost.clear()
        self._want_sparser = cost > 0.05 * step_s * self.snap_every

    def _resume_from_memory(self, disk_step: int) -> int | None:
        """Restore the newest snapshot that every rank holds, if newer than ``disk_step``."""
        gasp = self._gasp_path()
        if not self.snap_path.exists() and gasp.exists():  # restarted on another machine
            shutil.copyfile(gasp, self.snap_path)
        layout, steps = (peek_snapshot(self.snap_path) if self.cfg.checkpoint.snapshot_interval
                         else (0, {}))
        everyone: list[Any] = [sorted(steps)]
        if self.world > 1:
            everyone = [None] * self.world
            dist.all_gather_object(everyone, sorted(steps), group=self.group)
        common = set(everyone[0]).intersection(*everyone[1:])
        step = max(common, default=None)
        if step is None or step <= disk_step:
            return None
        self._init_optimizer_state()
        snap = self._snapshot_store()
        ok = int(snap.layout == layout and step in snap.valid_steps())
        if self.world > 1:
            flag = torch.tensor([ok], device=self._flag_device())
            dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self.group)
            ok = int(flag.item())
        if not ok:
            return None
        meta = snap.read(step)
        if "rng" in meta:
            set_raw_rng_state(meta["rng"], torch.device("cpu"))
        torch.set_rng_state(self._rng_buf.clone())
        if self._dev_rng_buf is not None:
            torch.get_device_module(self.device).set_rng_state(self._dev_rng_buf.clone(),
                                                              self.device)
        lrs = self._scalars[2: 2 + len(self.opt.param_groups)].tolist()
        for g, lr in zip(self.opt.param_groups, lrs, strict=True):
            g["lr"] = lr
        self.sched.last_epoch = int(self._scalars[1])
        self.sched._step_count = self.sched.last_epoch + 1
        self.sched._last_lr = lrs
        self.step = step
        self.resumed_source = "memory"
        return step

    def discard_snapshot(self) -> None:
        if self.snap is not None:
            self.snap.remove()
            self.snap = None
        self._gasp_path().unlink(missing_ok=True)

    def _gasp_path(self) -> Path:
        return self.run.root / "gasp" / self.snap_path.name

    def gasp(self) -> Path | None:
        """Dying gasp: persist the newest in-memory snapshot to the run directory."""
        if self.snap is None or not self.snap.valid_steps():
            return None
        path = self.snap.persist(self._gasp_path())
        self.run.emit("dying_gasp", rank=self.rank, step=max(self.snap.valid_steps()),
                      path=str(path))
        return path

    # -- resume ------------------------------------------------------------------------
    def resume(self) -> int | None:
        """Resume from the newest state every rank can read: an in-memory snapshot when
        it is newer than the newest committed disk checkpoint. Its step, or None."""
        cands: list[Any] = [None]
        if self.rank == 0:
            valid, torn = committed_steps(self.run.checkpoints)
            for d, reason in torn:
                self.run.emit("checkpoint_skipped", dir=str(d), reason=reason)
            cands = [[(s, str(d)) for s, d in valid]]
        if self.world > 1:
            dist.broadcast_object_list(cands, src=0, group=self.group)
        newest_disk = cands[0][0][0] if cands[0] else -1
        self.ckpt.last_committed = newest_disk if newest_disk >= 0 else None
        if self._resume_from_memory(newest_disk) is not None:
            return self.step
        for step, d in cands[0] or []:
            self._init_optimizer_state()
            state = self.state_dict()
            ok, manifest = 1, None
            try:
                manifest = self.ckpt.load(Path(d), state)
            except Exception as e:  # noqa: BLE001 - fall back to an older checkpoint
                ok = 0
                if self.rank == 0:
                    self.run.emit("checkpoint_skipped", dir=d, reason=str(e))
            if self.world > 1:
                flag = torch.tensor([ok], device=self._flag_device())
                dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self.group)
                ok = int(flag.item())
            if not ok or manifest is None:
                continue
            self.load_state_dict(state)
            self.sampler.load_state_dict(manifest["sampler"])
            self.sched.load_state_dict({**self.sched.state_dict(), **manifest["lr_schedule"]})
            per_rank = manifest.get("per_rank") or []
            if self.rank < len(per_rank):
                set_rng_state(per_rank[self.rank]["rng"], self.device)
                if self.emu is not None and per_rank[self.rank].get(
                        "emulated") == self.emu.device_string:  # same chip as then
                    self.emu.load_state_dict(per_rank[self.rank]["emu"])
            self.step = step
            self.resumed_source = "disk"
            return step
        return None

    def _init_optimizer_state(self) -> None:
        """Create the optimizer's state tensors (a step with zero gradients and lr 0), so
        that a checkpoint can be loaded into them. Only used before loading one."""
        if self.opt.state:
            return
        lrs = [g["lr"] for g in self.opt.param_groups]
        self.flat.zero_()
        for g in self.opt.param_groups:
            g["lr"] = 0.0
        self.opt.step()
        for g, lr in zip(self.opt.param_groups, lrs, strict=True):
            g["lr"] = lr

    # -- the loop ----------------------------------------------------------------------
    def train_step(self) -> float:
        """One global step; returns the global mean loss (NaN if not committed)."""
        if self.step + 1 in self.skip:  # a batch skipped after a rollback: every rank alike
            self.flat.zero_()
            self._reduced = False
            self.sched.step()
            self.step += 1
            return float("nan")
        self._reduced = True
        idx = self.sampler.rank_batch(self.step, self.shares, self.rank)
        self.flat.zero_()
        for chunk in self.hetero.micro_batches(idx) if self.hetero is not None else [idx]:
            if not len(chunk):
                continue
            batch = self.workload.train_set.take(chunk)
            if self.device.type != "cpu":
                batch = tuple(t.to(self.device, non_blocking=True) for t in batch)
            scaled = self.workload.loss(self.model, batch) / self.B
            scaled.backward()
            self._loss_slot.add_(scaled.detach())
        self._before_reduce()
        if self.hetero is not None:
            self.hetero.all_reduce(self.flat)  # hierarchical across kinds; paces emulation
        elif self.world > 1:
            dist.all_reduce(self.flat, group=self.group)
        self._t_reduced = time.perf_counter()
        h = self._host_slots()
        loss = float(h[-1])
        grads = self._grads
        # The norm only when spikes are watched; else the sum (NaN/inf propagate) is enough.
        size = grads.norm() if self.guard.spike_factor else grads.sum()
        reason = self.guard.verdict(loss, float(size.item()))
        if reason is None:
            self.opt.step()
        else:
            self.bad_steps.append(self.step + 1)
            if self.rank == 0:
                self.run.emit("step_skipped", step=self.step + 1, reason=reason, loss=loss)
        self.sched.step()
        self.step += 1
        return loss

    def _flag_device(self) -> torch.device:
        """Where a small control tensor for ``self.group`` lives (host for gloo)."""
        backend = dist.get_backend(self.group) if self.world > 1 else "gloo"
        return torch.device("cpu") if backend == "gloo" else self.flat.device

    def _host_slots(self) -> Any:
        """The health slots and the loss (everything after the gradients) on the host."""
        if self._flat_np is not None:
            return self._flat_np[self.n_grad:]
        return self.flat[self.n_grad:].cpu().numpy()

    def _before_reduce(self) -> None:
        """Injected faults of this step, and this rank's health slots of the buffer."""
        f = self.faults
        if f.due("nan", self.step + 1):
            self.run.emit("fault_injected", kind="nan", rank=self.rank, step=self.step + 1)
            self.flat[: self.n_grad] = float("nan")
        compute = time.perf_counter() - self._t_reduced
        if f.due("slow", self.step) is not None:
            self.run.emit("fault_injected", kind="slow", rank=self.rank, step=self.step)
        factor = f.slow_factor(self.step)
        if factor > 1:
            time.sleep((factor - 1) * compute)
            compute *= factor
        vals = (float(self._want_ckpt), float(self._want_drain), compute,
                float(self._want_sparser), float(self._want_shed))
        where = (self.i_ckpt, self.i_drain + self.rank, self.i_time + self.rank, self.i_snap,
                 self.i_shed + self.rank)
        if self._flat_np is not None:  # CPU: numpy scalar writes are ~20x cheaper
            for i, v in zip(where, vals, strict=True):
                self._flat_np[i] = v
        else:
            self.flat.index_copy_(0, torch.tensor(where, device=self.flat.device),
                                  torch.tensor(vals, dtype=self.flat.dtype,
                                               device=self.flat.device))
        self._want_ckpt = self._want_sparser = self._want_shed = False

    def _emulated_step(self) -> float:
        """A step paced to the emulated chip's speed; its throttle/fault events are logged."""
        assert self.emu is not None
        self.emu.step_begin()
        loss = self.train_step()
        try:
            self.emu.step_end()  # raises EmulatedFault when the chip "crashes"
        finally:
            for ev in self.emu.drain_events():
                kind = str(ev.pop("kind")).replace("-", "_")
                self.run.emit(kind, **{**ev, "train_step": self.step})
        return loss

    def evaluate(self) -> tuple[str, float] | None:
        if self.workload.evaluate is None:
            return None
        self.model.eval()
        try:
            return self.workload.evaluate(self.model, self.device)
        finally:
            self.model.train()

    def fit(self) -> dict[str, Any]:
        """Train until ``train.steps``; returns {steps_run, final_metric, ...}."""
        t = self.cfg.train
        interval = self.cfg.checkpoint.interval
        start = self.step
        t0 = last = time.perf_counter()
        sps = 0.0
        while self.step < t.steps:
            if self.faults.due("kill", self.step):
                self.run.emit("fault_injected", kind="kill", rank=self.rank, step=self.step)
                self.faults.kill_self()
            hang = self.faults.due("hang", self.step)
            if hang is not None:
                self.run.emit("fault_injected", kind="hang", rank=self.rank, step=self.step)
                time.sleep(hang.args["seconds"])
            if self.emu is None:
                loss = self.train_step()
            else:
                loss = self._emulated_step()
            now = time.perf_counter()
            dt, last = now - last, now
            sps = self.B / dt if sps == 0.0 else 0.9 * sps + 0.1 * self.B / dt
            rec: dict[str, Any] = {"step": self.step, "loss": loss,
                                   "lr": self.sched.get_last_lr()[0], "step_s": dt,
                                   "samples_per_s": sps, "t": time.time()}
            if self.emu is not None:
                rec["emulated"] = True
            if t.eval_every and self.step % t.eval_every == 0 and self.rank == 0:
                res = self.evaluate()
                if res:
                    rec[res[0]] = res[1]
            if self.metrics is not None:
                self.metrics.write(rec)
            if self.on_step is not None:
                self.on_step(rec)
            if self.hetero is not None:
                self.hetero.after_step(self)  # timing, injected throttles, rebalance
            actions.after_step(self)
            self._step_times.append(dt)
            if self.snap_every and self.step % self.snap_every == 0:
                self._snapshot()
                self._judge_snapshot_cost()
            if self.step % interval == 0 and self.step < t.steps:
                self._checkpoint()
            # step_s covers the step itself; pauses, snapshots and checkpoint staging after
            # it are not productive time (ETTR).
            last = time.perf_counter()
        synchronize(self.device)
        elapsed = time.perf_counter() - t0
        self._checkpoint()
        self.ckpt.close()
        if self.world > 1:
            dist.barrier(group=self.group)  # rank 0 has committed (or failed) the final one
        if validate_step_dir(self.run.checkpoints / step_dir_name(self.step)) is None:
            self.discard_snapshot()  # the final state is on disk: nothing left to recover
        return {"steps_run": self.step - start, "elapsed_s": elapsed,
                "final_metric": self.evaluate() if self.rank == 0 else None}

    def final_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
