"""A pipeline's re-split from measured stage times (train/parallel/resplit.py): a stage
measured slower than predicted gives blocks away, one measured as predicted keeps its
split."""

from __future__ import annotations

from typing import Any

from mixfleet.config import from_dict
from mixfleet.train.config import RunConfig
from mixfleet.train.parallel.pipeplan import meta_model, plan_pipeline
from mixfleet.train.parallel.resplit import resplit
from mixfleet.workloads.llama import Llama, preset_config


def _plan() -> object:
    cfg = from_dict(RunConfig, {"workload": {"name": "llama"}, "train": {"steps": 1},
                                "parallel": {"mode": "pipeline", "microbatches": 8}})
    model = meta_model(lambda: Llama(preset_config("debug", layers=8, tie_embeddings=False)))
    return plan_pipeline(cfg.parallel, ["cpu", "cpu"], model, global_batch=16)


def test_measured_as_predicted_keeps_the_split_and_a_slow_stage_gives_blocks_away() -> None:
    """Slots measured at the predicted times (any unit) give back the same blocks; the
    first stage measured twice as slow gives blocks to the second, and the predicted step
    of the new split is shorter than the measured one."""
    plan: Any = _plan()
    pred = list(plan.split.stage_s)
    same = resplit(plan, [3.0 * t for t in pred])
    assert same is not None and same[0] == plan.split.blocks
    slow = resplit(plan, [2 * pred[0], pred[1]])
    assert slow is not None
    blocks, step_s, factors = slow
    assert blocks[0] < plan.split.blocks[0] and sum(blocks) == sum(plan.split.blocks)
    assert factors[0] == 2 * factors[1]
    measured_step = (plan.microbatches + 1) * max(2 * pred[0], pred[1])
    assert step_s < measured_step
