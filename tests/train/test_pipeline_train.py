"""``[parallel] mode = "pipeline"`` through ``mixfleet train`` (char-gpt, 2 stages of one
CPU rank each, gloo): the math is dp's, and every guarantee of dp holds (exact resume
after a kill on any stage, checkpoints keyed by the model's names that resume under
another split or under dp, an uncommitted step on every stage, a hang in a point-to-point
receive detected), and bad stage layouts exit 2 with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mixfleet.config import from_dict
from mixfleet.errors import ConfigError
from mixfleet.report.timeline import run_report
from mixfleet.train.config import RunConfig
from mixfleet.train.parallel.pipeplan import meta_model, plan_pipeline
from mixfleet.workloads.llama import Llama, preset_config
from tests.conftest import EXAMPLES, REPO
from tests.train.helpers import bit_identical, events, final_weights, losses, train_cli

GPT = ("workload.name='char-gpt'", "train.schedule='constant'", "telemetry.hz=0",
       "train.log_every=100",
       "workload.options={layers=4, d_model=64, heads=2, block=32, corpus_chars=200000}")
PIPE = ("parallel.mode='pipeline'", *GPT)
ADAMW = ("train.optimizer='adamw'", "train.lr=0.002")
GT_ADAMW = (*GPT, *ADAMW)
# a small untied llama (4 blocks), and the same on an emulated H20 + P800 paced as llama3-8b
SMALL_LLAMA = ("workload.name='llama'", "train.schedule='constant'", "telemetry.hz=0",
               "train.log_every=100", "train.global_batch=8",
               "workload.options={preset='debug', dim=32, layers=4, heads=2, kv_heads=1, "
               "ffn_dim=64, seq_len=16, tie_embeddings=false, eval_samples=2}")
EMULATED_8B = ("ranks=[{device='emu:nvidia-h20'}, {device='emu:kunlun-p800'}]",
               "parallel.mode='pipeline'", "emulate.as_model='llama3-8b'",
               "emulate.as_model_seq_len=4096", "emulate.time_scale=0.0005")


def _stages(*blocks: int) -> str:
    return "parallel.stages=[" + ", ".join(
        f"{{chip='cpu', ranks=1, blocks={b}}}" for b in blocks) + "]"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 30-step pipeline run (2 stages, checkpoints every 10 steps)."""
    d = tmp_path_factory.mktemp("pipe-ref") / "run"
    train_cli(d, *PIPE, "train.steps=30", "checkpoint.interval=10")
    return d


@pytest.fixture(scope="module")
def dp_adamw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dp on 2 ranks, 20 AdamW steps: the reference of the cross-layout resumes."""
    d = tmp_path_factory.mktemp("dp-ref") / "run"
    train_cli(d, *GT_ADAMW, "train.steps=20", "checkpoint.interval=10")
    return d


def test_pipeline_and_dp_give_the_same_losses(tmp_path: Path, reference: Path) -> None:
    """30 steps of a 2-stage pipeline (1F1B, 16 micro-batches) and of dp on 2 ranks have
    the same losses within 1e-5 (fp32; the sums are ordered differently), and the run
    records its stages (chip, ranks, blocks, micro-batches, bubble)."""
    train_cli(tmp_path / "dp", *GPT, "train.steps=30", "checkpoint.interval=10")
    a, b = losses(reference), losses(tmp_path / "dp")
    assert sorted(a) == list(range(1, 31))
    assert max(abs(a[k] - b[k]) for k in b) <= 1e-5
    (st,) = events(reference, "stages")
    assert [s["blocks"] for s in st["stages"]] == [2, 2] and st["microbatches"] == 16
    assert st["bubble"] == pytest.approx(1 / 17, abs=1e-4)
    rep = run_report(reference)["stages"]["stages"]  # `mixfleet report`: the plan's figures
    assert [{k: v for k, v in s.items() if k != "measured_s"} for s in rep] == st["stages"]


def test_pipeline_records_and_reports_measured_stage_times(
        reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pipeline run records each stage's measured time per micro-batch and the bubble at
    each checkpoint interval (``stage_times`` at steps 10, 20, 30: positive times, one per
    stage; a bubble in [0, 1)), and `mixfleet report` prints them beside the predicted
    figures."""
    from mixfleet.cli import main

    got = events(reference, "stage_times")
    assert [e["step"] for e in got] == [10, 20, 30] and all(e["steps"] == 10 for e in got)
    assert all(len(e["measured_s"]) == 2 and min(e["measured_s"]) > 0 for e in got)
    assert all(0 <= e["bubble"] < 1 and "emulated" not in e for e in got)
    assert main(["report", str(reference), "--out", str(tmp_path / "t.png")]) == 0
    out = capsys.readouterr().out
    lines = [x for x in out.splitlines() if x.strip().startswith("stage ")]
    assert len(lines) == 2 and all("predicted" in x and "measured" in x for x in lines)
    shown = [float(x.split("measured ")[1].split(" s")[0]) for x in lines]
    assert min(shown) > 0 and "% measured" in out


