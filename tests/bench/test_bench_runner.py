"""Bench: MFU on a workload with known FLOPs, table round-trip, compare, outputs, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mixfleet.bench.compare import compare
from mixfleet.bench.mlp import make_mlp_matmul, mlp_flops_per_sample
from mixfleet.bench.output import save_results
from mixfleet.bench.runner import BenchConfig, measure, mfu, run_bench
from mixfleet.bench.table import ThroughputRow, read_table, write_table
from mixfleet.cli import main
from mixfleet.errors import ConfigError
from mixfleet.workloads import count_train_flops


def small_mlp():
    return make_mlp_matmul(d_in=32, hidden=48, layers=2, classes=8, samples=256)


def test_mlp_flops_formula_matches_torch_flop_counter_within_1_percent():
    """The closed-form training FLOPs equal torch's FlopCounterMode count (within 1%)."""
    wl = small_mlp()
    torch.manual_seed(0)
    batch = wl.train_set.take(torch.arange(16))
    counted = count_train_flops(wl.build_model(), wl.loss, batch)
    assert wl.flops_per_sample == mlp_flops_per_sample([32, 48, 48, 8])
    assert counted == pytest.approx(wl.flops_per_sample, rel=0.01)


class StepClock:
    """A clock that advances 0.1 s between each start and end of a timed step."""

    def __init__(self) -> None:
        self.now, self.calls = 0.0, 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls % 2 == 0:
            self.now += 0.1
        return self.now


def test_mfu_is_flops_per_sample_times_samples_per_s_over_peak():
    """With 0.1 s steps of batch 8, MFU = F x 80 / peak within 1%, and the FLOPs the run
    really executed per sample match F."""
    wl = small_mlp()
    counter = FlopCounterMode(display=False)
    with counter:
        res = measure(wl, "cpu", 8, warmup=1, steps=4, chip="test-chip", peak_flops=1e9,
                      clock=StepClock())
    assert res.row.samples_per_s == pytest.approx(80.0)
    assert res.row.mfu == pytest.approx(wl.flops_per_sample * 80.0 / 1e9, rel=0.01)
    executed = counter.get_total_flops() / (5 * 8)
    assert executed == pytest.approx(wl.flops_per_sample, rel=0.01)
    assert res.achieved_tflops == pytest.approx(wl.flops_per_sample * 80.0 / 1e12)


def test_unknown_peak_gives_null_mfu():
    """No peak (cpu, or a chip with unknown BF16) -> MFU is None, never guessed."""
    assert mfu(1e6, 100.0, None) is None
    res = measure(small_mlp(), "cpu", 4, warmup=0, steps=2, chip="cpu")
    assert res.row.mfu is None and not res.row.emulated and res.row.origin == "measured"


def row(**kw):
    base = dict(workload="mlp-matmul", chip="nvidia-h20", batch=32, samples_per_s=100.0,
                step_p50_s=0.3, step_p90_s=0.35, mfu=None, peak_mem_bytes=None, host="h",
                torch_version="2.13.0", date="2025-01-01T00:00:00+00:00", emulated=False,
                origin="measured")
    base.update(kw)
    return ThroughputRow(**base)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_throughput_table_round_trips(tmp_path, suffix):
    """Write then read gives equal rows (None, bools and floats preserved)."""
    rows = [row(), row(chip="kunlun-p800", samples_per_s=123.456789, mfu=0.4123,
                       peak_mem_bytes=2**31, emulated=True, origin="emulated")]
    p = tmp_path / f"t{suffix}"
    write_table(rows, p)
    assert read_table(p) == rows


def test_compare_gives_ratio_to_baseline_and_never_mixes_emulated():
    """Each chip's best samples/s over the baseline's, per workload; emulated vs emulated."""
    rows = [row(), row(batch=64, samples_per_s=150.0), row(chip="kunlun-p800",
                                                          samples_per_s=75.0),
            row(chip="kunlun-p800", samples_per_s=10.0, emulated=True, origin="emulated")]
    got = {(r.chip, r.emulated): r.ratio for r in compare(rows, "nvidia-h20")}
    assert got[("nvidia-h20", False)] == 1.0
    assert got[("kunlun-p800", False)] == pytest.approx(0.5)
    assert got[("kunlun-p800", True)] is None
    with pytest.raises(ConfigError, match="baseline chip 'nvidia-h100'"):
        compare(rows, "nvidia-h100")


def test_bench_run_with_emulated_chips_writes_labeled_outputs(tmp_path):
    """A bench run with emulated chips writes the table, CSV, PNG and trend, all rows
    labeled emulated, with MFU null; the slower chip is slower."""
    cfg = BenchConfig(workloads=["mlp-matmul"], devices=["emu:nvidia-h100", "emu:nvidia-h20"],
                      batch=[8], steps=4, warmup=1, telemetry_hz=50)
    results = run_bench(cfg)
    paths = save_results(results, tmp_path)
    assert all(p.is_file() for p in paths.values())
    rows = read_table(paths["json"])
    assert all(r.emulated and r.origin == "emulated" and r.mfu is None for r in rows)
    by_chip = {r.chip: r for r in rows}
    assert by_chip["nvidia-h20"].step_p50_s > by_chip["nvidia-h100"].step_p50_s
    trend = json.loads(paths["trend"].read_text())
    assert all(t["emulated"] for t in trend)
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv,match", [
    (["bench", "--devices", "emu:nvidia-h9000"], "unknown chip id 'nvidia-h9000'"),
    (["bench", "--workloads", "resnet9000"], "resnet9000"),
    (["bench", "--batch", "0", "--devices", "cpu"],
     "--batch must be >= 1 (got 0 in [0]); pass --batch 32"),
    (["bench", "--devices", "npu:0"], "not available"),
    (["bench", "compare", "/nonexistent.json"], "does not exist"),
])
def test_bench_cli_bad_input_exits_2(tmp_path, capsys, argv, match):
    """Bad bench input exits 2 with one message naming the value; nothing is written."""
    out = tmp_path / "out"
    assert main([*argv[:1], "--out", str(out), *argv[1:]]
                if argv[1] != "compare" else argv) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_catalog_and_devices_cli_json(capsys):
    """`catalog --json` lists every chip with sourced figures; `devices --json` never fails
    on a machine without accelerator tools."""
    assert main(["catalog", "--json"]) == 0
    chips = json.loads(capsys.readouterr().out)
    assert any(c["id"] == "kunlun-p800" for c in chips)
    assert main(["devices", "--json"]) == 0
    det = json.loads(capsys.readouterr().out)
    assert {t["tool"] for t in det["tools"]} >= {"npu-smi", "cnmon", "nvidia-smi"}


def test_malformed_catalog_cli_exits_2(tmp_path, capsys):
    """A malformed catalog file given to `catalog` exits 2 with the file named."""
    p = tmp_path / "chips.toml"
    p.write_text("[[chip]]\nid = 3\n")
    assert main(["catalog", "--catalog", str(p)]) == 2
    assert "field 'id'" in capsys.readouterr().err
