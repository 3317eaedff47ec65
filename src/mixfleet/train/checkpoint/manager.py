"""The checkpoint manager: saves and restores the trainer's state through objects that
each own a ``state_dict()`` — model and optimizer (through the reduction strategy), LR
schedule, sampler, shares, step guard, RNG and the emulated chip — to the two tiers:

- a disk checkpoint (DCP, asynchronous, committed; :mod:`mixfleet.train.checkpoint.dcp`): the
  tensors in DCP files, everything else in ``manifest.json``;
- an in-memory snapshot (:mod:`mixfleet.train.checkpoint.snapshot`): the tensors copied in
  place into host shared memory, everything else as the snapshot's metadata, in the same form as the
  manifest.

Resume (from memory or disk) and rollback (from disk) go through one restore path,
:meth:`CheckpointManager._restore`, so they restore the same set of objects.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from mixfleet import __version__, safefs
from mixfleet.errors import CheckpointError
from mixfleet.runs import Event
from mixfleet.train.checkpoint.dcp import (
    Checkpointer,
    committed_steps,
    step_dir_name,
    validate_step_dir,
)
from mixfleet.train.checkpoint.hostmem import snapshot_budget, snapshot_bytes
from mixfleet.train.checkpoint.rng import get_rng_state, set_rng_state
from mixfleet.train.checkpoint.snapshot import (
    MemorySnapshot,
    SnapshotRefused,
    peek_snapshot,
    restore_copy,
    snapshot_path,
)
from mixfleet.train.exchange import all_gather_json, broadcast_json
from mixfleet.train.parallel.strategy import ReductionStrategy
from mixfleet.train.rundir import RunDir

__all__ = ["Stateful", "Adapter", "SchedulerState", "CheckpointManager", "OVERLAP_BYTES"]

#: ``snapshot_overlap = "auto"`` copies snapshots of this size and more on a side thread
#: (smaller ones cost less than handing them to a thread).
OVERLAP_BYTES = 64 * 2**20


class Stateful(Protocol):
    def state_dict(self) -> Any: ...
    def load_state_dict(self, state: Any) -> None: ...


class Adapter:
    """A ``state_dict()`` / ``load_state_dict()`` pair from two functions."""

    def __init__(self, get: Callable[[], Any], put: Callable[[Any], None]) -> None:
        self.state_dict, self.load_state_dict = get, put


class SchedulerState:
    """An LR scheduler's state without its lambdas (JSON-able)."""

    def __init__(self, sched: torch.optim.lr_scheduler.LRScheduler) -> None:
        self.sched = sched

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.sched.state_dict().items() if k != "lr_lambdas"}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.sched.load_state_dict({**self.sched.state_dict(), **d})


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
        self.device, self.labels, self.host_rng = device, labels, host_rng
        self.info = dict(info or {})  # recorded in the manifest, never restored
        self.snap: MemorySnapshot | None = None
        self.slots = 2  # double-buffered unless only one copy fits the host budget
        self._snap_nstate = (-1, -1)  # (optimizer states, strategy.state_generation)
        self.snap_path: Path | None = None  # None: no in-memory snapshots (refused)
        avoided: list[SnapshotRefused] = []  # a squatted or opened-up directory: a new one
        try:
            self.snap_path = snapshot_path(run.root, world, rank, refused=avoided)
        except SnapshotRefused as e:
            self._refused(e)
        for bad in avoided:
            run.emit(Event.SNAPSHOT_REFUSED, rank=rank, path=str(bad.path), reason=bad.reason,
                     instead=str(self.snap_path.parent) if self.snap_path else None)
        self._rng_buf = torch.get_rng_state().clone()
        self._dev_rng_buf = (torch.get_device_module(device).get_rng_state(device).clone()
                             if device.type != "cpu" else None)
        self.restored: list[str] = []  # names restored by the last restore (tests read it)
        # Overlapped snapshots: the copy runs on this thread while the next step computes;
        # wait_snapshot() before anything changes the tensors (the update, a restore).
        self.overlap = overlap
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        # the snapshot copy in flight on the side thread (snapshot_overlap), if any
        self.pending: concurrent.futures.Future[None] | None = None
        self._blocked = 0.0
        self.source: str | None = None  # "memory" or "disk" after a resume

    def _refused(self, e: SnapshotRefused) -> None:
        """A snapshot file or directory failed its ownership/mode check: not read, not
        written; said with an event (and a line on the console)."""
        self.run.emit(Event.SNAPSHOT_REFUSED, rank=self.rank, path=str(e.path), reason=e.reason)
        self.snap, self.snap_path = None, None

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

    # -- in-memory snapshots -------------------------------------------------------------
    def _store(self) -> MemorySnapshot:
        assert self.snap_path is not None
        key = (len(self.opt.state), self.strategy.state_generation(self.opt))
        if self.snap is None or self._snap_nstate != key:
            self._snap_nstate = key
            named = self.strategy.snapshot_tensors(self.opt) + [("rng.torch", self._rng_buf)]
            if self._dev_rng_buf is not None:
                named.append(("rng.device", self._dev_rng_buf))
            self.snap = MemorySnapshot(self.snap_path, named, slots=self.slots)
        return self.snap

    def snapshots_fit(self, optimizer: str, budget_gib: float, local_world: int,
                      interval: int) -> bool:
        """Size the in-memory snapshot against this rank's part of the host budget before
        the first step: double-buffered when two copies fit, a single buffer when only one
        does, off when not even that (each said with an event and a line)."""
        if self.snap_path is None:
            return False
        model = sum(t.numel() * t.element_size()
                    for _, t in self.strategy.snapshot_tensors(self.opt))
        need = snapshot_bytes(model, optimizer)
        budget = snapshot_budget(budget_gib, local_world, self.snap_path.parent)
        if need > budget and snapshot_bytes(model, optimizer, slots=1) <= budget:
            self.slots = 1  # half the memory; a crash during the copy falls back to disk
            self.run.emit(Event.SNAPSHOT_SINGLE_BUFFER, rank=self.rank, need_bytes=need,
                          single_bytes=snapshot_bytes(model, optimizer, slots=1),
                          budget_bytes=budget)
            return True
        if need > budget:
            self.run.emit(Event.SNAPSHOTS_OFF, rank=self.rank, need_bytes=need, budget_bytes=budget,
                          fix="raise [checkpoint] snapshot_memory_gib, use more ranks under "
                              "fsdp, or rely on disk checkpoints")
            return False
        if self.rank == 0:
            self.run.emit(Event.SNAPSHOT_PLAN, interval=interval, need_bytes=need,
                          budget_bytes=budget)
        return True

    def wait_snapshot(self) -> None:
        """Block until the snapshot copy in flight (if any) is in shared memory."""
        if self.pending is not None:
            t0 = time.perf_counter()
            try:
                self.pending.result()
            finally:
                self.pending = None
                self._blocked += time.perf_counter() - t0

    def snapshot(self, step: int) -> float:
        """Copy the state into host shared memory (survives this process's crash). The
        python/numpy RNG go in only with ``host_rng`` (checkpoint.snapshot_host_rng).
        Returns the seconds the step loop was held up by snapshots since the last call
        (this one's start, and the wait for the previous copy)."""
        t0 = time.perf_counter()
        self.wait_snapshot()
        if self.snap_path is None:
            return 0.0
        self._rng_buf.copy_(torch.get_rng_state())
        if self._dev_rng_buf is not None:
            self._dev_rng_buf.copy_(torch.get_device_module(self.device).get_rng_state(
                self.device))
        rng: dict[str, Any] = {}
        if self.host_rng:
            full = get_rng_state(torch.device("cpu"))
            rng = {"python": full["python"], "numpy": full["numpy"]}
        meta = {"shared": self.small_state(step), "rng": rng, "labels": self.labels,
                "own": {k: o.state_dict() for k, o in self.own.items()}}
        try:
            store = self._store()
        except SnapshotRefused as e:  # something planted at our path: stop snapshotting
            self._refused(e)
            return time.perf_counter() - t0
        if self._pool is None and (self.overlap == "on" or (
                self.overlap == "auto" and store.nbytes >= OVERLAP_BYTES)):
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="snapshot")
        blob = store.encode(meta)
        if self._pool is not None:
            self.pending = self._pool.submit(store.write_encoded, step, blob)
        else:
            store.write_encoded(step, blob)
        cost, self._blocked = self._blocked + time.perf_counter() - t0, 0.0
        return cost

    def close(self) -> None:
        """Wait for what is in flight (snapshot copy, checkpoint write) and stop the threads."""
        try:
            self.wait_snapshot()
            self.ckpt.close()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def finish(self, step: int) -> None:
        """After the last step, saved as ``step``: wait for the writes (:meth:`close`); once
        every rank has (rank 0 commits), drop the in-memory snapshot if that checkpoint is
        on disk (nothing is left to recover from memory)."""
        self.close()
        if self.world > 1:
            dist.barrier(group=self.group)
        if validate_step_dir(self.run.checkpoints / step_dir_name(step)) is None:
            self.discard_snapshot()

    def discard_snapshot(self) -> None:
        self.wait_snapshot()
        if self.snap is not None:
            self.snap.remove()
            self.snap = None
        if self.snap_path is not None:
            with contextlib.suppress(OSError):  # the run's snapshot directory, if empty
                self.snap_path.parent.rmdir()
        if safefs.is_owned_dir(self.gasp_path().parent):  # never through a link
            self.gasp_path().unlink(missing_ok=True)

    def gasp_path(self) -> Path:
        name = self.snap_path.name if self.snap_path is not None else "refused"
        return self.run.root / "gasp" / name

    def gasp(self) -> Path | None:
        """Dying gasp: persist the newest in-memory snapshot to the run directory."""
        self.wait_snapshot()
        if self.snap is None or not self.snap.valid_steps():
            return None
        try:
            path = self.snap.persist(self.gasp_path())
        except SnapshotRefused as e:  # gasp/ is a link or another user's: not written
            self.run.emit(Event.SNAPSHOT_REFUSED, rank=self.rank, path=str(e.path),
                          reason=e.reason)
            return None
        self.run.emit(Event.DYING_GASP, rank=self.rank, step=max(self.snap.valid_steps()),
                      path=str(path))
        return path

    # -- restoring -----------------------------------------------------------------------
    def _restore(self, shared: dict[str, Any], own: dict[str, Any] | None,
                 rng: Callable[[], None]) -> int:
        """The one restore path: every object from its saved state; returns the step."""
        self.wait_snapshot()
        restored = []
        for name, obj in self.shared.items():
            if name in shared:
                obj.load_state_dict(shared[name])
                restored.append(name)
        for g, lr in zip(self.opt.param_groups, shared["lrs"], strict=True):
            g["lr"] = lr
        for name, obj in self.own.items():
            # an emulated chip's state only when this rank is the same chip as then
            if own is not None and name in own and own.get("emulated") == \
                    self.labels.get("emulated"):
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
        self.wait_snapshot()
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

        return self._restore(manifest, own, rng)

    def load_memory(self, disk_step: int) -> int | None:
        """Restore the newest snapshot that every rank holds, if newer than ``disk_step``.
        A refused file (foreign owner, open mode, a link, crafted metadata) is never used:
        an event says so and every rank falls back to disk together."""
        path, gasp = self.snap_path, self.gasp_path()
        steps: dict[int, int] = {}
        layout = 0
        try:
            if path is not None and not path.exists() and gasp.exists():
                restore_copy(gasp, path)  # restarted on a machine without the file
            if path is not None:
                layout, steps = peek_snapshot(path)
        except SnapshotRefused as e:
            self._refused(e)
        everyone: list[Any] = [sorted(steps)]
        if self.world > 1:
            everyone = all_gather_json(sorted(steps), group=self.group)
        step = max(set(everyone[0]).intersection(*everyone[1:]), default=None)
        if step is None or step <= disk_step:
            return None
        self.wait_snapshot()
        self.init_optimizer_state()
        meta: dict[str, Any] | None = None
        try:
            snap = self._store()
            if snap.layout == layout and step in snap.valid_steps():
                meta = snap.read(step)
        except SnapshotRefused as e:
            self._refused(e)
        if not self._agree(meta is not None) or meta is None:
            return None  # (tensors a rank did read are overwritten by the disk restore)

        def rng() -> None:
            if meta["rng"]:
                set_rng_state({**get_rng_state(torch.device("cpu")), **meta["rng"]},
                              torch.device("cpu"))
            torch.set_rng_state(self._rng_buf.clone())
            if self._dev_rng_buf is not None:
                torch.get_device_module(self.device).set_rng_state(
                    self._dev_rng_buf.clone(), self.device)

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