@pytest.mark.parametrize("rank", [pytest.param(0, marks=pytest.mark.slow), 1],
                         ids=["first-stage", "last-stage"])
def test_pipeline_kill_resumes_bit_identical(tmp_path: Path, reference: Path, rank: int) -> None:
    """A rank of either stage SIGKILLed at step 17 resumes from the in-memory snapshots
    (each rank its own stage's): the final weights are bit-identical to the uninterrupted
    pipeline run and at most one step is lost."""
    d = tmp_path / "run"
    s = train_cli(d, *PIPE, "train.steps=30", "checkpoint.interval=10",
                  f"faults.inject=['kill@rank={rank},step=17']")
    assert s["restarts"] == 1 and s["steps_lost"] <= 1
    assert events(d, "run_start")[-1]["source"] == "memory"
    assert bit_identical(final_weights(d), final_weights(reference))


@pytest.mark.slow
def test_pipeline_checkpoint_resumes_under_another_split_and_under_dp(
        tmp_path: Path, dp_adamw: Path) -> None:
    """A checkpoint written by blocks [1, 3] resumes under blocks [3, 1], and one written
    by a pipeline resumes under dp: the same batches follow (steps 11..20, none repeated)
    and every loss agrees with dp's uninterrupted run within 1e-5 (AdamW state included:
    it is keyed by the model's parameter names, never by stage-local ones)."""
    ref = losses(dp_adamw)
    split = tmp_path / "split"
    train_cli(split, *PIPE, *ADAMW, _stages(1, 3), "train.steps=10", "checkpoint.interval=10")
    train_cli(split, *PIPE, *ADAMW, _stages(3, 1), "train.steps=20", "checkpoint.interval=10")
    to_dp = tmp_path / "to-dp"
    train_cli(to_dp, *PIPE, *ADAMW, "train.steps=10", "checkpoint.interval=10")
    train_cli(to_dp, *GT_ADAMW, "train.steps=20", "checkpoint.interval=10")
    for d in (split, to_dp):
        assert events(d, "run_start")[-1]["resumed_from"] == 10
        got = losses(d)
        assert sorted(got) == list(range(1, 21))
        assert max(abs(got[k] - ref[k]) for k in ref) <= 1e-5, d.name


@pytest.mark.slow
def test_pipeline_nan_on_one_stage_leaves_the_step_uncommitted_everywhere(
        tmp_path: Path) -> None:
    """A NaN gradient on the first stage only at step 5: every stage skips the update
    (one ``step_skipped``), exactly as if the batch had been skipped: the final weights
    equal those of a run told to skip batch 5."""
    nan, skip = tmp_path / "nan", tmp_path / "skip"
    train_cli(nan, *PIPE, "train.steps=12", "checkpoint.interval=6",
              "faults.inject=['nan@rank=0,step=5']")
    train_cli(skip, *PIPE, "train.steps=12", "checkpoint.interval=6", "train.skip_batches=[5]")
    (ev,) = events(nan, "step_skipped")
    assert ev["step"] == 5
    assert bit_identical(final_weights(nan), final_weights(skip))


@pytest.mark.slow
def test_pipeline_hang_blocks_a_receive_and_the_watchdog_restarts(tmp_path: Path,
                                                                   reference: Path) -> None:
    """The first stage hangs at step 12: the last stage, blocked in a point-to-point
    receive, is caught by its watchdog too; the run restarts and ends bit-identical."""
    d = tmp_path / "run"
    s = train_cli(d, *PIPE, "train.steps=30", "checkpoint.interval=10",
                  "health.hang_floor_s=3", "health.hang_factor=10",
                  "faults.inject=['hang@rank=0,step=12,seconds=600']")
    assert 1 in {h["rank"] for h in events(d, "hang_detected")}
    assert s["restarts"] >= 1
    assert bit_identical(final_weights(d), final_weights(reference))


