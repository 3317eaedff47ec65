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
   rank's write has finished): every DCP file is hashed (sha256) and made as private as
   the run directory, ``manifest.json`` (with the hashes) is written and fsynced, then
   ``COMMIT`` holding the manifest's sha256 and every file's size, then ``LATEST`` is
   replaced atomically (write, fsync, rename, fsync the directory).
4. *Prune*: only now are committed checkpoints beyond the newest ``keep`` deleted, and
   uncommitted (torn) directories older than the new one.

A checkpoint counts only once its COMMIT exists and matches: :func:`committed_steps`
checks the marker, the manifest hash and every file size, so a torn checkpoint (files
truncated, marker missing, manifest corrupted) is never reported as valid. Before loading,
:meth:`Checkpointer.verify` checks every file against its sha256 and reads ``.metadata``
without unpickling anything but DCP's metadata (:mod:`.safeload`); files are opened without
following links (docs/security.md).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.tensor import DTensor

from mixfleet import safefs
from mixfleet.errors import CheckpointError, UnsafePathError
from mixfleet.runs import Event
from mixfleet.train.checkpoint.safeload import (
    METADATA,
    SafePlanner,
    SafeReader,
    hash_files,
    read_metadata,
    verify_files,
)
from mixfleet.train.exchange import all_gather_json
from mixfleet.train.health.faults import FaultInjector

__all__ = ["Checkpointer", "committed_steps", "step_dir_name", "read_manifest",
           "validate_step_dir", "verify"]

COMMIT = "COMMIT"
MANIFEST = "manifest.json"
LATEST = "LATEST"


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def _write_durable(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (tmp file, fsync, rename)."""
    safefs.write_atomic(path, data, durable=True)


def validate_step_dir(d: Path) -> str | None:
    """None if ``d`` is a committed, intact checkpoint; else the reason it is not."""
    try:
        commit = json.loads(safefs.read_bytes(d / COMMIT))
    except FileNotFoundError:
        return "no COMMIT marker (the write did not finish)"
    except (OSError, ValueError, UnsafePathError) as e:
        return f"unreadable COMMIT marker ({e})"
    if not isinstance(commit, dict) or not isinstance(commit.get("files", {}), dict):
        return "COMMIT marker is not what mixfleet writes"
    try:
        manifest_bytes = safefs.read_bytes(d / MANIFEST)
    except (OSError, UnsafePathError) as e:
        return f"manifest missing ({e})"
    if hashlib.sha256(manifest_bytes).hexdigest() != commit.get("manifest_sha256"):
        return "manifest does not match its hash in COMMIT (corrupted)"
    for name, size in commit.get("files", {}).items():
        try:
            st = os.lstat(d / str(name))
        except (OSError, ValueError):
            return f"file {name} missing"
        if not stat.S_ISREG(st.st_mode):
            return f"file {name} is a link or not a regular file (refused)"
        if st.st_size != size:
            return f"file {name} has {st.st_size} bytes, COMMIT says {size} (truncated)"
    return None


def _tear(d: Path) -> None:
    """Truncate the largest data file of ``d`` (fault injection: a torn checkpoint)."""
    f = max(d.glob("*.distcp"), key=lambda p: p.stat().st_size)
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)


def _real_dir(p: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(p).st_mode)
    except OSError:
        return False


def committed_steps(root: Path) -> tuple[list[tuple[int, Path]], list[tuple[Path, str]]]:
    """(valid checkpoints newest first, [(torn dir, reason)]) under ``root``."""
    valid, torn = [], []
    if not _real_dir(root):  # absent, or a link (never followed)
        return [], []
    for d in sorted(root.glob("step_*"), reverse=True):
        if not _real_dir(d):
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
    """The manifest of checkpoint ``d`` (JSON, never through a link)."""
    return dict(json.loads(safefs.read_bytes(d / MANIFEST)))


def verify(d: Path, part: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """Check checkpoint ``d`` before anything of it is loaded: the manifest lists every file
    with its sha256, ``.metadata`` matches its hash and holds only DCP metadata naming
    files of the manifest, and files ``part`` = (i, n) (every n-th from the i-th: each rank
    checks its share) match their hashes. Returns the manifest; CheckpointError names the
    file and the reason."""
    reason = validate_step_dir(d)
    if reason is not None:
        raise CheckpointError(f"{d} refused: {reason}")
    try:
        manifest = read_manifest(d)
    except (OSError, ValueError, UnsafePathError) as e:
        raise CheckpointError(f"{d / MANIFEST} refused: {e}") from None
    files = manifest.get("files")
    if not isinstance(files, dict) or METADATA not in files:
        raise CheckpointError(f"{d / MANIFEST} lists no file hashes (written by a mixfleet "
                              f"before they were recorded, or forged); checkpoint refused")
    verify_files(d, files, [METADATA])
    read_metadata(d / METADATA, files)
    i, n = part
    verify_files(d, files, [f for f in sorted(files) if f != METADATA][i::n])
    return manifest


def _writer_class() -> type:
    from torch.distributed.checkpoint import FileSystemWriter

    class FaultyWriter(FileSystemWriter):
        """FileSystemWriter with injectable faults (disk full, death mid-write)."""

        fault_hook: Callable[[str], None] | None = None

        def prepare_local_plan(self, plan):
            d = Path(str(self.path))
            safefs.make_dir(d)  # a real directory of this user, never a link
            os.chmod(d, safefs.dir_mode_in(d.parent))  # as private as the run directory
            return super().prepare_local_plan(plan)

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
        self.root = safefs.make_dir(root)  # private (a link there is refused)
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
                self.emit(Event.CHECKPOINT_FAILED, step=step, error=f"{type(e).__name__}: {e}",
                          kept=self.last_committed)
            return False

    def _commit(self, step: int, d: Path, manifest: dict[str, Any]) -> None:
        names = [p.name for p in sorted(d.iterdir()) if stat.S_ISREG(os.lstat(p).st_mode)
                 and p.name not in (COMMIT, MANIFEST) and not p.name.endswith(".tmp")]
        hashed = hash_files(d, names)  # every rank's write has finished (dcp.save returned)
        data = json.dumps({**manifest, "files": hashed}, indent=1, sort_keys=True).encode()
        _write_durable(d / MANIFEST, data)
        files = {name: h["bytes"] for name, h in hashed.items()}
        commit = {"step": step, "manifest_sha256": hashlib.sha256(data).hexdigest(),
                  "files": files}
        _write_durable(d / COMMIT, json.dumps(commit, indent=1).encode())
        _write_durable(self.root / LATEST, (d.name + "\n").encode())
        self.last_committed = step
        self.emit(Event.CHECKPOINT_COMMITTED, step=step, dir=str(d),
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
    def verify(self, d: Path) -> dict[str, Any]:
        """:func:`verify` with this rank's share of the files; the manifest."""
        world = dist.get_world_size(self.group) if dist.is_initialized() else 1
        return verify(d, (self.rank, world))

    def load(self, d: Path, state: dict[str, Any]) -> dict[str, Any]:
        """Load the DCP files of ``d`` into ``state`` in place (call :meth:`verify` first,
        and agree across ranks); returns the manifest."""
        try:
            files = read_manifest(d).get("files") or {}
            dcp.load(state, storage_reader=SafeReader(d, files), planner=SafePlanner(),
                     process_group=self.group)
            return read_manifest(d)
        except (Exception, CheckpointException) as e:  # noqa: BLE001
            raise CheckpointError(f"cannot load {d}: {type(e).__name__}: {e}") from e

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
