"""A pipeline's measured stage times (train/parallel/stagetimes.py): per micro-batch from
each stage's busiest rank, the bubble of an ideal 1F1B schedule equal to the predicted
one, and one ``stage_times`` event per checkpoint interval and at the last step, with the
medians of its window."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mixfleet.config import from_dict
from mixfleet.emulate.stagepace import ChunkPacer
from mixfleet.train.config import RunConfig
from mixfleet.train.health.base import StepOutcome
from mixfleet.train.health.signals import ControlSignals
from mixfleet.train.parallel.pipeline import bubble_fraction
from mixfleet.train.parallel.pipeplan import meta_model, plan_pipeline
from mixfleet.train.parallel.stagetimes import StageTimes, stage_sample
from mixfleet.workloads.llama import Llama, preset_config


def _plan(chips: list[str], stages: list[dict[str, Any]] | None = None) -> Any:
    par: dict[str, Any] = {"mode": "pipeline", "microbatches": 8}
    if stages is not None:
        par["stages"] = stages
    cfg = from_dict(RunConfig, {"workload": {"name": "llama"}, "train": {"steps": 1},
                                "parallel": par})
    model = meta_model(lambda: Llama(preset_config("debug", layers=8, tie_embeddings=False)))
    return plan_pipeline(cfg.parallel, chips, model, global_batch=16)


def test_an_ideal_1f1b_step_measures_the_predicted_bubble_and_the_busiest_rank() -> None:
    """Three stages of 2, 1 and 1 ranks (two lanes), equal slots of 0.01 s: each stage's
    time per micro-batch is its busiest rank's chunk seconds / micro-batches, and a
    schedule wall of (m + p - 1) slots gives the bubble that 1F1B predicts."""
    plan = _plan(["cpu"] * 4, [{"chip": "cpu", "ranks": 2}, {"chip": "cpu", "ranks": 1},
                               {"chip": "cpu", "ranks": 1}])
    m, p, slot = plan.microbatches, 3, 0.01
    busy = [m * slot * 0.5, m * slot, m * slot, m * slot * 0.9]
    per_mb, bubble = stage_sample(plan, busy, busy, (m + p - 1) * slot)
    assert per_mb == pytest.approx([slot, slot, 0.9 * slot], rel=1e-12)
    assert bubble == pytest.approx(bubble_fraction(p, m, 1), rel=1e-12)
    assert stage_sample(plan, busy, busy, 0.0)[1] is None


def test_stage_times_are_emitted_per_interval_with_the_windows_medians() -> None:
    """With a checkpoint interval of 4 over 6 steps, rank 0 emits at steps 4 and 6 the
    medians of the steps since the last event (a skipped batch counts in none), and
    publishes only what its chunks took since the last step; other ranks emit nothing."""
    plan = _plan(["cpu", "cpu"])
    got: list[dict[str, Any]] = []
    for rank, emit in ((0, lambda _e, **f: got.append(f)), (1, None)):
        chunks = ChunkPacer()
        check = StageTimes(plan, chunks, every=4, total_steps=6, emit=emit, emulated=True)
        sig = ControlSignals(world=2, rank=rank)
        sig.register("compute_s", per_rank=True)
        check.register(sig)
        sig.bind(torch.zeros(sig.size + 1, dtype=torch.float64))
        for step in range(1, 7):
            chunks.busy_s += 0.08 * step
            chunks.wall_s += 0.08 * step
            check.publish(sig)
            assert sig.per_rank("stage_busy_s")[rank] == pytest.approx(0.08 * step)
            for r in range(2):  # what the reduction would give: every rank's values
                sig.values[sig.slot("stage_busy_s") - rank + r] = 0.08 * step
                sig.values[sig.slot("stage_wall_s") - rank + r] = 0.08 * step
                sig.values[sig.slot("compute_s") - rank + r] = 0.16 * step
            check.observe(StepOutcome(step=step, reduced=step != 2, committed=True, loss=1.0,
                                      reason=None, compute_s=0.0, signals=sig))
    assert [e["step"] for e in got] == [4, 6] and [e["steps"] for e in got] == [3, 2]
    # steps 1, 3, 4 (0.08, 0.24, 0.32 s busy): median 0.24 / 8 micro-batches; 5, 6: 0.44 / 8
    assert got[0]["measured_s"] == [0.03, 0.03] and got[1]["measured_s"] == [0.055, 0.055]
    assert got[0]["bubble"] == 0.5 and all(e["emulated"] for e in got)
