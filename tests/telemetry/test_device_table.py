"""Per-device telemetry on the fake node: each device its own reading, by stable id."""

from __future__ import annotations

import json
import time

import pytest

from mixfleet.catalog.detect import detect
from mixfleet.telemetry import (
    DeviceTable,
    Sampler,
    TableFile,
    device_temperature,
    open_reader,
    open_readers,
    read_devices,
)
from mixfleet.telemetry.smi import SmiReader
from tests.fakes.node import FakeNode


@pytest.fixture
def node(tmp_path):
    n = FakeNode(tmp_path / "node", ["nvidia-h20"] * 4)
    with n.activated():
        yield n


def test_nvml_reader_sees_a_temperature_written_to_the_state_file(node):
    """A change in the state file shows in the next NVML reading of that device only."""
    reader = open_reader("auto")
    assert reader.name == "nvml"
    before = read_devices(reader)
    node.set(2, temp_c=93.0)
    after = read_devices(reader)
    ids = [d["uuid"] for d in node.devices]
    assert [before[i].temp_c for i in ids] == [40.0] * 4
    assert [after[i].temp_c for i in ids] == [40.0, 40.0, 93.0, 40.0]


@pytest.mark.parametrize("tool", ["nvidia-smi", "xpu_smi", "npu-smi", "amd-smi", "hl-smi"])
def test_smi_readers_give_each_device_its_own_temperature(tmp_path, tool):
    """Each vendor tool's reader keys samples by stable id; device i reads its own value."""
    chip = {"nvidia-smi": "nvidia-h20", "xpu_smi": "kunlun-p800", "npu-smi": "ascend-910b",
            "amd-smi": "amd-mi300x", "hl-smi": "intel-gaudi2"}[tool]
    n = FakeNode(tmp_path / tool, [chip] * 3)
    for i, t in enumerate((50.0, 61.0, 72.0)):
        n.set(i, temp_c=t, clock_mhz=1000.0 + i)
    with n.activated():
        samples = SmiReader(tool, min_interval_s=0, environ={}).read()
    assert [s.temp_c for s in samples] == [50.0, 61.0, 72.0]
    assert [s.torch_index for s in samples] == [0, 1, 2]
    assert len({s.device_id for s in samples}) == 3 and None not in {s.device_id for s in samples}
    if tool != "xpu_smi":  # xpu_smi prints no clock
        assert [s.clock_mhz for s in samples] == [1000.0, 1001.0, 1002.0]


def test_rank_reads_its_own_device_through_the_published_table(node, tmp_path):
    """One sampler publishes the table; the rank of torch cuda:1 under CUDA_VISIBLE_DEVICES
    =2,3 reads device 3's temperature and no other."""
    path = tmp_path / "run" / "telemetry" / "devices-node.json"
    table = DeviceTable(path)
    det = detect(accelerator=(None, 0), environ={"CUDA_VISIBLE_DEVICES": "2,3"})
    temp = device_temperature(path, 1, detection=det)
    assert temp() is None  # nothing published yet
    node.set(3, temp_c=88.0)
    node.set(2, temp_c=70.0)
    with Sampler(open_reader("nvml"), hz=50, sink=table):
        deadline = time.monotonic() + 10
        while temp() != 88.0 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert temp() == 88.0
    assert device_temperature(table, 0, detection=det)() == 70.0
    rows = json.loads(path.read_text())["devices"]
    assert sorted(r["temp_c"] for r in rows.values()) == [40.0, 40.0, 70.0, 88.0]


def test_reader_source_and_unknown_device(node):
    """A reader as source reads on each call; a device no tool lists reads as None."""
    det = detect(accelerator=(None, 0), environ={})
    temp = device_temperature(open_reader("nvml"), 0, detection=det)
    node.set(0, temp_c=77.0)
    assert temp() == 77.0
    assert device_temperature(open_reader("nvml"), 7, detection=det)() is None


def test_garbled_or_stale_table_reads_as_unknown(tmp_path):
    """A garbled table file, or one whose sampler stopped long ago, gives no temperature."""
    p = tmp_path / "t.json"
    p.write_bytes(b"\x00\xff{{{")
    assert TableFile(p).temperature("GPU-x") is None
    p.write_text(json.dumps({"t": time.time() - 3600, "devices": {"GPU-x": {"temp_c": 50}}}))
    assert TableFile(p, max_age_s=30).temperature("GPU-x") is None
    p.write_text(json.dumps({"t": time.time(), "devices": {"GPU-x": {"temp_c": 50}}}))
    assert TableFile(p, max_age_s=30).temperature("GPU-x") == 50.0


def test_table_reads_are_rate_limited(tmp_path):
    """Within min_interval_s a rank reuses its last look; after it, it sees the change."""
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"t": time.time(), "devices": {"GPU-x": {"temp_c": 50}}}))
    slow, fast = TableFile(p, min_interval_s=3600), TableFile(p, min_interval_s=0)
    assert slow.temperature("GPU-x") == fast.temperature("GPU-x") == 50.0
    p.write_text(json.dumps({"t": time.time(), "devices": {"GPU-x": {"temp_c": 91}}}))
    assert slow.temperature("GPU-x") == 50.0 and fast.temperature("GPU-x") == 91.0


def test_open_readers_covers_every_vendor_of_a_mixed_node(tmp_path):
    """On 2 H20 + 2 P800 + 1 910B, `auto` gives NVML plus xpu_smi and npu-smi; together they
    publish one table with all five devices."""
    n = FakeNode(tmp_path / "mixed", ["nvidia-h20", "nvidia-h20", "kunlun-p800",
                                      "kunlun-p800", "ascend-910b"])
    with n.activated():
        readers = open_readers("auto")
        assert sorted(r.name for r in readers) == ["npu-smi", "nvml", "xpu_smi"]
        table = DeviceTable(tmp_path / "t.json")
        for r in readers:
            table(r.read())
    assert len(json.loads((tmp_path / "t.json").read_text())["devices"]) == 5
