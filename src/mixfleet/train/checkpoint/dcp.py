"""Persistent checkpoints with ``torch.distributed.checkpoint`` (DCP).

Layout::

    checkpoints/step_0000200/   DCP files (*.distcp, .metadata), manifest.json, COMMIT
    checkpoints/LATEST          name of the newest committed step directory

Protocol (every rank runs :meth:`Checkpointer.save` at the same steps):

1. *Stage*: the step loop copies the state's tensors into reusable host buffers and
   returns; that copy is all it waits for (``asynchronous = true``).
2. *Write*: a background thread runs ``dcp.save`` on its own gloo group (a save on the
   training group would deadlock against the step loop's collectives). Every file is
   fsynced (``FileSystemWriter(sync_files=True)``).
3. *Commit* (rank 0, after ``dcp.save`` returned on rank 0, which happens only after every
   rank's write has finished): ``manifest.json`` is written and fsynced, then ``COMMIT``
   holding the manifest's sha256 and every file's size, then ``LATEST`` is replaced
   atomically (write, fsync, rename, fsync the directory).
4. *Prune*: only now are committed checkpoints beyond the newest ``keep`` deleted, and
   uncommitted (torn) directories older than the new one.

A checkpoint counts only once its COMMIT exists and matches: :func:`committed_steps`
checks the marker, the manifest hash and every file size, so a torn checkpoint (files
truncated, marker missing, manifest corrupted) is never reported as valid.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.tensor import DTensor

from mixfleet.errors import CheckpointError
from mixfleet.train.exchange import all_gather_json
from mixfleet.train.health.faults import FaultInjector

__all__ = ["Checkpointer", "committed_steps", "step_dir_name", "read_manifest",
           "validate_step_dir"]

COMMIT = "COMMIT"
MANIFEST = "manifest.json"
LATEST = "LATEST"


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (tmp file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def validate_step_dir(d: Path) -> str | None:
    """None if ``d`` is a committed, intact checkpoint; else the reason it is not."""
    try:
        commit = json.loads((d / COMMIT).read_text())
    except FileNotFoundError:
        return "no COMMIT marker (the write did not finish)"
    except (OSError, json.JSONDecodeError) as e:
        return f"unreadable COMMIT marker ({e})"
    try:
        manifest_bytes = (d / MANIFEST).read_bytes()
    except OSError as e:
        return f"manifest missing ({e})"
    if hashlib.sha256(manifest_bytes).hexdigest() != commit.get("manifest_sha256"):
        return "manifest does not match its hash in COMMIT (corrupted)"
    for name, size in commit.get("files", {}).items():
        p = d / name
        if not p.exists():
            return f"file {name} missing"
        if p.stat().st_size != size:
            return f"file {name} has {p.stat().st_size} bytes, COMMIT says {size} (truncated)"
    return None


def _tear(d: Path) -> None:
    """Truncate the largest data file of ``d`` (fault injection: a torn checkpoint)."""
    f = max(d.glob("*.distcp"), key=lambda p: p.stat().st_size)
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)


def committed_steps(root: Path) -> tuple[list[tuple[int, Path]], list[tuple[Path, str]]]:
    """(valid checkpoints newest first, [(torn dir, reason)]) under ``root``."""
    valid, torn = [], []
    if not root.is_dir():
        return [], []
    for d in sorted(root.glob("step_*"), reverse=True):
        if not d.is_dir():
            continue
        try:
            step = int(d.name.split("_", 1)[1])
        except ValueError:
            continue
        reason = validate_step_dir(d)
        if reason is None:
            valid.append((step, d))
        else:
            torn.append((d, reason))
    return valid, torn


def read_manifest(d: Path) -> dict[str, Any]:
    return json.loads((d / MANIFEST).read_text())


def _writer_class() -> type:
    from torch.distributed.checkpoint import FileSystemWriter

    class FaultyWriter(FileSystemWriter):
        """FileSystemWriter with injectable faults (disk full, death mid-write)."""

        fault_hook: Callable[[str], None] | None = None

        def write_data(self, plan, planner):
            if self.fault_hook is not None:
                self.fault_hook("before")
            fut = super().write_data(plan, planner)
            if self.fault_hook is not None:
                fut.wait()
                self.fault_hook("after")
            return fut

    return FaultyWriter


class Checkpointer:
    """Saves and loads the training state of one rank; see the module docstring."""

    def __init__(self, root: Path, *, rank: int, group: Any, keep: int, asynchronous: bool,
                 emit: Callable[..., Any], faults: FaultInjector | None = None) -> None:
        self.root = root
        self.rank = rank
        self.group = group
        self.keep = keep
        self.asynchronous = asynchronous
        self.emit = emit
        self.faults = faults
        self._buffers: dict[str, torch.Tensor] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ckpt")
        self._pending: concurrent.futures.Future | None = None
        self.last_committed: int | None = None

    # -- staging -----------------------------------------------------------------------
    def _stage(self, obj: Any, path: str = "") -> Any:
        if isinstance(obj, DTensor):  # a shard (fsdp): stage the local part, keep its layout
            local = self._stage(obj.to_local(), path)
            return DTensor.from_local(local, obj.device_mesh, obj.placements, run_check=False,
                                      shape=obj.shape, stride=obj.stride())
        if isinstance(obj, torch.Tensor):
            buf = self._buffers.get(path)
            if buf is None or buf.shape != obj.shape or buf.dtype != obj.dtype:
                buf = torch.empty(obj.shape, dtype=obj.dtype, device="cpu")
                self._buffers[path] = buf
            buf.copy_(obj.detach())
            return buf
        if isinstance(obj, dict):
            return {k: self._stage(v, f"{path}/{k}") for k, v in obj.items()}
        if isinstance(obj, list):
            return [self._stage(v, f"{path}/{i}") for i, v in enumerate(obj)]
        return obj

    # -- saving ------------------------------------------------------------------------
    def wait(self) -> None:
        """Block until the checkpoint in flight (if any) is written and committed."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def save(self, step: int, state: dict[str, Any], manifest: dict[str, Any]) -> None:
        """Checkpoint ``state`` (nested dicts of tensors) at ``step``.

        Every rank calls this at the same step. Returns once the state is staged (or
        written, when not asynchronous); failures are reported as events, not raised.
        """
        self.wait()  # one checkpoint in flight at a time, same decision on every rank
        staged = self._stage(state)
        if self.asynchronous:
            self._pending = self._pool.submit(self._write, step, staged, manifest)
        else:
            self._write(step, staged, manifest)

    def _fault_hook(self, step: int) -> Callable[[str], None] | None:
        faults = self.faults
        if faults is None or not faults.active:
            return None
        return lambda phase: faults.checkpoint_write(step, phase)

    def _write(self, step: int, staged: dict[str, Any], manifest: dict[str, Any]) -> bool:
        d = self.root / step_dir_name(step)
        try:
            if self.rank == 0 and d.exists():
                # Left by an attempt that died before or after committing this step: the
                # run resumed from an older one, so this step is rewritten from scratch.
                (d / COMMIT).unlink(missing_ok=True)
                shutil.rmtree(d)
            parts = all_gather_json(manifest.pop("per_rank", {}), group=self.group)
            d.mkdir(parents=True, exist_ok=True)
            writer = _writer_class()(str(d), sync_files=True, overwrite=True)
            writer.fault_hook = self._fault_hook(step)
            dcp.save(staged, storage_writer=writer, process_group=self.group)
            if self.rank == 0:
                self._commit(step, d, {**manifest, "per_rank": parts})
                if self.faults is not None:
                    self.faults.checkpoint_committed(step, lambda: _tear(d))
            return True
        except (Exception, CheckpointException) as e:  # noqa: BLE001 - reported; last good stays
            if self.rank == 0:
                self.emit("checkpoint_failed", step=step, error=f"{type(e).__name__}: {e}",
                          kept=self.last_committed)
            return False

    def _commit(self, step: int, d: Path, manifest: dict[str, Any]) -> None:
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        _write_durable(d / MANIFEST, data)
        files = {p.name: p.stat().st_size for p in sorted(d.iterdir())
                 if p.is_file() and p.name not in (COMMIT, MANIFEST) and
                 not p.name.endswith(".tmp")}
        commit = {"step": step, "manifest_sha256": hashlib.sha256(data).hexdigest(),
                  "files": files}
        _write_durable(d / COMMIT, json.dumps(commit, indent=1).encode())
        _write_durable(self.root / LATEST, (d.name + "\n").encode())
        self.last_committed = step
        self.emit("checkpoint_committed", step=step, dir=str(d),
                  bytes=sum(files.values()))
        self._prune(step)

    def _prune(self, newest: int) -> None:
        valid, torn = committed_steps(self.root)
        for _, d in valid[self.keep:]:
            shutil.rmtree(d, ignore_errors=True)
        for d, _ in torn:
            if int(d.name.split("_", 1)[1]) < newest:
                shutil.rmtree(d, ignore_errors=True)

    # -- loading -----------------------------------------------------------------------
    def load(self, d: Path, state: dict[str, Any]) -> dict[str, Any]:
        """Load the DCP files of ``d`` into ``state`` in place; returns the manifest."""
        try:
            dcp.load(state, checkpoint_id=str(d), process_group=self.group)
            return read_manifest(d)
        except (Exception, CheckpointException) as e:  # noqa: BLE001
            raise CheckpointError(f"cannot load {d}: {type(e).__name__}: {e}") from e

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
