"""In-memory snapshots: exact round trip, a torn slot never wins, the dying gasp restores."""

from __future__ import annotations

from pathlib import Path

import torch

from mixfleet.train.checkpoint.snapshot import MemorySnapshot, peek_snapshot


def _tensors(seed: int) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [("w", torch.randn(7, 5, generator=g)), ("b", torch.randn(3, generator=g)),
            ("i", torch.randint(0, 100, (4,), generator=g)),
            ("rng", torch.randint(0, 255, (17,), generator=g, dtype=torch.uint8))]


def test_round_trip_is_exact_and_keeps_the_two_newest(tmp_path: Path) -> None:
    """Reading step s restores exactly what was written at s; two slots, newest kept."""
    live = _tensors(0)
    snap = MemorySnapshot(tmp_path / "s.snap", live)
    saved = {}
    for step in (1, 2, 3):
        live_new = _tensors(step)
        for (_, t), (_, new) in zip(live, live_new, strict=True):
            t.copy_(new)
        snap.write(step, {"note": step})
        saved[step] = [t.clone() for _, t in live]
    assert sorted(snap.valid_steps()) == [2, 3]
    for _, t in live:
        t.zero_()
    assert snap.read(2) == {"note": 2}
    assert all(torch.equal(t, s) for (_, t), s in zip(live, saved[2], strict=True))
    snap.remove()


def test_a_slot_killed_mid_write_is_never_valid(tmp_path: Path) -> None:
    """A write that dies after invalidating its slot leaves only the other slot valid."""
    live = _tensors(0)
    snap = MemorySnapshot(tmp_path / "s.snap", live)
    snap.write(10)
    snap.write(11)
    k = snap.valid_steps()[10]  # the slot the next write overwrites
    snap._hdr[3 + 3 * k] = 0  # what write() does first; the process dies right after
    assert set(peek_snapshot(tmp_path / "s.snap")[1]) == {11}
    snap.remove()


def test_dying_gasp_copy_restores_on_another_machine(tmp_path: Path) -> None:
    """persist() writes a copy from which a fresh mapping reads the same state."""
    live = _tensors(5)
    snap = MemorySnapshot(tmp_path / "shm.snap", live)
    snap.write(42)
    gasp = snap.persist(tmp_path / "gasp" / "r0.snap")
    snap.remove()
    assert not (tmp_path / "shm.snap").exists()
    other = _tensors(9)
    again = MemorySnapshot(gasp, other)
    assert 42 in again.valid_steps()
    again.read(42)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(other, _tensors(5), strict=True))


def test_another_layout_is_not_read(tmp_path: Path) -> None:
    """A file written for other shapes is reset, never read into the wrong tensors."""
    snap = MemorySnapshot(tmp_path / "s.snap", _tensors(0))
    snap.write(5)
    other = [("w", torch.zeros(5, 7))] + _tensors(0)[1:]
    assert MemorySnapshot(tmp_path / "s.snap", other).valid_steps() == {}
