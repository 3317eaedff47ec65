"""``[parallel] split_times = "bench:PATH"``: the pipeline's split from ``mixfleet bench
--class llama`` rows (each kind's per-block, embedding and head seconds), its origin
recorded, and bad values refused with exit 2 and nothing written."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
from torch import nn

from mixfleet.bench.llamaclass import run_llama_bench
from mixfleet.bench.output import save_results
from mixfleet.catalog.blockrows import parse_row
from mixfleet.catalog.table import read_table, write_table
from mixfleet.cli import main
from mixfleet.errors import ConfigError
from mixfleet.train.parallel.benchsplit import bench_times
from mixfleet.train.parallel.pipeconfig import PipelineConfig, StageConfig
from mixfleet.train.parallel.pipeplan import as_model_costs, meta_model, plan_pipeline
from mixfleet.train.parallel.split import split_blocks
from mixfleet.workloads import llama
from mixfleet.workloads.llama import Llama, preset_config
from tests.conftest import EXAMPLES
from tests.train.helpers import events, train_cli

SHAPE = {"dim": 32, "heads": 2, "kv_heads": 1, "ffn_dim": 64, "vocab": 64, "seq_len": 16}
KINDS = ("nvidia-h20", "kunlun-p800")


@pytest.fixture(autouse=True)
def tiny_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    """A llama preset small enough to time in milliseconds on the CPU."""
    monkeypatch.setitem(llama.PRESETS, "tiny", llama._Preset(
        SHAPE["dim"], 8, SHAPE["heads"], SHAPE["kv_heads"], SHAPE["ffn_dim"], SHAPE["vocab"],
        SHAPE["seq_len"]))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _ticks(dt: float = 0.01):  # a clock where every timed pass takes dt seconds
    c = itertools.count()
    return lambda: next(c) * dt


@pytest.fixture()
def rows(tmp_path: Path) -> Path:
    """`bench --class llama:tiny` rows of an emulated H20 and P800 (one timing clock for
    both: each kind's seconds are the host's over its relative speed), written by the
    bench's own writer."""
    res = run_llama_bench("llama:tiny", [f"emu:{k}" for k in KINDS], [1], warmup=0, steps=2,
                          clock=_ticks())
    return save_results(res, tmp_path / "bench")["json"]


def _model(layers: int = 8):
    return meta_model(lambda: Llama(preset_config("debug", **SHAPE, layers=layers)))


def _plan(split_times: str, *, global_batch: int = 8, microbatches: int = 8):
    cfg = PipelineConfig(stages=[StageConfig(chip=k, ranks=1) for k in KINDS],
                         microbatches=microbatches, split_times=split_times)
    return plan_pipeline(cfg, list(KINDS), _model(), global_batch=global_batch,
                         sample_tokens=SHAPE["seq_len"])


def test_bench_rows_hold_each_component_with_its_shape(rows: Path) -> None:
    """Three emulated rows per chip (embedding, block, head), the shape in the note read
    back, and seconds = the host's timing over the chip's relative speed."""
    parsed = [parse_row(r) for r in read_table(rows)]
    assert all(p is not None for p in parsed)
    got = {(p.row.chip, p.component): p for p in parsed if p is not None}
    assert set(got) == {(k, c) for k in KINDS for c in ("embedding", "block", "head")}
    assert all(p.row.emulated and p.row.origin == "emulated" for p in got.values())
    assert all(p.shape.dim == 32 and p.shape.seq_len == 16 for p in got.values())
    # the fake clock: every pass takes 0.01 s on the host; the fastest chip has speed 1
    block = sorted(got[(k, "block")].seconds for k in KINDS)
    assert block[0] == pytest.approx(0.01) and block[1] > 1.5 * block[0]


