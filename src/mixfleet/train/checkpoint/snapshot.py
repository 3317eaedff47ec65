"""In-memory snapshots: a copy of one rank's training state in host shared memory.

Every ``snapshot_interval`` steps each rank copies its model, optimizer state, RNG and LR
schedule into a file in ``/dev/shm`` mapped into the process. The copy survives the
worker's crash (the pages belong to the tmpfs, not the process), so a restarted rank
resumes from it and a crash loses at most ``snapshot_interval`` steps — instead of going
back to the last disk checkpoint.

On SIGTERM (torchrun stopping the survivors, a scheduler's preemption) each rank copies its
file into ``RUN_DIR/gasp/`` (the *dying gasp*); a restart on a machine whose ``/dev/shm``
lacks the file starts from that copy.

Snapshots live in a private directory of the run on each host
(``/dev/shm/mixfleet-<uid>-<random>``, made by ``mkdtemp``: mode 0700, a name nobody can
take first), recorded in the run directory (``snapshots.<host>``) and checked on every use
to be a real directory owned by this user; a recorded one that fails the check (squatted
after a reboot, opened up) is reported and replaced by a new one, never a reason to turn
snapshots off. Every file is checked before it is opened (``O_NOFOLLOW``, owned by this
user, not writable by group or others): another local user can neither plant a snapshot
nor swap one. A file that
fails a check raises :class:`SnapshotRefused` and is not read. The metadata region is JSON
(never pickle), bounded by the region's size.

Two slots are written in turn. A slot is marked invalid before its data is overwritten and
valid (with its step) after, so a rank killed mid-copy leaves the other slot intact.
A header records a hash of the layout (names, shapes, dtypes), so a file of another model
or world size is never read. Snapshots do not survive the node; disk checkpoints do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixfleet import safefs
from mixfleet.errors import CheckpointError, UnsafePathError

__all__ = ["MemorySnapshot", "snapshot_path", "peek_snapshot", "snapshot_dir",
           "check_snapshot_file", "SnapshotRefused", "legacy_snapshot_path", "restore_copy",
           "recorded_snapshot_dirs", "user_snapshot_dirs"]

_MAGIC = 0x6D69786669656C64  # "mixfield"
_HDR_BYTES = 4096
_META_MAX = 256 * 1024
_ALIGN = 64


class SnapshotRefused(CheckpointError):
    """A snapshot file (or its directory) failed the ownership/mode check, or its metadata
    is not what mixfleet writes: it is not read. ``path`` and ``reason`` say which and why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"snapshot {path} refused: {reason}; it was not read (delete it, "
                         f"or check who else writes there)")
        self.path = path
        self.reason = reason


def _euid() -> int:
    return os.geteuid()


def _check_stat(st: os.stat_result, path: Path, *, want_dir: bool) -> None:
    kind_ok = stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode)
    if not kind_ok:
        raise SnapshotRefused(path, "not a regular " + ("directory" if want_dir else "file")
                              + " (a link or a device?)")
    if st.st_uid != _euid():
        raise SnapshotRefused(path, f"owned by uid {st.st_uid}, not by this user "
                                    f"({_euid()})")
    bad = 0o077 if want_dir else 0o022
    if st.st_mode & bad:
        raise SnapshotRefused(path, f"mode {stat.S_IMODE(st.st_mode):o} lets others "
                                    f"{'in' if want_dir else 'write it'}")


def _base() -> Path:
    return Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


def _record(run_root: Path) -> Path:
    return run_root / f"snapshots.{socket.gethostname()}"


