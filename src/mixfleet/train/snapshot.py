"""In-memory snapshots: a copy of one rank's training state in host shared memory.

Every ``snapshot_interval`` steps each rank copies its model, optimizer state, RNG and LR
schedule into a file in ``/dev/shm`` mapped into the process. The copy survives the
worker's crash (the pages belong to the tmpfs, not the process), so a restarted rank
resumes from it and a crash loses at most ``snapshot_interval`` steps — instead of going
back to the last disk checkpoint.

On SIGTERM (torchrun stopping the survivors, a scheduler's preemption) each rank copies its
file into ``RUN_DIR/gasp/`` (the *dying gasp*); a restart on a machine whose ``/dev/shm``
lacks the file starts from that copy.

Two slots are written in turn. A slot is marked invalid before its data is overwritten and
valid (with its step) after, so a rank killed mid-copy leaves the other slot intact.
A header records a hash of the layout (names, shapes, dtypes), so a file of another model
or world size is never read. Snapshots do not survive the node; disk checkpoints do.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["MemorySnapshot", "snapshot_path", "peek_snapshot"]

_MAGIC = 0x6D69786669656C64  # "mixfield"
_HDR_BYTES = 4096
_META_MAX = 256 * 1024
_ALIGN = 64


def snapshot_path(run_root: Path, world: int, rank: int) -> Path:
    """The shared-memory file of ``rank`` of a run (per world size, per run directory)."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    key = hashlib.sha256(str(run_root.resolve()).encode()).hexdigest()[:12]
    return base / f"mixfleet-{key}-w{world}-r{rank}.snap"


def _layout_hash(named: Sequence[tuple[str, torch.Tensor]]) -> int:
    h = hashlib.sha256()
    for name, t in named:
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return int.from_bytes(h.digest()[:8], "little") >> 1  # fits a signed int64


class MemorySnapshot:
    """Double-buffered snapshot file for a fixed list of named tensors."""

    def __init__(self, path: Path, named: Sequence[tuple[str, torch.Tensor]]) -> None:
        self.path = path
        self.named = list(named)
        self.layout = _layout_hash(self.named)
        offsets, off = [], 0
        for _, t in self.named:
            offsets.append(off)
            off += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
        self._offsets = offsets
        self._data_bytes = off
        self._slot_bytes = off + _META_MAX
        size = _HDR_BYTES + 2 * self._slot_bytes
        fresh = not path.exists() or path.stat().st_size != size
        if fresh:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.truncate(size)
        self._buf = torch.from_file(str(path), shared=True, size=size, dtype=torch.uint8)
        # magic, layout, (step, valid, meta bytes) x 2; numpy view: cheap scalar writes
        self._hdr = self._buf[:64].view(torch.int64).numpy()
        if fresh or int(self._hdr[0]) != _MAGIC or int(self._hdr[1]) != self.layout:
            self._hdr[:] = 0
            self._hdr[0], self._hdr[1] = _MAGIC, self.layout
        self._views = [self._slot_views(k) for k in (0, 1)]
        self._srcs = [t for _, t in self.named]
        self.writes = 0

    def _slot_views(self, k: int) -> list[torch.Tensor]:
        start = _HDR_BYTES + k * self._slot_bytes
        out = []
        for (_, t), off in zip(self.named, self._offsets, strict=True):
            n = t.numel() * t.element_size()
            out.append(self._buf[start + off: start + off + n].view(t.dtype).view(t.shape))
        return out

    def _meta_region(self, k: int) -> torch.Tensor:
        start = _HDR_BYTES + k * self._slot_bytes + self._data_bytes
        return self._buf[start: start + _META_MAX]

    def valid_steps(self) -> dict[int, int]:
        """{step: slot} of the valid slots."""
        out = {}
        for k in (0, 1):
            step, valid = int(self._hdr[2 + 3 * k]), int(self._hdr[3 + 3 * k])
            if valid == 1:
                out[step] = k
        return out

    def write(self, step: int, meta: dict[str, Any] | None = None) -> None:
        """Copy the tensors and ``meta`` (pickled, optional) into the older slot, then mark
        it valid."""
        steps = self.valid_steps()
        k = 0 if not steps else (1 - steps[max(steps)])  # never overwrite the newest
        blob = pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL) if meta else b""
        if len(blob) > _META_MAX:
            raise ValueError(f"snapshot metadata too large ({len(blob)} bytes)")
        self._hdr[3 + 3 * k] = 0  # invalid while it is being overwritten
        with torch.no_grad():
            torch._foreach_copy_(self._views[k], self._srcs)  # one call for every tensor
        if blob:
            self._meta_region(k)[: len(blob)].copy_(torch.frombuffer(bytearray(blob),
                                                                     dtype=torch.uint8))
        self._hdr[2 + 3 * k] = step
        self._hdr[4 + 3 * k] = len(blob)
        self._hdr[3 + 3 * k] = 1
        self.writes += 1

    def read(self, step: int) -> dict[str, Any]:
        """Copy the snapshot of ``step`` back into the tensors; returns its metadata."""
        k = self.valid_steps()[step]
        for (_, t), v in zip(self.named, self._views[k], strict=True):
            with torch.no_grad():
                t.copy_(v)
        n = int(self._hdr[4 + 3 * k])
        return dict(pickle.loads(self._meta_region(k)[:n].numpy().tobytes())) if n else {}

    def persist(self, dst: Path) -> Path:
        """Copy the snapshot file to ``dst`` durably (the dying gasp: survives the node)."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(self._buf.numpy().tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        return dst

    def remove(self) -> None:
        """Delete the file (the run finished; nothing left to recover)."""
        del self._views, self._hdr, self._buf
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def peek_snapshot(path: Path) -> tuple[int, dict[int, int]]:
    """(layout hash, {step: slot}) of a snapshot file without mapping it; ({}) if none."""
    try:
        with open(path, "rb") as f:
            raw = f.read(64)
    except OSError:
        return 0, {}
    if len(raw) < 64:
        return 0, {}
    hdr = [int.from_bytes(raw[i: i + 8], "little", signed=True) for i in range(0, 64, 8)]
    if hdr[0] != _MAGIC:
        return 0, {}
    return hdr[1], {hdr[2 + 3 * k]: k for k in (0, 1) if hdr[3 + 3 * k] == 1}