def test_the_slower_block_row_gets_fewer_blocks_and_the_plan_says_where_times_came_from(
        rows: Path) -> None:
    """The split from bench rows equals split_blocks on the rows' own seconds, puts fewer
    blocks on the kind whose block row is slower, and the plan's ``times`` names the file
    (EMULATED), where the catalog basis says ``parameters / catalog peak``."""
    plan = _plan(f"bench:{rows}")
    table = {(p.row.chip, p.component): p.seconds
             for p in map(parse_row, read_table(rows)) if p is not None}
    assert plan.inputs is not None
    chips, mb = plan.inputs
    for c in chips:  # micro-batch 1 of the same shape: the rows' seconds, unscaled
        assert c.block_s == (table[(c.chip, "block")],) * 8
        assert (c.embed_s, c.head_s) == (table[(c.chip, "embedding")], table[(c.chip, "head")])
    assert plan.split == split_blocks(chips, mb, microbatches=8, schedule="1f1b")
    blocks = dict(zip(KINDS, plan.layout.blocks, strict=True))
    slow, fast = sorted(KINDS, key=lambda k: -table[(k, "block")])
    assert blocks[slow] < blocks[fast]
    f = plan.fields()
    assert f["times"].startswith(f"bench rows {rows} (EMULATED)")
    assert "predicted_s" in f["stages"][0]
    assert f"times from bench rows {rows}" in plan.describe()
    assert _plan("").fields()["times"] == "parameters / catalog peak"


def test_rows_of_another_micro_batch_are_scaled_by_flops_and_say_so(rows: Path) -> None:
    """Rows timed at 1 sequence per micro-batch give a plan with 2 per micro-batch twice
    the seconds per block (block FLOPs grow with the tokens), and the times say scaled."""
    one, two = _plan(f"bench:{rows}"), _plan(f"bench:{rows}", microbatches=4)
    assert one.inputs is not None and two.inputs is not None
    for a, b in zip(one.inputs[0], two.inputs[0], strict=True):
        assert b.block_s[0] == pytest.approx(2 * a.block_s[0])
        assert b.head_s == pytest.approx(2 * a.head_s)
    assert "(block x2)" in two.times and "scaled by FLOPs" in two.times
    assert "scaled" not in one.times


@pytest.mark.parametrize("value,words", [
    ("bench:{tmp}/missing.json", ["parallel.split_times", "no file",
                                  "mixfleet bench --class llama"]),
    ("bench:{cnn}", ["parallel.split_times", "no `bench --class llama` rows", "cnn"]),
    ("bench:{h20}", ["parallel.split_times", "'kunlun-p800'",
                     "--devices emu:nvidia-h20 emu:kunlun-p800"]),
], ids=["missing-file", "wrong-class", "no-row-for-a-kind"])
def test_bad_tables_are_refused_naming_the_field_and_the_fix(
        tmp_path: Path, rows: Path, value: str, words: list[str]) -> None:
    """A missing file, a table of another class, and a table without the rows of one
    stage's chip kind each raise ConfigError naming split_times, its value and the fix."""
    good = read_table(rows)
    cnn, h20 = tmp_path / "cnn.json", tmp_path / "h20.json"
    write_table([dataclasses.replace(r, workload="cnn", note="")
                 for r in good if r.workload.endswith("/block")], cnn)
    write_table([r for r in good if r.chip == "nvidia-h20"], h20)
    v = value.format(tmp=tmp_path, cnn=cnn, h20=h20)
    with pytest.raises(ConfigError) as e:
        _plan(v)
    for w in [repr(v), *words]:
        assert w in str(e.value), str(e.value)


def test_a_model_that_is_not_the_llama_decoder_is_refused(rows: Path) -> None:
    """The rows time Llama blocks: another model's blocks cannot take their seconds."""
    with pytest.raises(ConfigError, match=r"split_times = 'bench:.*not a Llama decoder; "
                                          r"remove split_times"):
        bench_times(f"bench:{rows}", KINDS, nn.Linear(2, 2), micro=1, sample_tokens=16)


def test_split_times_with_as_model_is_refused(rows: Path) -> None:
    """as_model paces the emulated chips by its own figures: both together are refused."""
    cfg = PipelineConfig(stages=[StageConfig(chip=k, ranks=1) for k in KINDS],
                         microbatches=8, split_times=f"bench:{rows}")
    costs = as_model_costs("llama3-8b", KINDS, "adamw")
    with pytest.raises(ConfigError, match="and \\[emulate\\] as_model both set"):
        plan_pipeline(cfg, list(KINDS), _model(), global_batch=8, sample_tokens=16,
                      as_model=costs)


