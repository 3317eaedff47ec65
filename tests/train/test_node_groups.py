"""Vendor-aware placement and groups on a fake node of 2 H20 + 2 P800 (all ``cuda``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mixfleet.catalog.detect import Detection
from mixfleet.errors import ConfigError
from mixfleet.train.config import RankConfig
from mixfleet.train.device import resolve_device
from mixfleet.train.launch import prepare_run, resolve_config
from mixfleet.train.mixed.collectives import FleetCollectives, check_groups, default_backend
from mixfleet.train.mixed.placement import local_detection, place_rank, rank_placements
from tests.fakes.node import FakeNode
from tests.train.helpers import DIGITS

MIXED = ["nvidia-h20", "nvidia-h20", "kunlun-p800", "kunlun-p800"]


@pytest.fixture
def node(tmp_path):
    n = FakeNode(tmp_path / "node", MIXED)
    with n.activated():
        local_detection(refresh=True)
        yield n
    local_detection(refresh=True)


def test_each_rank_gets_its_own_device_and_kind(node):
    """Four `cuda` ranks: the P800s and the H20s each get one rank, by their own index."""
    ps = rank_placements(["cuda"] * 4)
    assert [(p.kind, p.index) for p in ps] == [("kunlun-p800", 0), ("kunlun-p800", 1),
                                              ("nvidia-h20", 0), ("nvidia-h20", 1)]
    assert len({p.stable_id for p in ps}) == 4
    assert {p.stable_id for p in ps[2:]} == {d["uuid"] for d in node.devices[:2]}
    assert [p.visible_var for p in ps] == ["XPU_VISIBLE_DEVICES"] * 2 + \
        ["CUDA_VISIBLE_DEVICES"] * 2
    # the last step only: on the fake node a device type torch lacks computes on the CPU
    assert resolve_device("cuda", 3, placement=ps[3]) == torch.device("cpu")


def test_group_table_two_kinds_two_native_groups_one_bridge(node):
    """Two kinds, a native group each (gloo stand-ins for nccl), one host bridge; the
    default group is gloo, not a device backend spanning vendors."""
    c = FleetCollectives(["cuda"] * 4, 0)
    table = {row["group"]: row for row in c.group_table()}
    assert c.hierarchical and c.members == {"kunlun-p800": [0, 1], "nvidia-h20": [2, 3]}
    assert table["kind:kunlun-p800"]["ranks"] == [0, 1]
    assert table["kind:nvidia-h20"]["stands_for"] == "nccl"
    assert table["host-bridge"] == {"group": "host-bridge", "ranks": [0, 2], "backend": "gloo",
                                    "kinds": ["kunlun-p800", "nvidia-h20"],
                                    "vendors": ["baidu", "nvidia"]}
    assert table["default"]["backend"] == "gloo"
    for row in table.values():
        assert row["backend"] in ("gloo", "mpi") or len(row["vendors"]) == 1
    assert default_backend(["cuda"] * 4, torch.device("cpu")) == "gloo"


def test_device_backend_spanning_vendors_is_refused(node):
    """launch.backend = nccl over H20 + P800 raises ConfigError naming both kinds."""
    ps = rank_placements(["cuda"] * 4)
    with pytest.raises(ConfigError, match="kunlun-p800: ranks \\[0, 1\\]; nvidia-h20"):
        check_groups(ps, "nccl")
    with pytest.raises(ConfigError, match="no device backend spans vendors"):
        default_backend(["cuda"] * 4, torch.device("cpu"), "nccl")
    check_groups(ps[2:], "nccl")  # one vendor: fine


def test_chip_override_and_its_validation(tmp_path):
    """[[ranks]] chip overrides detection (no tool needed); a contradicting chip is refused."""
    none = Detection(devices=(), tools=(), accelerator=None, accelerator_count=0)
    p = place_rank("cuda:1", 0, chip="kunlun-p800", detection=none)
    assert (p.kind, p.vendor, p.index) == ("kunlun-p800", "baidu", 1)
    assert RankConfig(device="cuda", chip="nvidia-h20").chip == "nvidia-h20"
    with pytest.raises(ConfigError, match="is a 'npu' device"):
        RankConfig(device="cuda", chip="ascend-910b")
    with pytest.raises(ConfigError, match="unknown chip id"):
        RankConfig(device="cuda", chip="nvidia-h9000")
    with pytest.raises(ConfigError, match="contradicts"):
        RankConfig(device="emu:nvidia-h20", chip="kunlun-p800")


def test_prepare_run_refuses_nccl_across_vendors_and_writes_nothing(node, tmp_path):
    """A job forcing nccl across H20 + P800 is refused before the run directory exists."""
    ranks = ", ".join(f'{{device="cuda", chip="{c}"}}' for c in MIXED)
    cfg = resolve_config(DIGITS, ["train.steps=2", f"ranks=[{ranks}]", "launch.backend='nccl'"])
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="no device backend spans vendors"):
        prepare_run(cfg, run)
    assert not run.exists()


def _worker(rank: int, world: int, init: str, state: str, pylib: str, out: str) -> None:
    os.environ["MIXFLEET_FAKE_NODE_STATE"] = state
    os.environ["PATH"] = f"{Path(state).parent / 'bin'}{os.pathsep}{os.environ['PATH']}"
    import sys

    sys.path.insert(0, pylib)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    c = FleetCollectives.create(["cuda"] * world, rank, group=dist.group.WORLD)
    flat = torch.arange(5, dtype=torch.float64) * (rank + 1)
    c.all_reduce(flat)
    torch.save({"flat": flat, "table": c.group_table(), "kind": c.kind},
               Path(out) / f"r{rank}.pt")
    dist.destroy_process_group()


def test_four_ranks_reduce_through_kind_groups_and_bridge(node, tmp_path):
    """Four processes on the fake node: the hierarchical sum equals the plain sum on every
    rank, and every rank records the same group table."""
    out = tmp_path / "out"
    out.mkdir()
    init = f"file://{tmp_path / 'store'}"
    mp.start_processes(_worker, args=(4, init, str(node.state_path), str(node.pylib),
                                      str(out)), nprocs=4, join=True, start_method="fork")
    want = torch.arange(5, dtype=torch.float64) * (1 + 2 + 3 + 4)
    got = [torch.load(out / f"r{r}.pt", weights_only=True) for r in range(4)]
    assert all(torch.equal(g["flat"], want) for g in got)
    assert [g["kind"] for g in got] == ["kunlun-p800"] * 2 + ["nvidia-h20"] * 2
    assert all(g["table"] == got[0]["table"] for g in got)
    assert {r["group"] for r in got[0]["table"]} == {"default", "control", "kind:kunlun-p800",
                                                    "kind:nvidia-h20", "host-bridge"}


def test_interleaved_chip_overrides_never_share_a_device(node):
    """[[ranks]] chips p800, h20, p800, h20 on `cuda`: four distinct devices, each of its chip."""
    chips = ["kunlun-p800", "nvidia-h20", "kunlun-p800", "nvidia-h20"]
    ps = rank_placements(["cuda"] * 4, chips=chips)
    assert [(p.kind, p.index) for p in ps] == [("kunlun-p800", 0), ("nvidia-h20", 0),
                                              ("kunlun-p800", 1), ("nvidia-h20", 1)]
    assert len({p.stable_id for p in ps}) == 4
