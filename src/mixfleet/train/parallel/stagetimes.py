"""A pipeline's measured stage times and bubble (see docs/pipeline.md, "Measured stage
times").

:class:`StageTimes` is a health check on every rank of a pipeline. Each rank publishes the
seconds its chip spent in its stages' forward and backward chunks during the step (the
per-rank signal ``stage_busy_s`` that the re-split's
:class:`~mixfleet.train.parallel.resplit.StageBalance` reads too, from the strategy's
:class:`~mixfleet.emulate.stagepace.ChunkPacer`); it rides the step's control reduction, so
no collective is added; beside it ``stage_wall_s``, the wall seconds spent in those chunks
(the same on a real chip; on an emulated one, the longer of the modeled time and the
host's real computation). Rank 0 keeps, for each reduced step:

- each stage's time per micro-batch: its busiest rank's chunk seconds / micro-batches, the
  unit of the plan's predicted stage time (``stage_s``, which the re-split compares too);
- the bubble: 1 - the busiest stage's wall seconds in chunks / the schedule's wall time
  (the longest rank's ``compute_s``: the forward and backward of the whole global batch),
  the share of the schedule that the bottleneck stage sat idle (1F1B over equal stages:
  (p - 1) / (m + p - 1), the predicted figure; the schedule's own work between chunks,
  sends and receives and the loss, counts as idle).

At every checkpoint interval and at the last step it emits ``stage_times``: the medians of
these over the steps since the last such event (labelled ``emulated`` on emulated chips,
whose chunk seconds are the modeled ones, time-scaled).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from mixfleet.emulate.stagepace import ChunkPacer
from mixfleet.runs import Event
from mixfleet.train.health.actions import Action
from mixfleet.train.health.base import NONE, HealthCheck, StepOutcome
from mixfleet.train.health.signals import ControlSignals
from mixfleet.train.parallel.pipeplan import PipelinePlan

__all__ = ["StageTimes", "stage_sample"]


def stage_sample(plan: PipelinePlan, busy: Sequence[float], in_chunks: Sequence[float],
                 wall: float) -> tuple[list[float], float | None]:
    """One step's measured seconds per micro-batch of each stage (``busy``: every rank's
    chip seconds in chunks in the step; ``in_chunks``: its wall seconds in them) and its
    bubble (``wall``: the schedule's; None unless positive)."""
    lay, m = plan.layout, plan.microbatches

    def per_stage(xs: Sequence[float]) -> list[float]:
        return [max(xs[lay.first_rank(s): lay.first_rank(s) + lay.ranks[s]])
                for s in range(lay.stages)]

    bubble = max(0.0, 1.0 - max(per_stage(in_chunks)) / wall) if wall > 0 else None
    return [b / m for b in per_stage(busy)], bubble


class StageTimes(HealthCheck):
    """See the module docstring (``emit``: rank 0's, None on the other ranks)."""

    def __init__(self, plan: PipelinePlan, chunks: ChunkPacer, *, every: int,
                 total_steps: int, emit: Callable[..., Any] | None, emulated: bool) -> None:
        self.plan, self.chunks, self.every, self.total = plan, chunks, max(1, every), total_steps
        self.emit, self.emulated = emit, emulated
        self._last = (0.0, 0.0)
        self._slots: list[list[float]] = []
        self._bubbles: list[float] = []

    def register(self, signals: ControlSignals) -> None:
        signals.register("stage_busy_s", per_rank=True)
        signals.register("stage_wall_s", per_rank=True)

    def publish(self, signals: ControlSignals) -> None:
        now = (self.chunks.busy_s, self.chunks.wall_s)
        signals.set("stage_busy_s", now[0] - self._last[0])
        signals.set("stage_wall_s", now[1] - self._last[1])
        self._last = now

    def observe(self, out: StepOutcome) -> Sequence[Action]:
        if self.emit is None or not out.reduced:
            return NONE
        sig = out.signals
        slots, bubble = stage_sample(self.plan, sig.per_rank("stage_busy_s"),
                                     sig.per_rank("stage_wall_s"), max(sig.per_rank("compute_s")))
        self._slots.append(slots)
        if bubble is not None:
            self._bubbles.append(bubble)
        if out.step % self.every and out.step < self.total:
            return NONE
        measured = [float(f"{statistics.median(col):.4g}")
                    for col in zip(*self._slots, strict=True)]
        self.emit(Event.STAGE_TIMES, step=out.step, steps=len(self._slots),
                  measured_s=measured,
                  bubble=round(statistics.median(self._bubbles), 4) if self._bubbles else None,
                  **({"emulated": True} if self.emulated else {}))
        self._slots, self._bubbles = [], []
        return NONE
