"""Emulated chips in a pipeline: each stage's forward and backward of one micro-batch take
their chip's time (see docs/pipeline.md, "Emulated stages").

A pipeline's schedule calls its stage's ``forward_one_chunk`` and ``backward_one_chunk``
once per micro-batch; :class:`ChunkPacer` wraps both so that each lasts its chip's time:

- under ``as_model`` (:class:`ChunkPace` per virtual stage): the named model's layers of
  this stage on this chip kind (seconds per token from the catalog peak and the profile's
  MFU, forward 1/3 and backward 2/3 of a training step's FLOPs) plus the point-to-point
  transfer of one micro-batch's activations (forward) or their gradient (backward) to the
  neighbouring stage over the priced link (the bridge between kinds), all x the time scale;
- else: the real computation stretched by the chip's relative speed (``real / speed``).

Either way the chip's thermal clock factor slows it further (a throttled stage gets slower,
which a re-split can then see). The chunks of the lanes a rank serves at once take turns
on its one chip (a lock), so a shared rank does their work one after the other, as one
chip would. The sends are charged to the sender (a synchronous send): the receiver waits
for them in the schedule's own receive.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ChunkPace", "ChunkPacer"]


@dataclasses.dataclass(frozen=True)
class ChunkPace:
    """Wall seconds of one micro-batch on one virtual stage (already time-scaled)."""

    fwd_s: float  # computation of the forward
    bwd_s: float  # computation of the backward
    send_fwd_s: float = 0.0  # activations to the next stage (0 on the last)
    send_bwd_s: float = 0.0  # their gradient to the previous stage (0 on the first)
    pre_step_s: float = 0.0  # once per step, before the first forward (fixed cost)
    post_step_s: float = 0.0  # once per step, after the last backward (gradient sum)
    # fsdp: the stage's parameters are gathered this long after the step starts (the
    # gathers are issued at its start, :meth:`ChunkPacer.begin_step`); the step's first
    # forward of this virtual stage cannot start before
    gather_s: float = 0.0


class ChunkPacer:
    """Paces the chunks of this rank's stages; see the module docstring."""

    def __init__(self, paces: dict[int, ChunkPace] | None = None, *, speed: float = 1.0,
                 clock_factor: Callable[[], float] = lambda: 1.0,
                 clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not 0 < speed <= 1:
            raise ValueError(f"speed must be in (0, 1] (got {speed})")
        self.paces, self.speed, self.factor = paces, speed, clock_factor
        self._clock, self._sleep = clock, sleep
        self._chip = threading.Lock()  # one chip: the lanes' chunks take turns
        self.busy_s = 0.0  # the chip's seconds in chunks so far (see _run)
        self.wall_s = 0.0  # the wall seconds spent in chunks so far (paced: real or target)
        self.per_step = 0  # chunks of each kind per virtual stage and step (0: no step costs)
        self._seen: dict[tuple[int, bool], int] = {}
        self._step_t0: float | None = None
        self._gate: float | None = None  # the chunk being paced starts no earlier

    def begin_step(self) -> None:
        """The step starts now (its gathers are issued now; see ``ChunkPace.gather_s``)."""
        self._step_t0 = self._clock()

    def wrap(self, stage: Any, virtual: int) -> None:
        """Pace ``stage`` (a ``PipelineStage`` of virtual stage ``virtual``)."""
        fwd, bwd = stage.forward_one_chunk, stage.backward_one_chunk
        stage.forward_one_chunk = lambda *a, **k: self._run(fwd, a, k, virtual, True)
        stage.backward_one_chunk = lambda *a, **k: self._run(bwd, a, k, virtual, False)

    def target(self, virtual: int, forward: bool, real: float) -> float:
        """Seconds the chunk takes on this chip (``real``: its computation here)."""
        p = self.paces.get(virtual) if self.paces is not None else None
        if p is None:
            return real / self.speed / max(1e-6, self.factor())
        t = (p.fwd_s + p.send_fwd_s) if forward else (p.bwd_s + p.send_bwd_s)
        i = self._seen.get((virtual, forward), 0)
        self._seen[(virtual, forward)] = i + 1
        if self.per_step:  # the step's own costs: before its first chunk, after its last
            if forward and i % self.per_step == 0:
                t += p.pre_step_s
                if p.gather_s and self._step_t0 is not None:
                    self._gate = self._step_t0 + p.gather_s / max(1e-6, self.factor())
            if not forward and i % self.per_step == self.per_step - 1:
                t += p.post_step_s
        return t / max(1e-6, self.factor())

    def _run(self, fn: Callable[..., Any], a: tuple[Any, ...], k: dict[str, Any], virtual: int,
             forward: bool) -> Any:
        with self._chip:
            t0 = self._clock()
            out = fn(*a, **k)
            real = self._clock() - t0
            target = self.target(virtual, forward, real)
            gate, self._gate = self._gate, None
            end = max(t0 + real, max(t0, gate or t0) + target)
            while (now := self._clock()) < end - 1e-4:
                self._sleep(end - now)
            self.wall_s += now - t0
            # the chip's time: an emulated chip's modeled one (waits inside the chunk, as
            # fsdp's collectives with a late partner, are not its work), else the real one
            self.busy_s += target if self.paces is not None or self.speed < 1 else real
        return out
