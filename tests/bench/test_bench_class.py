"""bench --class: the planner's classes as runnable models whose rows feed the planner."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch

from mixfleet.bench.classes import CLASS_NAMES, components, profile_class
from mixfleet.bench.table import read_table
from mixfleet.cli import main
from mixfleet.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


CPU_CHIP = '''
[[chip]]
id = "cpu"
vendor = "intel"
name = "host CPU (test)"
torch_device = "cpu"
bf16_tflops = { value = 2, source = "test", confidence = "reported" }
hbm_gib = { value = 64, source = "test", confidence = "reported" }
hbm_tbps = { value = 0.1, source = "test", confidence = "reported" }
link_gbps = { source = "test", confidence = "unknown" }
tdp_w = { source = "test", confidence = "unknown" }
'''


def test_bench_class_row_changes_the_speed_the_planner_uses(tmp_path, capsys):
    """`bench --class cnn --scale 0.05` on the CPU writes a measured-scaled cnn row; with no
    row of the reference chip `simulate --throughput` says it is not used (nothing changes),
    and with the labelled catalog bridge (`--reference-from catalog`) it changes the cnn
    speed of the cpu pool (and only that)."""
    bench = tmp_path / "bench"
    rc = main(["bench", "--class", "cnn", "--scale", "0.05", "--devices", "cpu", "--batch",
               "4", "--steps", "2", "--warmup", "0", "--out", str(bench)])
    assert rc == 0, capsys.readouterr().err
    rows = read_table(bench / "throughput.json")
    assert [(r.workload, r.chip, r.origin) for r in rows] == [("cnn", "cpu", "measured-scaled")]
    assert "stage3.block" in rows[0].note and "x5" in rows[0].note
    cat = tmp_path / "chips.toml"
    cat.write_text(resources.files("mixfleet.catalog").joinpath("chips.toml").read_text()
                   + CPU_CHIP)
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('name = "t"\nreference_chip = "nvidia-h800"\n[[pool]]\nchip = '
                     '"nvidia-h800"\nnodes = 1\nper_node = 8\n[[pool]]\nchip = "cpu"\n'
                     'nodes = 1\nper_node = 8\n')
    speeds = {}
    table = ["--throughput", str(bench / "throughput.json")]
    for name, extra in (("roofline", []), ("unbridged", table),
                        ("bench", [*table, "--reference-from", "catalog"])):
        out = tmp_path / name
        rc = main(["simulate", "--fleet", str(fleet), "--catalog", str(cat), "--trace",
                   "synthetic:30", "--policy", "fifo", "--no-failures", "--out", str(out),
                   *extra])
        printed = capsys.readouterr()
        assert rc == 0, printed.err
        if name == "unbridged":
            assert "cpu cnn row" in printed.out and "not used" in printed.out
        pools = json.loads((out / "results.json").read_text())["fleet"]["pools"]
        speeds[name] = {p["id"]: p["speed"] for p in pools}
    assert speeds["unbridged"] == speeds["roofline"]
    assert speeds["bench"]["cpu"]["cnn"] != pytest.approx(speeds["roofline"]["cpu"]["cnn"])
    assert speeds["bench"]["cpu"]["bert"] == pytest.approx(speeds["roofline"]["cpu"]["bert"])
    assert speeds["bench"]["nvidia-h800"] == speeds["roofline"]["nvidia-h800"]


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_each_class_runs_and_counts_its_components(name):
    """Every class builds at a small scale, its profile covers each component with its
    repeat count (ResNet-50: 16 bottleneck blocks; Llama-2-7B: 32, 70B: 80, BERT: 12
    blocks) and its step time is the count-weighted sum of the component times."""
    torch.manual_seed(0)
    scale = {"llm-70b": 0.004, "llm-7b": 0.008}.get(name, 0.02)
    p = profile_class(name, batch=2, scale=scale, warmup=0, steps=1)
    blocks = {"cnn": 16, "bert": 12, "llm-7b": 32, "llm-70b": 80, "recsys": 0}[name]
    counted = sum(c for n, c in p.counts.items() if "block" in n or "first" in n)
    assert counted == blocks
    assert p.step_s == pytest.approx(sum(p.component_s[n] * p.counts[n] for n in p.counts))
    assert p.flops_per_sample > 0


def test_full_size_shapes_are_the_published_ones():
    """At scale 1 the shapes are Llama-2-7B's (d 4096, FFN 11008), Llama-2-70B's (GQA: 8 KV
    heads of 128), BERT-base's (d 768) -- checked on meta tensors, no memory used."""
    with torch.device("meta"):
        b7 = components("llm-7b")[1].build()
        b70 = components("llm-70b")[1].build()
        bb = components("bert")[1].build()
    assert b7.qkv.in_features == 4096 and b7.down.in_features == 11008
    assert b70.qkv.out_features == (64 + 2 * 8) * 128 and b70.down.in_features == 28672
    assert bb.qkv.in_features == 768 and bb.down.in_features == 3072


def test_bad_class_and_scale_are_config_errors(tmp_path, capsys):
    """An unknown class or a scale outside (0, 1] exits 2 naming the value."""
    with pytest.raises(ConfigError, match="planner class"):
        components("gpt-5")
    rc = main(["bench", "--class", "cnn", "--scale", "2", "--devices", "cpu", "--out",
               str(tmp_path / "o")])
    assert rc == 2 and "--scale" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
