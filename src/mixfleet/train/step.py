"""The step manager: one global step's collectives and its outcome.

:meth:`StepManager.step` runs the forward and backward passes of this rank's micro-batches,
lets the health checks set their control signals, reduces gradients and signals through the
:class:`~mixfleet.train.parallel.strategy.ReductionStrategy`, and judges the result: a step with a
non-finite loss or gradient (or a gradient-norm spike) is **not committed** — the optimizer
does not step — and that is data in the outcome, not an exception (torchft's
``should_commit``). The trainer then applies the update and hands the outcome to the
checks (:mod:`mixfleet.train.health.checks`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from mixfleet.runs import Event
from mixfleet.train.clock import Clock
from mixfleet.train.health.base import HealthCheck, StepOutcome
from mixfleet.train.health.detectors import StepGuard
from mixfleet.train.health.faults import FaultInjector
from mixfleet.train.health.signals import ControlSignals
from mixfleet.train.parallel.strategy import ReductionStrategy

__all__ = ["StepManager"]


class StepManager:
    """Owns a step's collectives and the control signals; see the module docstring."""

    def __init__(self, strategy: ReductionStrategy, signals: ControlSignals, *,
                 guard: StepGuard, faults: FaultInjector, clock: Clock, global_batch: int,
                 emit: Callable[..., Any], rank: int, grad_clip: float = 0.0) -> None:
        self.strategy, self.signals, self.guard = strategy, signals, guard
        self.grad_clip = grad_clip
        self.faults, self.clock, self.B = faults, clock, global_batch
        self.emit, self.rank = emit, rank
        signals.register("compute_s", per_rank=True)
        # the reduced gradient's sum or norm, written after the reduction into the control
        # region, so that it reaches the host with the loss in one copy (see step)
        signals.register("grad_size")
        self._pub: Sequence[HealthCheck] = ()  # the checks that set signals (see bind)
        self._compute_slot, self._size_slot, self._sizes = 0, 0, False
        self._size_out: torch.Tensor | None = None

    def bind(self, checks: Sequence[HealthCheck]) -> None:
        """Register the signals of ``checks``, keep those whose ``publish`` each step calls,
        and allocate the reduction buffers."""
        for c in checks:
            c.register(self.signals)
        self._pub = [c for c in checks if type(c).publish is not HealthCheck.publish]
        region = self.strategy.bind(self.signals.size)
        self.signals.bind(region)
        self._compute_slot = self.signals.slot("compute_s")
        self._size_slot = self.signals.slot("grad_size")
        self._size_out = region[self._size_slot]  # a 0-d view
        self._sizes = bool(self.guard.spike_factor) or self.grad_clip > 0  # norm, not sum

    def step(self, step: int, batches: Sequence[tuple[Any, bool]],
             loss: Callable[[Any], torch.Tensor],
             on_grads: Callable[[], None] | None = None,
             on_start: Callable[[], None] | None = None) -> StepOutcome:
        """Run global step ``step + 1`` on this rank's ``batches`` (its micro-batches, each
        with ``real``: False for a stand-in that keeps the collectives of every rank in
        step and contributes nothing). ``on_start`` runs first and ``on_grads`` when the
        gradients are ready, both inside the compute time (an emulated chip's pacing)."""
        st, perf = self.strategy, self.clock.perf
        t0 = perf()
        if on_start is not None:
            on_start()
        st.zero_grad()
        if st.runs_schedule:  # a pipeline: the schedule runs the whole global batch
            st.run_schedule(batches[0][0])
        elif len(batches) == 1:  # the common case, without the loop
            batch, real = batches[0]
            part = loss(batch)
            st.backward(part / self.B if real else part * 0.0)
        else:
            last = len(batches) - 1
            for i, (batch, real) in enumerate(batches):
                part = loss(batch)
                st.backward(part / self.B if real else part * 0.0, last=i == last)
        if on_grads is not None:
            on_grads()
        compute = perf() - t0
        if self.faults.active:
            compute = self.faults.grads_ready(step, st, compute)
        sig = self.signals
        sig.stage[self._compute_slot] = compute
        for c in self._pub:
            c.publish(sig)
        assert self._size_out is not None, "StepManager.bind() comes before the first step"
        if sig.direct:  # host memory: the values are read in place
            st.reduce()
            fused = st.grad_size_into(self._size_out, self._sizes)
        else:  # one copy to the host brings the loss, the signals and the gradient's size
            sig.publish()
            st.reduce()
            fused = st.grad_size_into(self._size_out, self._sizes)
            sig.collect()
        value = float(sig.values[sig.size])  # the loss (sig.loss)
        size = float(sig.values[self._size_slot]) if fused else st.grad_size(self._sizes)
        reason = self.guard.verdict(value, size)
        if reason is None and 0 < self.grad_clip < size:
            st.scale_grads(self.grad_clip / (size + 1e-6))  # the same factor on every rank
        if reason is not None and self.rank == 0:
            self.emit(Event.STEP_SKIPPED, step=step + 1, reason=reason, loss=value)
        return StepOutcome(step=step + 1, reduced=True, committed=reason is None, loss=value,
                           reason=reason, compute_s=compute, signals=sig)

    def skipped(self, step: int) -> StepOutcome:
        """Global step ``step + 1`` is a batch skipped after a rollback (every rank alike:
        no computation, no reduction, no update)."""
        self.strategy.zero_grad()
        self.signals.clear()
        return StepOutcome(step=step + 1, reduced=False, committed=False, loss=float("nan"),
                           reason="skipped batch", compute_s=0.0, signals=self.signals)
