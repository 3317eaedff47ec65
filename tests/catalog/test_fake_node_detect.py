"""Detection on the fake node (tests/fakes): real subprocesses and a fake NVML module."""

from __future__ import annotations

import pytest

from mixfleet.catalog.detect import detect
from mixfleet.catalog.visible import visible_devices
from tests.fakes.node import FakeNode

CHIPS = ["nvidia-h20", "nvidia-h20", "kunlun-p800", "kunlun-p800", "ascend-910b",
         "amd-mi300x", "intel-gaudi2"]


@pytest.fixture
def node(tmp_path):
    n = FakeNode(tmp_path / "node", CHIPS)
    with n.activated():
        yield n


def test_detects_every_device_with_vendor_chip_and_stable_id(node):
    """Every fake device is found once, with its vendor, catalog chip and UUID/bus id."""
    det = detect(accelerator=(None, 0), environ={})
    by_id = {d.stable_id: d for d in det.devices}
    assert len(det.devices) == len(CHIPS)
    for dev in node.devices:
        key = dev["uuid"] if dev["chip"] != "ascend-910b" else f"pci:{dev['bus_id']}"
        if dev["chip"] == "kunlun-p800":
            key = dev["uuid"].replace("-", "")[-16:]  # xpu_smi prints the serial number
        assert by_id[key].chip_id == dev["chip"]
    assert {d.vendor for d in det.devices} == {"nvidia", "baidu", "huawei", "amd", "intel"}
    assert {t.tool: t.state for t in det.tools}["nvml"] == "ok"


def test_cuda_visible_devices_maps_torch_index_to_smi_uuid(tmp_path):
    """CUDA_VISIBLE_DEVICES=2,3: torch cuda:0 is the SMI device with index 2 (its UUID)."""
    n = FakeNode(tmp_path / "n4", ["nvidia-h20"] * 4)
    with n.activated():
        det = detect(accelerator=("cuda", 2), environ={"CUDA_VISIBLE_DEVICES": "2,3"})
    cuda0 = next(d for d in det.devices if d.torch_device == "cuda:0")
    assert cuda0.index == 2 and cuda0.uuid == n.devices[2]["uuid"]
    assert [d.torch_index for d in det.devices] == [None, None, 0, 1]


def test_masks_by_uuid_prefix_and_stop_at_an_unknown_entry(tmp_path):
    """A mask may name UUIDs (prefixes too); the runtimes stop at the first bad entry."""
    n = FakeNode(tmp_path / "n4", ["nvidia-h20"] * 4)
    u3 = n.devices[3]["uuid"]
    with n.activated():
        det = detect(accelerator=("cuda", 4), environ={"CUDA_VISIBLE_DEVICES": f"{u3[:12]},1,9,0"})
    assert {d.index: d.torch_index for d in det.devices} == {0: None, 1: 1, 2: None, 3: 0}
    assert visible_devices(["a", "b"], index=[0, 1], uuid=[None, None], mask=[]) == []


def test_kunlun_mask_is_its_own_variable(tmp_path):
    """XPU_VISIBLE_DEVICES masks the Kunlun devices and leaves the H20s alone."""
    n = FakeNode(tmp_path / "n", ["nvidia-h20", "nvidia-h20", "kunlun-p800", "kunlun-p800"])
    with n.activated():
        det = detect(accelerator=(None, 0), environ={"XPU_VISIBLE_DEVICES": "1"})
    got = {(d.vendor, d.index): d.torch_index for d in det.devices}
    assert got == {("baidu", 0): None, ("baidu", 1): 0, ("nvidia", 0): 0, ("nvidia", 1): 1}


def test_failing_fake_tool_is_reported(node):
    """A tool the state file makes fail is 'failed'; the other vendors are still found."""
    node.fail_tool("hl-smi", "hl-smi: driver not loaded")
    det = detect(accelerator=(None, 0), environ={})
    assert {t.tool: t.state for t in det.tools}["hl-smi"] == "failed"
    assert "intel" not in {d.vendor for d in det.devices} and len(det.devices) == 6
