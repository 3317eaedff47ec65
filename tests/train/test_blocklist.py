"""A drained device stays out of the run directory: blocklist by stable id, masked on relaunch."""

from __future__ import annotations

import json

import pytest

from mixfleet.catalog.detect import Detection, detect
from mixfleet.cli import main
from mixfleet.errors import ConfigError
from mixfleet.train.launch import _relaunch_without_drained, device_env, resolve_config
from mixfleet.train.mixed.blocklist import add_drained, read_entries, resolve_pending, visible_env
from mixfleet.train.mixed.placement import (
    DEVICE_SLOTS_ENV,
    local_detection,
    rank_placements,
)
from mixfleet.train.rundir import RunDir
from tests.fakes.node import FakeNode
from tests.train.helpers import DIGITS


@pytest.fixture
def node(tmp_path):
    n = FakeNode(tmp_path / "node", ["nvidia-h20"] * 4)
    with n.activated():
        local_detection(refresh=True)
        yield n
    local_detection(refresh=True)


def test_pending_drain_resolves_to_the_rank_uuid_and_masks_it(node):
    """Rank 3's drain names device 3 by UUID; the mask keeps devices 0, 1, 2 in PCI order."""
    entries = resolve_pending([{"rank": 3, "step": 7, "pending": True}],
                              rank_placements(["cuda"] * 4))
    assert entries[0]["device_id"] == node.devices[3]["uuid"] and not entries[0]["pending"]
    assert entries[0]["visible_var"] == "CUDA_VISIBLE_DEVICES"
    env = visible_env(entries, {})
    assert env == {"CUDA_VISIBLE_DEVICES": "0,1,2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_an_existing_mask_is_narrowed_not_replaced(node):
    """Under CUDA_VISIBLE_DEVICES=3,1,2 a drain of torch cuda:0 (SMI device 3) leaves 1,2."""
    det = detect(environ={"CUDA_VISIBLE_DEVICES": "3,1,2"})
    ps = rank_placements(["cuda"] * 3, detection=det)
    assert [p.tool_index for p in ps] == [3, 1, 2]
    entries = resolve_pending([{"rank": 0, "step": 1, "pending": True}], ps)
    env = visible_env(entries, {"CUDA_VISIBLE_DEVICES": "3,1,2"})
    assert env["CUDA_VISIBLE_DEVICES"] == "1,2"


def test_relaunch_without_drained_rank(node, tmp_path):
    """The relaunch has 3 ranks, the blocklist names device 3 by UUID, and the mask of every
    later launch in this run directory leaves it out."""
    cfg = resolve_config(DIGITS, ["train.steps=4", "launch.device='cuda'", "launch.nproc=4",
                                  "train.global_batch=8"])
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    add_drained(run.root, rank=3, step=2)
    new = _relaunch_without_drained(cfg, run, {})
    assert new.launch.nproc == 3
    (e,) = read_entries(run.root)
    assert e["device_id"] == node.devices[3]["uuid"] and e["chip"] == "nvidia-h20"
    assert device_env(run, {})["CUDA_VISIBLE_DEVICES"] == "0,1,2"
    relaunch = [x for x in run.read_events() if x["event"] == "relaunch"][-1]
    assert relaunch["blocked"] == [node.devices[3]["uuid"]]
    # The 3 new ranks, placed under that mask, use devices 0, 1, 2: never device 3.
    masked = detect(environ=device_env(run, {}))
    new_ids = [p.stable_id for p in rank_placements(["cuda"] * 3, detection=masked)]
    assert new_ids == [d["uuid"] for d in node.devices[:3]]


def test_old_entries_and_emulated_drains_block_no_device(tmp_path):
    """Entries without a stable id (older runs, emulated chips) mask nothing."""
    ps = rank_placements(["emu:nvidia-h20", "emu:kunlun-p800"])
    entries = resolve_pending([{"rank": 1, "step": 3, "pending": True},
                               {"rank": 0, "step": 1, "pending": False, "device": "cuda"}], ps)
    assert entries[0]["device_id"] is None and entries[0]["kind"] == "kunlun-p800"
    assert visible_env(entries, {}) == {}


def test_an_emulated_rank_is_its_device_slot_and_a_drain_drops_it(tmp_path):
    """Each emulated rank stands for the device its slot names (else for its job rank); a
    relaunch without drained rank 0 leaves rank 0 the slot of old rank 1, never the
    drained device's (so its saved heat cannot come back on a healthy one)."""
    two = ["emu:kunlun-p800"] * 2
    assert [p.device_slot for p in rank_placements(two, slots=["p/a:3", "p/a:5"])] == \
        ["p/a:3", "p/a:5"]
    assert [p.device_slot for p in rank_placements(two, slots=[])] == ["rank:0", "rank:1"]
    none = Detection(devices=(), tools=(), accelerator=None, accelerator_count=0)
    assert rank_placements(["cuda:0"], slots=["p/a:0"], detection=none).pop().device_slot is None
    cfg = resolve_config(DIGITS, ["train.steps=4", "launch.device='emu:kunlun-p800'",
                                  "launch.nproc=2", "train.global_batch=8"])
    for env, left in (({DEVICE_SLOTS_ENV: "p/a:3,p/a:5"}, "p/a:5"), ({}, "rank:1")):
        run = RunDir(tmp_path / f"run{len(env)}")
        run.root.mkdir()
        add_drained(run.root, rank=0, step=2)
        new = _relaunch_without_drained(cfg, run, env)
        assert new.launch.nproc == 1 and env[DEVICE_SLOTS_ENV] == left
        assert [p.device_slot for p in rank_placements(["emu:kunlun-p800"], slots=[left])] == [left]


def test_damaged_blocklist_is_a_config_error(tmp_path):
    """A blocklist.json that is not a JSON list of objects raises ConfigError naming it."""
    for raw in (b"\xff\xfe\x00", b"[" * 100000, b'{"rank": 1}', b"[1]"):
        (tmp_path / "blocklist.json").write_bytes(raw)
        with pytest.raises(ConfigError, match="blocklist.json"):
            read_entries(tmp_path)


def test_devices_command_shows_blocked_devices(node, tmp_path, capsys, monkeypatch):
    """`mixfleet devices --run-dir` lists the blocked device and marks it in the table."""
    monkeypatch.setenv("COLUMNS", "250")
    run = tmp_path / "run"
    run.mkdir()
    uuid = node.devices[1]["uuid"]
    (run / "blocklist.json").write_text(json.dumps([
        {"rank": 1, "step": 40, "pending": False, "device_id": uuid, "chip": "nvidia-h20",
         "reason": "thermal"}]))
    assert main(["devices", "--run-dir", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [b["device_id"] for b in out["blocked"]] == [uuid]
    assert [d["blocked"] for d in out["devices"]] == [False, True, False, False]
    assert main(["devices", "--run-dir", str(run)]) == 0
    table = capsys.readouterr().out
    assert table.count("BLOCKED") == 1
    assert f"blocked in {run}: {uuid}" in table
    assert main(["devices", "--run-dir", str(tmp_path / "nope")]) == 2
    assert "--run-dir" in capsys.readouterr().err
