"""The emulated pace and the shares of mode = "speed" come from the same throughput rows."""

from __future__ import annotations

import dataclasses

from mixfleet.bench.table import ThroughputRow, write_table
from mixfleet.emulate import EmulatedDevice
from mixfleet.train.config import shares_table
from mixfleet.train.launch import resolve_config
from mixfleet.train.mixed.shares import rank_speeds
from tests.train.helpers import DIGITS

ROW = ThroughputRow(workload="digits-cnn", chip="nvidia-h20", batch=64, samples_per_s=1000.0,
                    step_p50_s=None, step_p90_s=None, mfu=None, peak_mem_bytes=None, host="h",
                    torch_version="2.13", date="2026-01-01", emulated=False, origin="measured")


def test_emulated_speed_matches_the_shares_table(tmp_path):
    """With [shares] table, rank_speeds and the emulated device created with
    shares_table(cfg) give each chip the same relative speed (0.4 for P800 here), which
    differs from the catalog-only speed."""
    rows = [ROW, dataclasses.replace(ROW, chip="kunlun-p800", samples_per_s=400.0)]
    path = tmp_path / "t.json"
    write_table(rows, path)
    devices = ["emu:nvidia-h20", "emu:kunlun-p800"]
    ranks = ", ".join(f'{{device="{d}"}}' for d in devices)
    cfg = resolve_config(DIGITS, ["train.steps=2", f"ranks=[{ranks}]", 'shares.mode="speed"',
                                  f'shares.table="{path}"'])
    table = shares_table(cfg)
    assert table == rows
    speeds = rank_speeds(devices, table=table, workload="digits-cnn")
    emu = [EmulatedDevice.create(d, peers=devices, table=table, workload="digits-cnn")
           for d in devices]
    assert speeds == [1.0, 0.4] and [e.speed for e in emu] == speeds
    plain = EmulatedDevice.create(devices[1], peers=devices, workload="digits-cnn")
    assert plain.speed != 0.4  # without the table the pace would disagree with the shares
    assert shares_table(resolve_config(DIGITS, ["train.steps=2"])) is None
