"""In-memory snapshots sized against the host budget before the first step: two copies
when they fit, one when only one does (a single buffer), none when not even that — each
said with an event; a single-buffer snapshot still restores what it saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mixfleet.train.checkpoint.snapshot import MemorySnapshot, snapshot_path
from mixfleet.train.launch import resolve_config
from mixfleet.train.rundir import RunDir
from mixfleet.train.trainer import Trainer
from mixfleet.workloads import get_workload
from tests.train.helpers import DIGITS, events


def test_single_buffer_snapshot_writes_and_reads_back(tmp_path: Path) -> None:
    """One slot: half the file of two; the newest write is the one valid step and reads
    back exactly."""
    run = tmp_path / "run"
    t = torch.arange(1000, dtype=torch.float32)
    one = MemorySnapshot(snapshot_path(run, 1, 0), [("w", t)], slots=1)
    two_size = MemorySnapshot(snapshot_path(run, 1, 1), [("w", t)]).nbytes
    one.write(1, {"a": 1})
    t.add_(1)
    one.write(2, {"a": 2})
    assert one.valid_steps() == {2: 0} and one.nbytes < two_size
    saved = t.clone()
    t.zero_()
    assert one.read(2) == {"a": 2} and torch.equal(t, saved)
    one.remove()
    snapshot_path(run, 1, 1).unlink()


@pytest.mark.parametrize("gib,slots,event", [(0.0, 2, "snapshot_plan"),
                                             (450e3 / 2**30, 1, "snapshot_single_buffer"),
                                             (100e3 / 2**30, 0, "snapshots_off")])
def test_snapshot_budget_picks_double_single_or_none(tmp_path: Path, gib: float, slots: int,
                                                     event: str) -> None:
    """digits-cnn with SGD needs 2 x 306 KB: a 450 KB budget gives a single buffer, 100 KB
    turns snapshots off, the default (half the available memory) double-buffers."""
    cfg = resolve_config(DIGITS, ["train.steps=10", "launch.nproc=1",
                                  f"checkpoint.snapshot_memory_gib={gib}"])
    run = RunDir(tmp_path / "run")
    t = Trainer(cfg, get_workload("digits-cnn"), run=run, device=torch.device("cpu"))
    assert events(run.root, event)
    assert t.snap_every == (1 if slots else 0)
    if slots:
        assert t.state.snapshots.slots == slots
