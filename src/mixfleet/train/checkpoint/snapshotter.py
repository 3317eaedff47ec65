"""One rank's in-memory snapshots (the fast tier of :mod:`mixfleet.train.checkpoint.manager`):
sized against the host budget before the first step, copied (on a side thread when large)
into host shared memory (:mod:`mixfleet.train.checkpoint.snapshot`), persisted by the dying
gasp, and read back for a resume. A snapshot file or directory that fails its ownership or
mode check is never read or written: an event says so and snapshots stop.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mixfleet import safefs
from mixfleet.runs import Event
from mixfleet.train.checkpoint.hostmem import snapshot_budget, snapshot_bytes
from mixfleet.train.checkpoint.rng import get_rng_state, set_rng_state
from mixfleet.train.checkpoint.snapshot import (
    MemorySnapshot,
    SnapshotRefused,
    peek_snapshot,
    restore_copy,
    snapshot_path,
)
from mixfleet.train.parallel.strategy import ReductionStrategy
from mixfleet.train.rundir import RunDir

__all__ = ["Snapshotter", "OVERLAP_BYTES"]

#: ``snapshot_overlap = "auto"`` copies snapshots of this size and more on a side thread
#: (smaller ones cost less than handing them to a thread).
OVERLAP_BYTES = 64 * 2**20


class Snapshotter:
    """This rank's in-memory snapshots of ``strategy``'s tensors (model and optimizer) and
    the torch RNG; the rest of the state comes in as metadata (:meth:`take`)."""

    def __init__(self, *, strategy: ReductionStrategy, opt: torch.optim.Optimizer, run: RunDir,
                 rank: int, world: int, device: torch.device, labels: dict[str, Any],
                 host_rng: bool, overlap: str = "off") -> None:
        self.strategy, self.opt, self.run, self.rank = strategy, opt, run, rank
        self.device, self.labels, self.host_rng = device, labels, host_rng
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
        # Overlapped snapshots: the copy runs on this thread while the next step computes;
        # wait() before anything changes the tensors (the update, a restore).
        self.overlap = overlap
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        # the snapshot copy in flight on the side thread (snapshot_overlap), if any
        self.pending: concurrent.futures.Future[None] | None = None
        self._blocked = 0.0

    def _refused(self, e: SnapshotRefused) -> None:
        """A snapshot file or directory failed its ownership/mode check: not read, not
        written; said with an event (and a line on the console)."""
        self.run.emit(Event.SNAPSHOT_REFUSED, rank=self.rank, path=str(e.path), reason=e.reason)
        self.snap, self.snap_path = None, None

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

    def fit(self, optimizer: str, budget_gib: float, local_world: int, interval: int) -> bool:
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

    def wait(self) -> None:
        """Block until the snapshot copy in flight (if any) is in shared memory."""
        if self.pending is not None:
            t0 = time.perf_counter()
            try:
                self.pending.result()
            finally:
                self.pending = None
                self._blocked += time.perf_counter() - t0

    def take(self, step: int, state: Callable[[], tuple[dict[str, Any], dict[str, Any]]]
             ) -> float:
        """Copy the state into host shared memory (survives this process's crash); ``state``
        gives the (shared, own) objects' states for the metadata. The python/numpy RNG go
        in only with ``host_rng`` (checkpoint.snapshot_host_rng). Returns the seconds the
        step loop was held up by snapshots since the last call (this one's start, and the
        wait for the previous copy)."""
        t0 = time.perf_counter()
        self.wait()
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
        shared, own = state()
        meta = {"shared": shared, "rng": rng, "labels": self.labels, "own": own}
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

    def shutdown(self) -> None:
        """Stop the side thread (after :meth:`wait`)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def discard(self) -> None:
        self.wait()
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
        self.wait()
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

    # -- reading back (for CheckpointManager.load_memory) ---------------------------------
    def held(self) -> tuple[int, dict[int, int]]:
        """(layout, {step: slot}) of the snapshot this rank holds, brought back from the
        dying gasp's copy on a machine without the file; nothing when refused."""
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
        return layout, steps

    def read(self, step: int, layout: int) -> dict[str, Any] | None:
        """Read ``step``'s tensors into place; its metadata, or None (refused, or not held
        in ``layout``)."""
        meta: dict[str, Any] | None = None
        try:
            snap = self._store()
            if snap.layout == layout and step in snap.valid_steps():
                meta = snap.read(step)
        except SnapshotRefused as e:
            self._refused(e)
        return meta

    def restore_rng(self, host: dict[str, Any]) -> None:
        """Set the RNG read back with the tensors (and the python/numpy ones in ``host``)."""
        if host:
            set_rng_state({**get_rng_state(torch.device("cpu")), **host}, torch.device("cpu"))
        torch.set_rng_state(self._rng_buf.clone())
        if self._dev_rng_buf is not None:
            torch.get_device_module(self.device).set_rng_state(
                self._dev_rng_buf.clone(), self.device)
