"""A pipeline's re-split on measured stage times (see docs/pipeline.md, "Re-splits").

:class:`StageBalance` is a health check: each rank publishes the seconds its chip spent in
its stages' forward and backward chunks during the step (per-rank signal
``stage_busy_s``, from the strategy's :class:`~mixfleet.emulate.stagepace.ChunkPacer`);
every ``every`` steps every rank holds the same sums and takes the same decision:

- each stage's measured time per micro-batch slot (its busiest rank's chunk time / steps /
  micro-batches), against the plan's predicted one: a factor per stage (a throttled chip
  shows as a factor > 1);
- the split again (:func:`~mixfleet.train.parallel.split.split_blocks`) with each stage's
  per-block times scaled by its factor;
- a :class:`~mixfleet.train.health.actions.Restage` when the new split's predicted step is
  shorter than the measured one by more than the hysteresis; the trainer checkpoints, the
  launcher relaunches with the new blocks (``stages_changed`` event with the gain).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from mixfleet.errors import ConfigError
from mixfleet.train.health.actions import Action, Restage
from mixfleet.train.health.base import NONE, HealthCheck, StepOutcome
from mixfleet.train.health.signals import ControlSignals
from mixfleet.train.parallel.pipeplan import PipelinePlan
from mixfleet.train.parallel.split import split_blocks

__all__ = ["StageBalance", "resplit"]


def resplit(plan: PipelinePlan, measured_slot_s: Sequence[float]
            ) -> tuple[tuple[int, ...], float, list[float]] | None:
    """The split that the measured slot times call for: (blocks, its predicted step in
    seconds, the per-stage factors), or None when the plan has no prediction to scale."""
    if plan.split is None or plan.inputs is None:
        return None
    chips, model = plan.inputs
    factors = [max(1e-9, m) / max(1e-12, p) for m, p in zip(measured_slot_s, plan.split.stage_s,
                                                            strict=True)]
    scaled = [dataclasses.replace(c, block_s=tuple(t * f for t in c.block_s),
                                  embed_s=c.embed_s * f, head_s=c.head_s * f)
              for c, f in zip(chips, factors, strict=True)]
    try:
        new = split_blocks(scaled, model, microbatches=plan.microbatches,
                           schedule="gpipe" if plan.schedule == "gpipe" else "1f1b",
                           sharded=plan.stage_mode == "fsdp")
    except ConfigError:
        return None
    return new.blocks, new.step_s, factors


class StageBalance(HealthCheck):
    """See the module docstring."""

    def __init__(self, plan: PipelinePlan, busy: Any, *, every: int, hysteresis: float,
                 world: int) -> None:
        self.plan, self.busy, self.every, self.hysteresis = plan, busy, every, hysteresis
        self._last = 0.0
        self._acc = [0.0] * world
        self._n = 0

    def register(self, signals: ControlSignals) -> None:
        signals.register("stage_busy_s", per_rank=True)

    def publish(self, signals: ControlSignals) -> None:
        now = float(self.busy())
        signals.set("stage_busy_s", now - self._last)
        self._last = now

    def observe(self, out: StepOutcome) -> Sequence[Action]:
        if not out.reduced:
            return NONE
        for r, v in enumerate(out.signals.per_rank("stage_busy_s")):
            self._acc[r] += v
        self._n += 1
        if self._n < self.every:
            return NONE
        lay, m = self.plan.layout, self.plan.microbatches
        slots = [max(self._acc[lay.first_rank(s): lay.first_rank(s) + lay.ranks[s]])
                 / (self._n * m) for s in range(lay.stages)]
        self._acc, self._n = [0.0] * len(self._acc), 0
        got = resplit(self.plan, slots)
        if got is None:
            return NONE
        blocks, step_s, factors = got
        now_s = (m + lay.stages - 1) * max(slots)
        current = tuple(lay.blocks)
        if blocks == current or step_s >= now_s * (1 - self.hysteresis):
            return NONE
        return (Restage(blocks, "measured stage times", {
            "predicted_gain": round(now_s / step_s, 3), "measured_slot_s":
            [float(f"{t:.4g}") for t in slots], "factors": [round(f, 3) for f in factors],
            "old_blocks": list(current)}),)
