"""The pipeline mode in the cost model: a hand-computed split and step, the mixed-kind
job where pipeline beats fsdp, and mode = "auto" resolving to the predicted stages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mixfleet.catalog.base import load_catalog
from mixfleet.emulate.pricing import LinkPrices, StepCost, transfer_s
from mixfleet.errors import ConfigError
from mixfleet.fleet.costmodel import Context, JobSpec, choose, predict
from mixfleet.fleet.costterms import Fig
from mixfleet.fleet.jobshape import ModelShape, RankSpec, parse_rank_specs, preset_shape
from mixfleet.train.parallel.pipeconfig import resolve_stages
from mixfleet.train.parallel.pipecost import predict_pipeline
from mixfleet.train.parallel.pipeplan import stage_fields

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plan-mixed.toml"
SIX = ",".join(f"emu:{c}" for c in ("nvidia-h20", "kunlun-p800", "ascend-910b")
               for _ in range(2))


def test_two_kinds_match_the_hand_computed_split_and_step() -> None:
    """H20 at 1 ms and P800 at 2 ms per sample, 4 equal blocks, 4 micro-batches of 2:
    the H20 takes 3 blocks (or the P800 1, first), every slot pays the micro-batch fixed
    cost and one bridge send, the step is (m + P - 1) slots + the step fixed cost, and the
    memory is AdamW's 16 bytes per parameter + 2 micro-batches' activations in flight."""
    model = ModelShape(name="toy", params=6000, flops_per_sample=1e9, blocks=4,
                       block_params=1000, seq_len=None, dim=8, act_bytes_per_sample=1000.0)
    job = JobSpec(model=model, global_batch=8, microbatches=4)
    ranks = (RankSpec(device="emu:nvidia-h20", chip="nvidia-h20"),
             RankSpec(device="emu:kunlun-p800", chip="kunlun-p800"))
    cost = StepCost(step_fixed_s=0.01, microbatch_fixed_s=0.001)
    prices = LinkPrices()
    cat = load_catalog()
    ctx = Context(job, ranks, (Fig(1e-3, "assumed"), Fig(2e-3, "assumed")), (cost, cost),
                  prices, cat)
    plan = predict_pipeline("pipeline", ctx)
    send = transfer_s("send", 2 * 8 * 4, 2, prices.link("nvidia-h20", "kunlun-p800"))
    slot = 3 * 0.25 * 2e-3 + 0.001 + send  # 3 H20 blocks = 1 P800 block + its head: 2.5 ms
    assert plan.fits and plan.step_s == pytest.approx((4 + 2 - 1) * slot + 0.01, rel=1e-12)
    d = plan.detail
    want = {("nvidia-h20", "kunlun-p800"): [3, 1], ("kunlun-p800", "nvidia-h20"): [1, 3]}
    assert [r["blocks"] for r in d["stages"]] == want[tuple(d["order"])]
    assert d["bubble_s"] == pytest.approx(slot, rel=1e-12) and d["bubble"] == 1 / 5
    assert len(d["options"]) == 2 and all(o["step_s"] == pytest.approx(plan.step_s)
                                          for o in d["options"])
    h20 = next(r for r in plan.ranks if r.chip == "nvidia-h20")
    first = d["order"][0] == "nvidia-h20"
    params = 3000 + 1000  # 3 blocks + the embedding (first) or the head (last)
    # 1000 B per sample at 2-byte activations: x 2 (fp32) x 2 samples / 4 blocks = 1000 B
    # per block and micro-batch; in flight: P - s
    acts = 3 * 1000 * (2 if first else 1)
    assert h20.need_bytes == pytest.approx(16 * params + acts)
    assert plan.comm == {"bridge": pytest.approx(4 * send)}
    # given stages and blocks ([[parallel.stages]]) are priced as they are: 2 + 2 blocks
    given = predict_pipeline("pipeline", dataclasses.replace(ctx, job=dataclasses.replace(
        job, stages=(("nvidia-h20", 1, 2), ("kunlun-p800", 1, 2)))))
    assert [r["blocks"] for r in given.detail["stages"]] == [2, 2]
    assert given.step_s == pytest.approx(5 * (2 * 0.5e-3 * 2 + 0.001 + send) + 0.01, rel=1e-12)


def test_pipeline_beats_fsdp_across_kinds_and_fits_where_dp_does_not() -> None:
    """llama3-8b, seq 4096, H20 + P800 + 910B x 2, B = 64, micro-batch 1, AdamW: dp fits
    no chip, pipeline fits and is predicted faster than fsdp over all six ranks; every
    stage order was tried and the pick is the fastest that fits."""
    job = JobSpec(model=preset_shape("llama3-8b", 4096), global_batch=64, unit="tokens",
                  max_micro_batch=1, max_accum=64)
    plans = {p.mode: p for p in predict(job, parse_rank_specs(SIX),
                                        modes=("dp", "fsdp", "pipeline"))}
    dp, fsdp, pipe = plans["dp"], plans["fsdp"], plans["pipeline"]
    assert not dp.fits and fsdp.fits and pipe.fits
    assert pipe.step_s < fsdp.step_s
    d = pipe.detail
    assert d["microbatches"] == 32 and d["micro_batch"] == 1 and d["lanes"] == 2
    assert sum(r["blocks"] for r in d["stages"]) == 32
    assert len(d["options"]) == 12  # 3! orders x (dp, fsdp) inside the stages
    assert pipe.step_s == min(o["step_s"] for o in d["options"] if o["fits"])
    slot = max(r["slot_s"] for r in d["stages"])
    tail = max(r["reduce_s"] + r["step_fixed_s"] for r in d["stages"])
    # fsdp gathers each stage once per step, at its start: a stage waits for its own past
    # the forwards (a third of the slots) of the stages before it
    rows = d["stages"]
    wait = max(0.0, *(r["gather_s"] - sum(q["slot_s"] for q in rows[:s]) / 3
                      for s, r in enumerate(rows)))
    assert all(r["gather_s"] > 0 for r in rows) == (d["stage_mode"] == "fsdp")
    assert pipe.step_s == pytest.approx((32 + 2) * slot + tail + wait, rel=1e-9)
    best, why = choose(list(plans.values()))
    assert best is pipe and "fsdp is" in why["fsdp"]
    # the fields that run it: its split scaled to a smaller trained model, at least one
    # block each; none when that model has fewer blocks than stages
    fields = stage_fields(pipe, 8)
    assert [s.chip for s in fields["stages"]] == d["order"]
    assert sum(s.blocks for s in fields["stages"]) == 8
    assert all(s.blocks >= 1 for s in fields["stages"])
    assert stage_fields(pipe, 32)["stages"][0].blocks == d["stages"][0]["blocks"]
    assert all(s.blocks == 0 for s in stage_fields(pipe, 8, virtual_stages=2)["stages"])
    with pytest.raises(ConfigError, match="has 2 blocks"):
        stage_fields(pipe, 2)


def test_auto_picks_pipeline_and_the_run_gets_its_stages(tmp_path: Path) -> None:
    """On the six-rank job (paced as llama3-8b), mode = "auto" resolves to pipeline with
    the predicted order, ranks and split scaled to the trained model's blocks, which
    resolve_stages accepts, and the run's config.toml carries them."""
    from mixfleet.config import load_toml
    from mixfleet.train.autoplan import job_of, resolve_auto
    from mixfleet.train.launch import prepare_run, resolve_config
    from mixfleet.train.mixed.pacing import as_model_plan

    text = EXAMPLE.read_text().split("[[ranks]]")[0]
    text = text.replace("global_batch = 24", "global_batch = 64")
    text = text.replace("seq_len = 64 ", "seq_len = 64\ntie_embeddings = false ")
    text = text.replace("activation_checkpointing = true", "activation_checkpointing = false")
    text += "".join(f'[[ranks]]\ndevice = "{d}"\n\n' for d in SIX.split(","))
    conf = tmp_path / "six.toml"
    conf.write_text(text)
    cfg = resolve_config(conf, [])
    resolved, plan = resolve_auto(cfg)
    assert plan is not None and plan.pick is not None and plan.pick.mode == "pipeline"
    par = resolved.parallel
    d = plan.pick.detail
    assert par.mode == "pipeline" and par.stage_mode == d["stage_mode"] == "fsdp"
    assert [s.chip for s in par.stages] == d["order"]
    assert [s.ranks for s in par.stages] == [2, 2, 2]
    assert sum(s.blocks for s in par.stages) == 8 and all(s.blocks >= 1 for s in par.stages)
    kinds = [r.device.removeprefix("emu:") for r in cfg.ranks]
    res = resolve_stages(par, kinds, 8)
    assert [kinds[i] for i in res.order] == [c for c in d["order"] for _ in range(2)]
    # the emulator's whole-model memory check leaves a pipeline's stages to the cost model
    assert as_model_plan(resolved) is not None
    run = prepare_run(cfg, tmp_path / "run")
    saved = load_toml(run.config)["parallel"]
    assert saved["mode"] == "pipeline" and saved["microbatches"] == d["microbatches"]
    assert [s["blocks"] for s in saved["stages"]] == [s.blocks for s in par.stages]
    # the debug preset ties its head to the embedding: fsdp inside stages is ruled out
    tied = resolve_config(conf, ["workload.options.tie_embeddings=true"])
    assert job_of(tied)[0].stage_modes == ("dp",)


def test_a_one_rank_job_has_no_pipeline_and_says_why() -> None:
    """One rank: the pipeline plan is refused with the reason, and choose() names it."""
    job = JobSpec(model=preset_shape("debug"), global_batch=8)
    plans = predict(job, parse_rank_specs("nvidia-h20"), modes=("fsdp", "pipeline"))
    best, why = choose(plans)
    assert best is not None and best.mode == "fsdp"
    assert why["pipeline"] == "pipeline does not fit: it needs at least 2 ranks"
    assert not plans[1].fits and plans[1].step_s == 0.0
