"""Training on a fake node of 2 Kunlun P800 + 2 H20 (all ``cuda`` to PyTorch; fake SMI
tools and NVML, computation on the CPU, gloo standing in for the native backends): vendor
groups recorded in the manifest, each rank's thermal guard reading its own device, and a
drain that removes the device from the relaunched ranks' visible-devices masks."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.fakes.node import FakeNode
from tests.train.helpers import events, final_weights, train_cli
from tests.train.test_checkpoint import run_inproc

NODE = ["kunlun-p800", "kunlun-p800", "nvidia-h20", "nvidia-h20"]
ATOL = 5e-4  # the same global batches, summed by 4 or 3 ranks in another order
COMMON = ("train.steps=80", "checkpoint.interval=20", "train.log_every=100",
          "launch.device='cuda'", "telemetry.hz=5", "health.warn_c=85", "health.critical_c=95")


@pytest.fixture
def node(tmp_path: Path) -> FakeNode:
    return FakeNode(tmp_path / "node", NODE)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _rank_devices(d: Path, after: str | None = None) -> dict[int, str]:
    """rank -> stable id of its device (latest attempt; only workers started after the
    last event of kind ``after``)."""
    evs = events(d)
    if after is not None:
        last = max(i for i, e in enumerate(evs) if e["event"] == after)
        evs = evs[last:]
    return {e["rank"]: e["device_id"] for e in evs if e["event"] == "worker_start"}


def _is(stable_id: str | None, uuid: str) -> bool:
    """Whether a rank's stable id names the node device ``uuid`` (a vendor tool may give
    the UUID or its last 16 hex digits)."""
    return bool(stable_id) and str(stable_id).replace("-", "") in uuid.replace("-", "")


def _reference(tmp_path: Path) -> dict[str, torch.Tensor]:
    ref = tmp_path / "ref"
    run_inproc(ref, "train.steps=80", "checkpoint.interval=20", "launch.nproc=1",
               "launch.max_restarts=0", "launch.device='cpu'")
    return final_weights(ref)


def _heat_when(d: Path, node: FakeNode, device: int, temp: float, after_step: int,
               cool_on: str | None) -> threading.Thread:
    """Set ``device``'s temperature once training passed ``after_step``; cool it again
    once an event of kind ``cool_on`` appears."""
    def run() -> None:
        t_end = time.time() + 200
        while time.time() < t_end:
            m = d / "metrics.jsonl"
            if m.exists() and any(json.loads(x).get("step", 0) >= after_step
                                  for x in m.read_text().splitlines()[-5:] if x.strip()):
                break
            time.sleep(0.05)
        node.set(device, temp_c=temp)
        while cool_on and time.time() < t_end:
            if (d / "events.jsonl").exists() and events(d, cool_on):
                node.set(device, temp_c=40.0)
                return
            time.sleep(0.05)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_mixed_node_groups_by_vendor_and_matches_one_process(node: FakeNode,
                                                            tmp_path: Path) -> None:
    """4 ranks on 2 P800 + 2 H20: two chip kinds with a native group each (gloo stand-ins),
    one host bridge, a default group that is no device backend spanning vendors (from the
    manifest's group table); the final weights equal one process to tolerance."""
    d = tmp_path / "run"
    ranks = "ranks=[" + ", ".join(f'{{device="cuda", chip="{c}"}}' for c in NODE) + "]"
    train_cli(d, *COMMON, ranks, "telemetry.hz=0", nproc=4, env=node.env())
    m = json.loads((d / "checkpoints" / "step_0000080" / "manifest.json").read_text())
    groups = {g["group"]: g for g in m["groups"]}
    assert groups["kind:kunlun-p800"]["ranks"] == [0, 1]
    assert groups["kind:nvidia-h20"]["ranks"] == [2, 3]
    assert groups["host-bridge"]["backend"] == "gloo"
    assert groups["default"]["backend"] == "gloo"
    # on the fake node every group is gloo; a kind's group stands in for that vendor's
    # native backend (Kunlun and H20 are both cuda to torch: nccl), the bridge for none
    assert {n: (g["backend"], g.get("stands_for")) for n, g in groups.items()
            if n.startswith("kind:") or n == "host-bridge"} == {
        "kind:kunlun-p800": ("gloo", "nccl"), "kind:nvidia-h20": ("gloo", "nccl"),
        "host-bridge": ("gloo", None)}
    for g in groups.values():
        if "stands_for" in g:  # a native backend never spans vendors
            assert len(set(g["vendors"])) == 1
    owners = [[r for r, sid in _rank_devices(d).items() if _is(sid, dev["uuid"])]
              for dev in node.devices]
    assert sorted(len(o) for o in owners) == [1, 1, 1, 1]  # each rank its own device
    assert _max_diff(final_weights(d), _reference(tmp_path)) <= ATOL


def test_only_the_hot_devices_rank_acts(node: FakeNode, tmp_path: Path) -> None:
    """Device 2 of the node heats past warn_c while training runs: the rank that owns it,
    and only that rank, records a thermal action; the run finishes."""
    d = tmp_path / "run"
    hot = node.devices[2]["uuid"]
    th = _heat_when(d, node, 2, 90.0, after_step=20, cool_on="thermal_warning")
    s = train_cli(d, *COMMON, "train.steps=120", nproc=4, env=node.env())
    th.join(timeout=5)
    owner = [r for r, sid in _rank_devices(d).items() if _is(sid, hot)]
    acts = {e["rank"] for e in events(d) if e["event"].startswith("thermal_")}
    assert len(owner) == 1 and acts == set(owner)
    assert s["steps"] == 120


def test_drain_removes_the_device_from_the_relaunch(node: FakeNode, tmp_path: Path) -> None:
    """Device 3 goes critical: its rank is drained, the run relaunches on 3 ranks whose
    visible-devices masks all lack device 3, the block list names it by UUID, and the
    final weights match one process (the same global batches) to tolerance."""
    d = tmp_path / "run"
    dead = node.devices[3]["uuid"]
    _heat_when(d, node, 3, 99.0, after_step=30, cool_on=None)
    s = train_cli(d, *COMMON, nproc=4, env=node.env())
    assert s["world_size"] == 3 and len(s["drained_ranks"]) == 1
    blocked = json.loads((d / "blocklist.json").read_text())
    assert any(_is(e.get("device_id") or e.get("stable_id"), dead) for e in blocked), blocked
    relaunched = _rank_devices(d, after="relaunch")
    assert len(relaunched) == 3 and not any(_is(sid, dead) for sid in relaunched.values())
    masks = events(d, "device_mask")
    assert masks, "the relaunch set no visible-devices mask"
    assert _max_diff(final_weights(d), _reference(tmp_path)) <= ATOL