@pytest.mark.slow
def test_a_run_with_bench_rows_records_their_split_and_origin(tmp_path: Path,
                                                              rows: Path) -> None:
    """A 4-step pipeline run on an emulated H20 + P800 with split_times from the rows:
    the run's stages event says the times came from that file and gives fewer blocks to
    the kind whose block row is slower."""
    table = {p.row.chip: p.seconds for p in map(parse_row, read_table(rows))
             if p is not None and p.component == "block"}
    d = tmp_path / "run"
    train_cli(d, "workload.name='llama'", "train.schedule='constant'", "telemetry.hz=0",
              "train.log_every=100", "train.global_batch=8", "train.steps=4",
              "checkpoint.interval=10",
              "workload.options={preset='debug', dim=32, layers=4, heads=2, kv_heads=1, "
              "ffn_dim=64, seq_len=16, tie_embeddings=false, eval_samples=2}",
              "ranks=[{device='emu:nvidia-h20'}, {device='emu:kunlun-p800'}]",
              "parallel.mode='pipeline'", f"parallel.split_times='bench:{rows}'")
    (st,) = events(d, "stages")
    assert st["times"].startswith(f"bench rows {rows} (EMULATED)")
    blocks = {s["chip"]: s["blocks"] for s in st["stages"]}
    slow, fast = sorted(table, key=lambda k: -table[k])
    assert sum(blocks.values()) == 4 and blocks[slow] < blocks[fast]


def test_a_malformed_value_is_refused_when_the_config_is_built() -> None:
    """split_times must read "bench:PATH": anything else is refused with an example."""
    with pytest.raises(ConfigError, match=r"parallel.split_times = 'rows.json'.*bench:PATH"):
        PipelineConfig(split_times="rows.json")


def test_the_cli_exits_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    """`mixfleet train` with split_times naming a missing table exits 2 naming the field
    and the fix; no run directory is created."""
    rc = main(["train", str(EXAMPLES / "digits-cnn.toml"), "--run-dir", str(tmp_path / "run"),
               "--set", "workload.name='llama'", "--set", "telemetry.hz=0",
               "--set", "workload.options={preset='debug', dim=32, layers=4, heads=2, "
               "kv_heads=1, ffn_dim=64, seq_len=16, eval_samples=2}",
               "--set", "ranks=[{device='emu:nvidia-h20'}, {device='emu:kunlun-p800'}]",
               "--set", "parallel.mode='pipeline'", "--set", "train.global_batch=8",
               "--set", f"parallel.split_times='bench:{tmp_path}/none.json'"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "parallel.split_times" in err and "mixfleet bench --class llama" in err, err
    assert not (tmp_path / "run").exists()


def test_llama_rows_with_scale_or_an_unknown_preset_are_refused() -> None:
    """`--class llama` has the preset's size: --scale and unknown presets are refused."""
    from mixfleet.bench.planner import run_class_bench

    with pytest.raises(ConfigError, match="--scale 0.5 does not apply"):
        run_class_bench(["llama"], ["cpu"], [1], scale=0.5)
    with pytest.raises(ConfigError, match="unknown llama preset 'nope'"):
        run_class_bench(["llama:nope"], ["cpu"], [1])


def test_the_cli_writes_llama_rows_on_the_cpu(tmp_path: Path, capsys) -> None:
    """`mixfleet bench --class llama:tiny --devices cpu` writes measured rows that the
    split reads (a real timing, a few milliseconds)."""
    rc = main(["bench", "--class", "llama:tiny", "--devices", "cpu", "--batch", "1",
               "--steps", "2", "--warmup", "0", "--out", str(tmp_path / "b")])
    assert rc == 0, capsys.readouterr().err
    got = [parse_row(r) for r in read_table(tmp_path / "b" / "throughput.json")]
    assert sorted(p.component for p in got if p is not None) == ["block", "embedding", "head"]
    assert all(p is not None and p.row.origin == "measured" and p.seconds > 0 for p in got)
