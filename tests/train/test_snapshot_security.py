"""Snapshots nobody else can plant: private directory, checked files, JSON metadata."""

from __future__ import annotations

import os
import pickle
import random
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from mixfleet.train.checkpoint import snapshot as snap_mod
from mixfleet.train.checkpoint.rng import raw_rng_state, set_raw_rng_state
from mixfleet.train.checkpoint.snapshot import (
    MemorySnapshot,
    SnapshotRefused,
    check_snapshot_file,
    legacy_snapshot_path,
    peek_snapshot,
    snapshot_dir,
    snapshot_path,
)


class _Plant:
    """Unpickling this creates the marker file (the attack a pickled meta would allow)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _named() -> list[tuple[str, torch.Tensor]]:
    return [("w", torch.arange(12, dtype=torch.float32).view(3, 4)),
            ("rng", torch.zeros(8, dtype=torch.uint8))]


def _craft(path: Path, marker: Path, step: int = 5) -> None:
    """A file with a valid header and layout whose slot-0 meta region is a pickle."""
    s = MemorySnapshot(path, _named())
    s.write(step, {"ok": 1})
    blob = pickle.dumps({"rng": _Plant(marker)})
    k = s.valid_steps()[step]
    s._meta_region(k)[: len(blob)].copy_(torch.frombuffer(bytearray(blob), dtype=torch.uint8))
    s._hdr[4 + 3 * k] = len(blob)
    del s


def _sdir(tmp_path: Path) -> Path:
    """A run's private snapshot directory under a private stand-in for /dev/shm."""
    base = tmp_path / "shm"
    base.mkdir(exist_ok=True)
    return snapshot_dir(tmp_path / "run", base)


def test_snapshots_live_in_a_private_directory(tmp_path):
    """snapshot_path is in a 0700 directory of this user with an unpredictable name
    (mkdtemp), recorded in the run directory, not at the old predictable names."""
    d = _sdir(tmp_path)
    assert d.stat().st_mode & 0o777 == 0o700 and d.stat().st_uid == os.geteuid()
    assert d.name.startswith(f"mixfleet-{os.geteuid()}-") and len(d.name) > 16
    assert _sdir(tmp_path) == d  # recorded: every rank and restart finds the same one
    run = tmp_path / "run2"
    p = snapshot_path(run, 2, 1)
    try:
        assert p != legacy_snapshot_path(run, 2, 1)
        assert p.parent.name != f"mixfleet-{os.geteuid()}"
        assert p.parent.stat().st_mode & 0o077 == 0
    finally:
        p.parent.rmdir()


def test_file_planted_at_the_old_path_is_never_read(tmp_path):
    """A crafted file at the old /dev/shm name is ignored: the new path holds nothing, and
    its pickled meta is never unpickled."""
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    old = legacy_snapshot_path(run, 1, 0)
    try:
        _craft(old, marker)
        new = snapshot_path(run, 1, 0)
        assert peek_snapshot(new) == (0, {})
        assert not marker.exists()
    finally:
        old.unlink(missing_ok=True)
        if (run / f"snapshots.{socket.gethostname()}").exists():
            new.parent.rmdir()


def test_crafted_meta_region_is_refused_not_unpickled(tmp_path):
    """A file in the private directory whose meta region holds a pickle is refused on read;
    the marker its unpickling would create never appears."""
    marker = tmp_path / "pwned"
    path = _sdir(tmp_path) / "crafted.snap"
    _craft(path, marker)
    s = MemorySnapshot(path, _named())
    with pytest.raises(SnapshotRefused, match="not the JSON"):
        s.read(5)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["foreign-owner", "group-writable", "world-writable",
                                 "symlink"])
