"""The checkpoint manager: saves and restores the trainer's state through objects that
each own a ``state_dict()`` — model and optimizer (through the reduction strategy), LR
schedule, sampler, shares, step guard, RNG and the emulated chip — to the two tiers:

- a disk checkpoint (DCP, asynchronous, committed; :mod:`mixfleet.train.checkpoint.dcp`): the
  tensors in DCP files, everything else in ``manifest.json``;
- an in-memory snapshot (:class:`~mixfleet.train.checkpoint.snapshotter.Snapshotter`, the
  ``snapshots`` attribute): the tensors copied in place into host shared memory, everything
  else as the snapshot's metadata, in the same form as the manifest.

Resume (from memory or disk) and rollback (from disk) go through one restore path,
:meth:`CheckpointManager._restore`, so they restore the same set of objects.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist

from mixfleet import __version__
from mixfleet.config import Section, field
from mixfleet.errors import CheckpointError
from mixfleet.runs import Event
from mixfleet.train.checkpoint.dcp import (
    Checkpointer,
    committed_steps,
    step_dir_name,
    validate_step_dir,
)
from mixfleet.train.checkpoint.rng import get_rng_state, set_rng_state
from mixfleet.train.checkpoint.snapshotter import Snapshotter
from mixfleet.train.checkpoint.stateful import Stateful
from mixfleet.train.exchange import all_gather_json, broadcast_json
from mixfleet.train.parallel.strategy import ReductionStrategy
from mixfleet.train.rundir import RunDir

__all__ = ["CheckpointConfig", "CheckpointManager", "DEVICE_LABELS"]

#: The labels that name a rank's device in its saved state: the emulated chip kind and its
#: physical device (``RankDevice.device_slot``). A chip's state is restored only where all match.
DEVICE_LABELS = ("emulated", "device_slot")


class CheckpointManager:
    """One rank's saving and restoring; see the module docstring.

    ``shared`` objects are the same on every rank (one entry in the manifest each);
    ``own`` objects are this rank's (under ``per_rank`` in the manifest).
    """

    def __init__(self, *, strategy: ReductionStrategy, opt: torch.optim.Optimizer,
                 shared: dict[str, Stateful], own: dict[str, Stateful], run: RunDir,
                 ckpt: Checkpointer, rank: int, world: int, group: Any, device: torch.device,
                 labels: dict[str, Any], host_rng: bool, overlap: str = "off",
                 info: dict[str, Any] | None = None) -> None:
        self.strategy, self.opt, self.shared, self.own = strategy, opt, shared, own
        self.run, self.ckpt, self.rank, self.world, self.group = run, ckpt, rank, world, group
        self.device, self.labels = device, labels
        self.info = dict(info or {})  # recorded in the manifest, never restored
        self.snapshots = Snapshotter(strategy=strategy, opt=opt, run=run, rank=rank,
                                     world=world, device=device, labels=labels,
                                     host_rng=host_rng, overlap=overlap)
        self.restored: list[str] = []  # names restored by the last restore (tests read it)
        self.source: str | None = None  # "memory" or "disk" after a resume

    # -- what is saved -------------------------------------------------------------------
    def small_state(self, step: int) -> dict[str, Any]:
        """Everything but the tensors, as JSON-able values (manifest and snapshot meta)."""
        return {"step": step, **{k: o.state_dict() for k, o in self.shared.items()},
                "lrs": [g["lr"] for g in self.opt.param_groups]}

    def _own_state(self, rng: dict[str, Any]) -> dict[str, Any]:
        return {"rank": self.rank, "host": socket.gethostname(), "rng": rng, **self.labels,
                **{k: o.state_dict() for k, o in self.own.items()}}

    def save(self, step: int) -> None:
        """A disk checkpoint of ``step`` (staged now, written in the background)."""
        manifest = {**self.small_state(step), **self.info, "world_size": self.world,
                    "mixfleet_version": __version__, "torch_version": torch.__version__,
                    "time": time.time(),
                    "per_rank": self._own_state(get_rng_state(self.device))}
        self.ckpt.save(step, self.strategy.state_dict(self.opt), manifest)

    def snapshot(self, step: int) -> float:
        """An in-memory snapshot of ``step`` (:meth:`Snapshotter.take`); the seconds the step
        loop was held up by snapshots since the last call."""
        return self.snapshots.take(step, lambda: (
            self.small_state(step), {k: o.state_dict() for k, o in self.own.items()}))

    def close(self) -> None:
        """Wait for what is in flight (snapshot copy, checkpoint write) and stop the threads."""
        try:
            self.snapshots.wait()
            self.ckpt.close()
        finally:
            self.snapshots.shutdown()

    def finish(self, step: int) -> None:
        """After the last step, saved as ``step``: wait for the writes (:meth:`close`); once
        every rank has (rank 0 commits), drop the in-memory snapshot if that checkpoint is
        on disk (nothing is left to recover from memory)."""
        self.close()
        if self.world > 1:
            dist.barrier(group=self.group)
        if validate_step_dir(self.run.checkpoints / step_dir_name(step)) is None:
            self.snapshots.discard()

    # -- restoring -----------------------------------------------------------------------
    def _same_device(self, saved: dict[str, Any]) -> bool:
        """Whether per-rank state ``saved`` is this rank's device's: the same emulated chip
        kind on the same physical device (its heat belongs to that device)."""
        return all(saved.get(k) == self.labels.get(k) for k in DEVICE_LABELS)

    def _device_state(self, per_rank: list[Any]) -> dict[str, Any] | None:
        """The saved per-rank state of this rank's device: this rank's entry if it is the
        same device, else (a relaunch over other devices) the entry of this device."""
        if self.rank < len(per_rank) and self._same_device(per_rank[self.rank]):
            return dict(per_rank[self.rank])
        if self.labels.get("device_slot") is None:
            return None
        return next((dict(e) for e in per_rank if isinstance(e, dict)
                     and self._same_device(e)), None)

    def _restore(self, shared: dict[str, Any], own: dict[str, Any] | None,
                 rng: Callable[[], None]) -> int:
        """The one restore path: every object from its saved state (``own``: this rank's
        device's, None for a device not in it: a new device starts fresh); the step."""
        self.snapshots.wait()
        restored = []
        for name, obj in self.shared.items():
            if name in shared:
                obj.load_state_dict(shared[name])
                restored.append(name)
        for g, lr in zip(self.opt.param_groups, shared["lrs"], strict=True):
            g["lr"] = lr
        for name, obj in self.own.items():
            # an emulated chip's state only onto the same physical device as then
            if own is not None and name in own and self._same_device(own):
                obj.load_state_dict(own[name])
                restored.append(name)
        rng()
        self.restored = ["model", "optimizer", "lrs", "rng", *restored]
        return int(shared["step"])

    def _agree(self, ok: bool) -> bool:
        """True when every rank says ``ok``."""
        if self.world == 1:
            return ok
        backend = dist.get_backend(self.group)
        flag = torch.tensor([int(ok)], device="cpu" if backend == "gloo" else self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self.group)
        return bool(flag.item())

    def init_optimizer_state(self) -> None:
        """Create the optimizer's state tensors (a step with zero gradients and lr 0), so
        that saved state can be loaded into them. Only used before loading."""
        if self.opt.state:
            return
        lrs = [g["lr"] for g in self.opt.param_groups]
        self.strategy.zero_grad()
        self.strategy.materialize_grads()
        for g in self.opt.param_groups:
            g["lr"] = 0.0
        self.opt.step()
        for g, lr in zip(self.opt.param_groups, lrs, strict=True):
            g["lr"] = lr

    def load_disk(self, d: Path) -> int | None:
        """Restore checkpoint ``d`` on every rank; its step, or None (every rank alike)
        when some rank cannot read it."""
        self.snapshots.wait()
        self.init_optimizer_state()
        state = self.strategy.state_dict(self.opt)
        manifest = None
        try:  # hashes and metadata checked before DCP reads a byte (every rank agrees)
            self.ckpt.verify(d)
            verified = True
        except CheckpointError as e:
            verified = False
            self.run.emit(Event.CHECKPOINT_SKIPPED, dir=str(d), rank=self.rank, reason=str(e))
        if not self._agree(verified):
            return None
        try:
            manifest = self.ckpt.load(d, state)
        except Exception as e:  # noqa: BLE001 - fall back to an older checkpoint
            if self.rank == 0:
                self.run.emit(Event.CHECKPOINT_SKIPPED, dir=str(d), reason=str(e))
        if not self._agree(manifest is not None) or manifest is None:
            return None
        self.strategy.load_state_dict(self.opt, state)
        per_rank = manifest.get("per_rank") or []
        own = per_rank[self.rank] if self.rank < len(per_rank) else None

        def rng() -> None:
            if own is not None:
                set_rng_state(own["rng"], self.device)

        return self._restore(manifest, self._device_state(per_rank), rng)

    def load_memory(self, disk_step: int) -> int | None:
        """Restore the newest snapshot that every rank holds, if newer than ``disk_step``.
        A refused file (foreign owner, open mode, a link, crafted metadata) is never used:
        an event says so and every rank falls back to disk together."""
        layout, steps = self.snapshots.held()
        everyone: list[Any] = [sorted(steps)]
        if self.world > 1:
            everyone = all_gather_json(sorted(steps), group=self.group)
        step = max(set(everyone[0]).intersection(*everyone[1:]), default=None)
        if step is None or step <= disk_step:
            return None
        self.snapshots.wait()
        self.init_optimizer_state()
        meta = self.snapshots.read(step, layout)
        if not self._agree(meta is not None) or meta is None:
            return None  # (tensors a rank did read are overwritten by the disk restore)

        def rng() -> None:
            self.snapshots.restore_rng(meta["rng"])

        own = {**meta["own"], **meta.get("labels", {})}
        return self._restore(meta["shared"], own, rng)

    def resume(self, enabled_memory: bool) -> int | None:
        """Resume from the newest state every rank can read: an in-memory snapshot when
        it is newer than the newest committed disk checkpoint. Its step, or None."""
        cands: list[Any] = [None]
        if self.rank == 0:
            valid, torn = committed_steps(self.run.checkpoints)
            for d, reason in torn:
                self.run.emit(Event.CHECKPOINT_SKIPPED, dir=str(d), reason=reason)
            cands = [[(s, str(d)) for s, d in valid]]
        if self.world > 1:
            cands = [broadcast_json(cands[0], src=0, group=self.group)]
        newest_disk = cands[0][0][0] if cands[0] else -1
        self.ckpt.last_committed = newest_disk if newest_disk >= 0 else None
        if enabled_memory:
            step = self.load_memory(newest_disk)
            if step is not None:
                self.source = "memory"
                return step
        for _, d in cands[0] or []:
            step = self.load_disk(Path(d))
            if step is not None:
                self.source = "disk"
                return step
        return None

    def newest_before(self, step: int) -> tuple[int, Path] | None:
        """The newest committed checkpoint older than ``step`` (after the one in flight)."""
        self.ckpt.wait()
        valid, _ = committed_steps(self.run.checkpoints)
        return next(((s, d) for s, d in valid if s < step), None)


@dataclasses.dataclass(kw_only=True, frozen=True)
class CheckpointConfig(Section, section="checkpoint"):
    """The ``[checkpoint]`` table of a run config: persistent checkpoints and in-memory
    snapshots, as :class:`CheckpointManager` takes them."""

    interval: int = field(100, help="steps between persistent checkpoints", ge=1)
    keep: int = field(3, help="committed checkpoints to keep (older ones are deleted only "
                              "after a newer one is committed)", ge=1)
    asynchronous: bool = field(True, help="write in the background; the step loop only "
                                          "waits for the copy to host memory")
    snapshot_interval: int = field(1, help="steps between in-memory snapshots in host "
                                           "shared memory (a crash loses at most this many "
                                           "steps, or the sparser interval that "
                                           "snapshot_max_cost sets); 0 turns them off",
                                      ge=0)
    snapshot_max_cost: float = field(0.005, help="the most a snapshot may cost as a fraction "
                                                "of the steps it covers: measured over the "
                                                "first snapshots, the interval grows until "
                                                "it is under (at most 64 steps; every rank "
                                                "alike); 0 keeps snapshot_interval as set",
                                       ge=0, lt=1)
    snapshot_host_rng: bool = field(False, help="also snapshot python's and numpy's RNG "
                                                "(for workloads that draw from them)")
    snapshot_memory_gib: float = field(0.0, help="host memory for in-memory snapshots on "
                                                 "this node, shared by its ranks (0: half "
                                                 "of what is available at start); snapshots "
                                                 "that do not fit are turned off, and said so",
                                         ge=0)
    snapshot_overlap: Literal["auto", "on", "off"] = field(
        "auto", help="copy a snapshot on a side thread while the next step computes (it "
                     "completes before the next update): on, off, or auto (on for snapshots "
                     "of 64 MiB and more, where the copy costs more than the thread)")
    share_with_group: bool = field(False, help="let the group read this run directory (0750 "
                                               "directories, 0640 files) for teams who read "
                                               "each other's runs; default private (0700/0600)")