# -- bad input ----------------------------------------------------------------------------

def _train_rc(tmp_path: Path, *sets: str, nproc: int = 2) -> tuple[int, str]:
    cmd = [sys.executable, "-P", "-m", "mixfleet", "train", str(EXAMPLES / "digits-cnn.toml"),
           "--nproc", str(nproc), "--run-dir", str(tmp_path / "run")]
    for o in sets:
        cmd += ["--set", o]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stderr


@pytest.mark.parametrize("sets,nproc,words", [
    ((*PIPE, "parallel.stages=[{chip='nvidia-h20', ranks=1}, {chip='cpu', ranks=1}]"), 2,
     ["parallel.stages do not cover", "nvidia-h20: 1 in stages, 0 in [[ranks]]"]),
    ((*PIPE, "parallel.microbatches=1"), 2,
     ["at least as many micro-batches", "microbatches >= 2"]),
    ((*PIPE, _stages(1, 1)), 2, ["add up to 2", "4 blocks"]),
    (("parallel.mode='pipeline'", "telemetry.hz=0"), 2, ["does not know how to cut", "'dp'"]),
    ((*GPT, _stages(2, 2)), 2, ["parallel.mode = 'dp'", "set mode = 'pipeline'"]),
    ((*PIPE, "parallel.stages=[{chip='cpu', ranks=0}, {chip='cpu', ranks=2}]"), 2,
     ["parallel.stages[0].ranks must be >= 1 (got 0); set ranks = 1 in parallel.stages[0]"]),
], ids=["stage-chip-not-in-ranks", "too-few-microbatches", "blocks-do-not-add-up",
        "no-blocks", "stages-without-pipeline", "zero-ranks"])
def test_bad_stage_layouts_exit_2_and_write_nothing(tmp_path: Path, sets: tuple[str, ...],
                                                    nproc: int, words: list[str]) -> None:
    """Each bad layout exits 2 with one message naming the field and the fix; no run
    directory is created."""
    rc, err = _train_rc(tmp_path, *sets, nproc=nproc)
    assert rc == 2, err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "run").exists()


def test_more_stages_than_blocks_and_a_split_over_memory_are_refused() -> None:
    """3 stages of a 2-block model, and llama3-8b with AdamW on two 64 GiB chips: each a
    ConfigError that names the numbers."""
    cfg = from_dict(RunConfig, {"workload": {"name": "char-gpt"}, "train": {"steps": 1},
                                "parallel": {"mode": "pipeline"}})
    before = torch.random.get_rng_state()
    model = meta_model(lambda: Llama(preset_config("debug", layers=2)))
    assert torch.equal(torch.random.get_rng_state(), before)  # the meta build drew nothing
    with pytest.raises(ConfigError, match="3 stages x 1 virtual stages need at least"):
        plan_pipeline(cfg.parallel, ["cpu"] * 3, model, global_batch=12)
    big = meta_model(lambda: Llama(preset_config("llama3-8b")))
    with pytest.raises(ConfigError, match="GiB"):
        plan_pipeline(cfg.parallel, ["ascend-910b"] * 2, big, global_batch=64,
                      sample_tokens=4096)


@pytest.mark.slow
def test_three_stages_middle_rank_kill_resumes_bit_identical(tmp_path: Path) -> None:
    """3 stages of one rank (blocks 1, 2, 1): the middle stage's rank SIGKILLed at step 7
    resumes, and the final weights are bit-identical to the uninterrupted 3-stage run."""
    ref, d = tmp_path / "ref", tmp_path / "run"
    sets = (*PIPE, "train.steps=12", "checkpoint.interval=6")
    train_cli(ref, *sets, nproc=3)
    s = train_cli(d, *sets, "faults.inject=['kill@rank=1,step=7']", nproc=3)
    assert s["restarts"] == 1
    assert [st["blocks"] for st in events(ref, "stages")[0]["stages"]] == [1, 2, 1]
    assert bit_identical(final_weights(d), final_weights(ref))