def test_foreign_or_writable_files_are_refused(tmp_path, monkeypatch, how):
    """A file of another user, one group/others may write, or a link: refused before use."""
    path = _sdir(tmp_path) / "s.snap"
    MemorySnapshot(path, _named()).write(1, {"a": 1})
    if how == "foreign-owner":
        real = os.geteuid()
        monkeypatch.setattr(snap_mod, "_euid", lambda: real + 1)
        what = "owned by uid"
    elif how == "symlink":
        target = path.with_name("t.snap")
        path.rename(target)
        path.symlink_to(target)
        what = "symbolic link"
    else:
        path.chmod(0o620 if how == "group-writable" else 0o602)
        what = "lets others write"
    with pytest.raises(SnapshotRefused, match=what):
        peek_snapshot(path)
    with pytest.raises(SnapshotRefused, match=what):
        MemorySnapshot(path, _named())
    with pytest.raises(SnapshotRefused):
        check_snapshot_file(path)


@pytest.mark.parametrize("how", ["open-mode", "symlink", "outside"])
def test_squatted_directory_is_reported_and_avoided(tmp_path, how):
    """A recorded snapshot directory others can enter, a link in its place, or one outside
    the snapshot base is reported and replaced by a new private one (snapshots stay on)."""
    d = _sdir(tmp_path)
    base = d.parent
    d.rmdir()  # gone (a reboot), then squatted at the recorded name
    if how == "open-mode":
        d.mkdir()
        d.chmod(0o777)
        what = "lets others in"
    elif how == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        d.symlink_to(tmp_path / "elsewhere")
        what = "not a regular directory"
    else:
        rec = tmp_path / "run" / f"snapshots.{socket.gethostname()}"
        rec.write_text(str(tmp_path / f"mixfleet-{os.geteuid()}-x") + "\n")
        what = "not a snapshot directory"
    refused: list[SnapshotRefused] = []
    new = snapshot_dir(tmp_path / "run", base, refused)
    assert [what in e.reason for e in refused] == [True]
    assert new != d and new.parent == base and new.stat().st_mode & 0o777 == 0o700
    assert snapshot_dir(tmp_path / "run", base) == new  # the new one is recorded


def test_host_rng_round_trips_through_json_meta(tmp_path):
    """The python/numpy/torch RNG stored as JSON meta restores the same random streams."""
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    s = MemorySnapshot(_sdir(tmp_path) / "rng.snap", _named())
    s.write(9, {"rng": raw_rng_state(torch.device("cpu"))})
    want = (random.random(), float(np.random.rand()), torch.rand(2))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    set_raw_rng_state(s.read(9)["rng"], torch.device("cpu"))
    got = (random.random(), float(np.random.rand()), torch.rand(2))
    assert got[:2] == want[:2] and torch.equal(got[2], want[2])
    with pytest.raises(ValueError, match="malformed RNG state"):
        set_raw_rng_state({"python": 3}, torch.device("cpu"))


def test_persisted_gasp_copy_is_private(tmp_path):
    """The dying-gasp copy is created 0600 even over a planted temporary file."""
    s = MemorySnapshot(_sdir(tmp_path) / "g.snap", _named())
    s.write(2, None)
    dst = tmp_path / "gasp" / "g.snap"
    dst.parent.mkdir()
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_text("planted")
    tmp.chmod(0o666)
    s.persist(dst)
    assert dst.stat().st_mode & 0o777 == 0o600
    assert peek_snapshot(dst)[1] == {2: 0}


def test_restore_copy_is_private_and_checks_its_source(tmp_path):
    """Restoring a gasp copy makes a 0600 file equal to it; a group-writable source is
    refused and nothing is copied."""
    from mixfleet.train.checkpoint.snapshot import restore_copy

    s = MemorySnapshot(_sdir(tmp_path) / "a.snap", _named())
    s.write(4, {"k": 1})
    gasp = s.persist(tmp_path / "gasp" / "a.snap")
    dst = _sdir(tmp_path) / "b.snap"
    restore_copy(gasp, dst)
    assert dst.stat().st_mode & 0o777 == 0o600 and dst.read_bytes() == gasp.read_bytes()
    assert MemorySnapshot(dst, _named()).read(4) == {"k": 1}
    gasp.chmod(0o664)
    dst.unlink()
    with pytest.raises(SnapshotRefused, match="lets others write"):
        restore_copy(gasp, dst)
    assert not dst.exists()
