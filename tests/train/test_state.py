"""The checkpoint manager: resume (from memory and from disk) and rollback restore the
same set of objects — model, optimizer, LR, schedule, sampler, shares, guards, RNG and the
emulated chip — through one restore path."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from mixfleet.emulate import EmulatedDevice, EmulationConfig
from mixfleet.train.launch import resolve_config
from mixfleet.train.rundir import RunDir
from mixfleet.train.trainer import Trainer
from mixfleet.workloads import get_workload
from tests.train.helpers import DIGITS

EXPECTED = {"model", "optimizer", "lrs", "rng", "sampler", "lr_schedule", "shares", "guards",
            "emu"}


def _weights(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in t.final_state_dict().items()}


def _trainer(run: RunDir, snapshots: int) -> Trainer:
    cfg = resolve_config(DIGITS, ["train.steps=30", "checkpoint.interval=5",
                                  f"checkpoint.snapshot_interval={snapshots}",
                                  "checkpoint.asynchronous=false", "launch.nproc=1",
                                  "launch.device='emu:nvidia-h20'", "telemetry.hz=0"])
    emu = EmulatedDevice.create("emu:nvidia-h20", config=EmulationConfig(seed=0))
    return Trainer(cfg, get_workload("digits-cnn"), run=run, device=torch.device("cpu"),
                   emu=emu)


def test_resume_and_rollback_restore_the_same_objects(tmp_path: Path) -> None:
    """Resume from memory, resume from disk and a rollback each restore every stateful
    object, the emulated chip included, and land on the state that was saved."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        run = RunDir(tmp_path / "run")
        a = _trainer(run, 1)
        saved = {}
        for _ in range(7):
            a.train_step()
            if a.step == 5:
                a.state.save(a.step)
                saved[5] = (_weights(a), a.emu.state_dict())  # type: ignore[union-attr]
            a.state.snapshot(a.step)
        saved[7] = (_weights(a), a.emu.state_dict())  # type: ignore[union-attr]
        a.state.ckpt.wait()
        a.state.snapshots.wait()

        mem = _trainer(run, 1)
        assert mem.resume() == 7 and mem.state.source == "memory"
        disk = _trainer(run, 0)
        assert disk.resume() == 5 and disk.state.source == "disk"
        for t, step in ((mem, 7), (disk, 5)):
            weights, emu = saved[step]
            assert all(torch.equal(weights[k], v) for k, v in t.final_state_dict().items())
            assert t.emu.state_dict() == emu  # type: ignore[union-attr]
        resumed_mem, resumed_disk = set(mem.state.restored), set(disk.state.restored)
        for _ in range(2):
            mem.train_step()
        mem.rollback([8])
        assert mem.step == 5
        rolled = set(mem.state.restored)
        assert resumed_mem == resumed_disk == rolled == EXPECTED
        assert all(torch.equal(saved[5][0][k], v) for k, v in mem.final_state_dict().items())
        assert mem.emu.state_dict() == saved[5][1]  # type: ignore[union-attr]
        assert mem.skip == {8}
        mem.state.snapshots.discard()
        a.state.snapshots.discard()
    finally:
        dist.destroy_process_group()


def _slot_trainer(run: RunDir, slot: str | None) -> Trainer:
    cfg = resolve_config(DIGITS, ["train.steps=30", "checkpoint.interval=5",
                                  "checkpoint.snapshot_interval=0",
                                  "checkpoint.asynchronous=false", "launch.nproc=1",
                                  "launch.device='emu:kunlun-p800'", "telemetry.hz=0"])
    emu = EmulatedDevice.create("emu:kunlun-p800", config=EmulationConfig(seed=0), slot=slot)
    return Trainer(cfg, get_workload("digits-cnn"), run=run, device=torch.device("cpu"),
                   emu=emu)


def test_a_chips_heat_is_restored_only_onto_the_same_physical_device(tmp_path: Path) -> None:
    """State saved by the chip in slot A comes back under slot A (as hot as saved); under
    slot B (a relaunch on another device of the same kind) the chip starts as a fresh,
    cool one, and the rest of the state (weights, step) is restored all the same."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        run = RunDir(tmp_path / "run")
        a = _slot_trainer(run, "p800/p800/0:0")
        for _ in range(5):
            a.train_step()
        a.emu.model.advance(600.0)  # type: ignore[union-attr]  # hot: ten time constants
        a.state.save(a.step)
        a.state.ckpt.wait()
        hot = a.emu.state_dict()  # type: ignore[union-attr]
        fresh = _slot_trainer(RunDir(tmp_path / "other"), "p800/p800/0:1").emu.state_dict()
        assert hot["model"]["state"]["temp_c"] > 80 > fresh["model"]["state"]["temp_c"]

        same = _slot_trainer(run, "p800/p800/0:0")
        assert same.resume() == 5 and "emu" in same.state.restored
        assert same.emu.state_dict() == hot  # type: ignore[union-attr]
        other = _slot_trainer(run, "p800/p800/0:1")
        assert other.resume() == 5 and "emu" not in other.state.restored
        assert other.emu.state_dict() == fresh  # type: ignore[union-attr]
        assert all(torch.equal(v, same.final_state_dict()[k])
                   for k, v in other.final_state_dict().items())
        # a relaunch on fewer ranks finds its device's entry, wherever that rank was
        entry = {"emulated": "emu:kunlun-p800", "device_slot": "p800/p800/0:1", "emu": hot}
        assert other.state._device_state([{"emulated": "emu:kunlun-p800",
                                           "device_slot": "p800/p800/0:0"}, entry]) == entry
        assert same.state._device_state([entry]) is None
    finally:
        dist.destroy_process_group()