@contextlib.contextmanager
def _locked(run_root: Path) -> Iterator[None]:
    """The ranks of a node agree on one directory: one at a time picks or makes it."""
    fd = safefs.open_fd(run_root / ".snapshots.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _check_dir(d: Path, base: Path) -> None:
    if d.parent != base or not d.name.startswith(f"mixfleet-{_euid()}-"):
        raise SnapshotRefused(d, f"not a snapshot directory of this user under {base}")
    _check_stat(os.lstat(d), d, want_dir=True)


def snapshot_dir(run_root: Path, base: Path | None = None,
                 refused: list[SnapshotRefused] | None = None) -> Path:
    """This run's private snapshot directory on this host: the one recorded in the run
    directory while it is a real 0700 directory of this user; else a new one (``mkdtemp``)
    recorded there. A recorded one that fails the check is appended to ``refused`` (to be
    reported) and avoided."""
    base = base or _base()
    safefs.make_dir(run_root)
    with _locked(run_root):
        try:
            d = Path(safefs.read_text(_record(run_root), max_bytes=4096).strip())
            _check_dir(d, base)
            return d
        except FileNotFoundError:
            pass  # none recorded, or gone (a reboot empties /dev/shm): a new one
        except SnapshotRefused as e:
            if refused is not None:
                refused.append(e)
        d = Path(tempfile.mkdtemp(prefix=f"mixfleet-{_euid()}-", dir=base))
        safefs.write_atomic(_record(run_root), f"{d}\n".encode())
        return d


def recorded_snapshot_dirs(run_root: Path) -> list[Path]:
    """The snapshot directories recorded in ``run_root`` (every host) that are real 0700
    directories of this user (``mixfleet clean``); nothing is created."""
    out = []
    for rec in sorted(run_root.glob("snapshots.*")):
        try:
            d = Path(safefs.read_text(rec, max_bytes=4096).strip())
            _check_dir(d, d.parent)
        except (OSError, ValueError, CheckpointError, UnsafePathError):
            continue
        out.append(d)
    return out


def user_snapshot_dirs(base: Path | None = None) -> list[Path]:
    """Every snapshot directory of this user under ``base`` (real 0700 directories of
    this user, the per-user one of earlier versions included); links are skipped."""
    base = base or _base()
    out = []
    for d in sorted(base.glob(f"mixfleet-{_euid()}*")):
        if d.name != f"mixfleet-{_euid()}" and not d.name.startswith(f"mixfleet-{_euid()}-"):
            continue
        try:
            _check_stat(os.lstat(d), d, want_dir=True)
        except (OSError, SnapshotRefused):
            continue
        out.append(d)
    return out


def snapshot_path(run_root: Path, world: int, rank: int,
                  refused: list[SnapshotRefused] | None = None) -> Path:
    """The shared-memory file of ``rank`` of a run (per world size, per run directory), in
    the run's private :func:`snapshot_dir`."""
    key = hashlib.sha256(str(run_root.resolve()).encode()).hexdigest()[:12]
    return snapshot_dir(run_root, refused=refused) / f"{key}-w{world}-r{rank}.snap"


def legacy_snapshot_path(run_root: Path, world: int, rank: int) -> Path:
    """Where mixfleet < issue 9 kept the file (world-writable /dev/shm): never read now."""
    key = hashlib.sha256(str(run_root.resolve()).encode()).hexdigest()[:12]
    return _base() / f"mixfleet-{key}-w{world}-r{rank}.snap"


def check_snapshot_file(path: Path) -> None:
    """Raise SnapshotRefused unless ``path`` is a regular file of this user that group and
    others cannot write (checked on the opened file: ``O_NOFOLLOW`` + ``fstat``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise SnapshotRefused(path, "a symbolic link") from None
        raise
    try:
        _check_stat(os.fstat(fd), path, want_dir=False)
    finally:
        os.close(fd)


def restore_copy(src: Path, dst: Path) -> None:
    """Copy a persisted snapshot (the dying gasp) to ``dst`` as a private file (0600, created
    exclusively, never through a link), after checking ``src`` like any snapshot file (and
    its directory: a real directory of this user, not a link)."""
    if not safefs.is_owned_dir(src.parent):
        raise SnapshotRefused(src, f"its directory {src.parent} is a link or not this user's")
    check_snapshot_file(src)
    if os.path.lexists(dst):
        os.unlink(dst)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
        while chunk := f.read(1 << 22):
            out.write(chunk)


def _create(path: Path, size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _layout_hash(named: Sequence[tuple[str, torch.Tensor]]) -> int:
    h = hashlib.sha256()
    for name, t in named:
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return int.from_bytes(h.digest()[:8], "little") >> 1  # fits a signed int64


class MemorySnapshot:
    """Double-buffered snapshot file for a fixed list of named tensors."""

    def __init__(self, path: Path, named: Sequence[tuple[str, torch.Tensor]], *,
                 slots: int = 2) -> None:
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
        if slots not in (1, 2):
            raise ValueError(f"a snapshot has 1 or 2 slots (got {slots})")
        self.slots = slots  # 1: half the memory, but a crash mid-copy leaves no snapshot
        size = _HDR_BYTES + slots * self._slot_bytes
        self.nbytes = size
        fresh = not os.path.lexists(path)
        if not fresh:
            check_snapshot_file(path)
            if path.stat().st_size != size:  # another model or world size: start afresh
                path.unlink()
                fresh = True
        if fresh:
            path.parent.mkdir(parents=True, exist_ok=True)
            _create(path, size)
        check_snapshot_file(path)
        self._buf = torch.from_file(str(path), shared=True, size=size, dtype=torch.uint8)
        # magic, layout, (step, valid, meta bytes) x 2; numpy view: cheap scalar writes
        self._hdr = self._buf[:64].view(torch.int64).numpy()
        self._np = self._buf.numpy()  # byte view for the metadata region
        if fresh or int(self._hdr[0]) != _MAGIC or int(self._hdr[1]) != self.layout:
            self._hdr[:] = 0
            self._hdr[0], self._hdr[1] = _MAGIC, self.layout
        self._views = [self._slot_views(k) for k in range(slots)]
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
        for k in range(self.slots):
            step, valid = int(self._hdr[2 + 3 * k]), int(self._hdr[3 + 3 * k])
            if valid == 1:
                out[step] = k
        return out

    def write(self, step: int, meta: dict[str, Any] | None = None) -> None:
        """Copy the tensors and ``meta`` (JSON: dicts, lists, str, int, float, bool, None;
        optional) into the older slot, then mark it valid."""
        self.write_encoded(step, self.encode(meta))

    @staticmethod
    def encode(meta: dict[str, Any] | None) -> bytes:
        """``meta`` as the bytes :meth:`write_encoded` stores (JSON)."""
        blob = json.dumps(meta, separators=(",", ":")).encode() if meta else b""
        if len(blob) > _META_MAX:
            raise ValueError(f"snapshot metadata too large ({len(blob)} bytes)")
        return blob

    def write_encoded(self, step: int, blob: bytes) -> None:
        """:meth:`write` with the metadata already encoded (the copy itself holds no
        Python lock: it can run on a side thread while the next step computes)."""
        steps = self.valid_steps()
        # never overwrite the newest (with one slot there is no other: it is invalid
        # while it is being overwritten)
        k = 0 if not steps or self.slots == 1 else (1 - steps[max(steps)])
        self._hdr[3 + 3 * k] = 0  # invalid while it is being overwritten
        with torch.no_grad():
            torch._foreach_copy_(self._views[k], self._srcs)  # one call for every tensor
        if blob:
            start = _HDR_BYTES + k * self._slot_bytes + self._data_bytes
            self._np[start: start + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
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
        if not 0 <= n <= _META_MAX:
            raise SnapshotRefused(self.path, f"metadata length {n} is out of range")
        if not n:
            return {}
        try:
            meta = json.loads(self._meta_region(k)[:n].numpy().tobytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise SnapshotRefused(self.path, "its metadata is not the JSON mixfleet "
                                             "writes") from None
        if not isinstance(meta, dict):
            raise SnapshotRefused(self.path, "its metadata is not a JSON object")
        return meta

    def persist(self, dst: Path) -> Path:
        """Copy the snapshot file to ``dst`` durably (the dying gasp: survives the node); a
        link or another user's directory in place of ``dst``'s raises SnapshotRefused."""
        try:
            safefs.make_dir(dst.parent)
        except UnsafePathError as e:
            raise SnapshotRefused(dst.parent, str(e)) from None
        tmp = dst.with_name(dst.name + ".tmp")
        try:
            os.unlink(tmp)  # a leftover (or planted) temporary file
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
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
        if self.path.parent.name.startswith(f"mixfleet-{_euid()}-"):
            with contextlib.suppress(OSError):  # the run's directory, once empty
                self.path.parent.rmdir()


def peek_snapshot(path: Path) -> tuple[int, dict[int, int]]:
    """(layout hash, {step: slot}) of a snapshot file without mapping it; ({}) if none.
    A file that fails :func:`check_snapshot_file` raises SnapshotRefused."""
    if not os.path.lexists(path):
        return 0, {}
    check_snapshot_file(path)
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
