"""One global step on a mixed fleet (several kinds of chip): this rank's share in
micro-batches of at most its limit, an emulated chip paced around the computation, and the
all-reduce across chip kinds (:mod:`mixfleet.train.mixed.collectives`). The shares
themselves come from :mod:`mixfleet.train.mixed.rebalance`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from mixfleet.train.mixed.collectives import FleetCollectives
from mixfleet.train.mixed.shares import micro_batches

if TYPE_CHECKING:
    from mixfleet.emulate import EmulatedDevice
    from mixfleet.train.health.base import StepOutcome
    from mixfleet.train.step import StepManager

__all__ = ["MixedFleetStep"]


class MixedFleetStep:
    """A trainer's step on a mixed fleet: micro-batches, the (hierarchical) all-reduce with
    emulated pacing before it. ``micros``: every rank's micro-batch limit (``micro`` on
    each when not given; 0 is no limit)."""

    def __init__(self, coll: FleetCollectives, *, world: int, micro: int,
                 emu: EmulatedDevice | None = None, micros: Sequence[int] | None = None) -> None:
        self.coll, self.micro, self.emu = coll, micro, emu
        self.micros = list(micros) if micros is not None else [micro] * world

    def split(self, idx: torch.Tensor, shares: Sequence[int], *, uniform: bool = False
              ) -> list[torch.Tensor]:
        """This rank's share in micro-batches of at most its limit. ``uniform``: the same
        number of micro-batches on every rank (sizes differ; some may be empty), for a
        strategy whose collectives run per micro-batch (FSDP)."""
        if not uniform:
            return micro_batches(idx, self.micro)
        k = max(1 if not m else -(-s // m) for s, m in zip(shares, self.micros, strict=True))
        return list(torch.tensor_split(idx, k))

    def step(self, manager: StepManager, step: int, idx: torch.Tensor, shares: Sequence[int],
             take: Callable[[torch.Tensor], Any], loss: Callable[[Any], torch.Tensor]
             ) -> StepOutcome:
        """Global step ``step + 1`` of this rank's slice ``idx`` through ``manager``, in
        :meth:`split`'s micro-batches (``take``: samples -> a batch on the device). An
        empty micro-batch of a uniform split is a stand-in of one sample that keeps the
        collectives in step and contributes nothing (see StepManager); its computation is
        paced as one sample's. An emulated chip is
        paced around the computation: it computes at the end of its budget (it waits
        first), unless the forward is a collective (fsdp): then a rank that starts late
        holds back every rank, and the chip is paced only when the gradients are ready, so
        that a slow chip reaches the reduction late, as a real one does."""
        st, n = manager.strategy, max(1, len(idx))
        uniform = st.uniform_micro_batches
        batches = [(take(c if len(c) else idx[:1]), bool(len(c)))
                   for c in self.split(idx, shares, uniform=uniform) if len(c) or uniform]
        emu = self.emu
        if emu is None:
            return manager.step(step, batches, loss)
        # a stand-in computes one sample (its loss x 0): a real chip spends that time too
        sizes = [float(len(c) or 1) for c in self.split(idx, shares, uniform=uniform)
                 if len(c) or uniform]
        return manager.step(step, batches, loss,
                            on_grads=lambda: emu.compute_done(work=n, micro=sizes),
                            on_start=None if st.collective_forward else
                            lambda: emu.pace_first(work=n, micro=sizes))

    def all_reduce(self, flat: torch.Tensor) -> None:
        """Sum the gradients over all ranks (hierarchical across device kinds)."""
        self.coll.all_reduce(flat)

    def all_reduce_small(self, values: torch.Tensor) -> None:
        """Sum a control region over all ranks (one direct exchange; its wait is timed)."""
        self.coll.all_reduce_small(values)