@pytest.mark.slow
def test_fsdp_inside_two_stages_matches_dp_and_resumes(tmp_path: Path) -> None:
    """Stages of 2 ranks each with fsdp inside (4 ranks): the losses of 12 steps equal dp's
    within 1e-5, and a kill of rank 3 resumes bit-identically to the uninterrupted run."""
    sets = ("parallel.stage_mode='fsdp'", "parallel.stages=[{chip='cpu', ranks=2}, "
            "{chip='cpu', ranks=2}]", "train.steps=12", "checkpoint.interval=6")
    ref, killed, dp = tmp_path / "ref", tmp_path / "killed", tmp_path / "dp"
    train_cli(ref, *PIPE, *sets, nproc=4)
    train_cli(killed, *PIPE, *sets, "faults.inject=['kill@rank=3,step=8']", nproc=4)
    train_cli(dp, *GPT, "train.steps=12", "checkpoint.interval=6")
    a, b = losses(ref), losses(dp)
    assert max(abs(a[k] - b[k]) for k in b) <= 1e-5
    assert bit_identical(final_weights(killed), final_weights(ref))


@pytest.mark.slow
def test_pipeline_resplits_on_measured_stage_times(tmp_path: Path) -> None:
    """An emulated H20 + P800 pipeline (paced as llama3-8b, so the stage times are the
    chips' and not the host's noise) started on a bad split, blocks [3, 1]: at the end of
    the first 4-step window the measured stage times call for another split; the run
    checkpoints, records ``stages_changed`` with the predicted gain, relaunches with the new
    blocks and continues the same batches (losses within 1e-5 of dp's)."""
    d, ref = tmp_path / "run", tmp_path / "dp"
    small = (*SMALL_LLAMA, "checkpoint.interval=100", "train.steps=12")
    train_cli(d, *small, *EMULATED_8B,
              "parallel.stages=[{chip='nvidia-h20', ranks=1, blocks=3}, "
              "{chip='kunlun-p800', ranks=1, blocks=1}]", "parallel.resplit_every=4")
    train_cli(ref, *small)
    ch = events(d, "stages_changed")[0]
    assert ch["old_blocks"] == [3, 1] and [s["blocks"] for s in ch["new"]] != [3, 1]
    assert ch["step"] == 4 and ch["predicted_gain"] > 1.1
    assert events(d, "run_start")[1]["resumed_from"] == 4
    a, b = losses(d), losses(ref)
    assert sorted(a) == list(range(1, 13))
    assert max(abs(a[k] - b[k]) for k in b) <= 1e-5


@pytest.mark.slow
def test_pipeline_drain_restages_over_the_chips_left(tmp_path: Path, reference: Path) -> None:
    """3 stages; rank 1 overheats to critical at step 8: it is drained, the pipeline is
    split again over the 2 ranks left (``stages_changed``: [1, 2, 1] -> [2, 2]) and the
    run finishes the same batches (losses within 1e-5 of the uninterrupted run)."""
    d = tmp_path / "run"
    s = train_cli(d, *PIPE, "train.steps=16", "checkpoint.interval=8",
                  "faults.inject=['overheat@rank=1,step=8,celsius=20']", nproc=3)
    assert s["drained_ranks"] == [1] and s["world_size"] == 2
    (ch,) = events(d, "stages_changed")
    assert ch["reason"] == "drain"
    assert [x["blocks"] for x in ch["old"]] == [1, 2, 1]
    assert [x["blocks"] for x in ch["new"]] == [2, 2]
    a, ref = losses(d), losses(reference)
    assert max(abs(a[k] - ref[k]) for k in a) <= 1e-5


def test_an_emulated_pipeline_paces_its_stages_as_the_named_model(tmp_path: Path) -> None:
    """H20 + P800 emulated as llama3-8b (2 stages, a stage per kind): the split is the
    named model's (labelled so), every step record says emulated and emulated_as, and the
    run ends with dp's losses of the small model (the pacing does not touch the math)."""
    d, ref = tmp_path / "emu", tmp_path / "dp"
    small = (*SMALL_LLAMA, "checkpoint.interval=10", "train.steps=4")
    train_cli(d, *small, *EMULATED_8B)
    train_cli(ref, *small)
    (st,) = events(d, "stages")
    assert {s["chip"] for s in st["stages"]} == {"nvidia-h20", "kunlun-p800"}
    assert st["basis"].startswith("predicted for the emulated model")
    recs = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "loss" in r]
    assert steps and all(r["emulated"] and r["emulated_as"] == "llama3-8b" for r in steps)
    (times,) = events(d, "stage_times")  # the last step's, labelled emulated
    assert times["step"] == 4 and times["emulated"] and min(times["measured_s"]) > 0
    shown = run_report(d)["stages"]
    assert shown["measured_label"].startswith("emulated")
    a, b = losses(d), losses(ref)
    assert max(abs(a[k] - b[k]) for k in b) <= 1e-5
