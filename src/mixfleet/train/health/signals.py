"""Named control signals that ride a step's reduction.

A health check registers the signals it needs ("checkpoint", "drain", "compute_s", ...)
before the first step, sets this rank's value before the reduction and reads the sum over
ranks (or every rank's value) after it, by name — so every rank sees the same data and
reaches the same decision at the same step without another collective.

A signal is either *shared* (one slot; the ranks' values are summed, so ``total() > 0``
means "some rank asked") or *per rank* (one slot per rank; each rank writes its own).
Values are cleared at every step: a check that still wants something sets it again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["ControlSignals"]


class ControlSignals:
    """The registry and the host view of the control region of a step's reduction.

    The region is ``size + 1`` floats that the reduction strategy sums across ranks with
    the gradients (``dp``) or on its own (``fsdp``); its last slot is the loss.
    """

    def __init__(self, *, world: int, rank: int) -> None:
        self.world, self.rank = world, rank
        self._slots: dict[str, tuple[int, bool]] = {}
        self.size = 0
        self._region: torch.Tensor | None = None
        # Host arrays (numpy): this rank's values before the reduction, indexed by slot, and
        # the region after it. A step loop may write ``stage[slot]`` / read ``values[slot]``
        # directly with a slot from :meth:`slot` (``values`` is replaced at each collect).
        self.values: Any = None
        self.stage: Any = None
        self.direct = False  # the region is host memory: publish/collect are no-ops

    def register(self, name: str, *, per_rank: bool = False) -> None:
        """Add a signal (before :meth:`bind`); registering a name twice is a no-op."""
        if name in self._slots:
            return
        if self._region is not None:
            raise RuntimeError(f"signal {name!r} registered after the buffer was bound")
        self._slots[name] = (self.size, per_rank)
        self.size += self.world if per_rank else 1

    @property
    def names(self) -> list[str]:
        return list(self._slots)

    def bind(self, region: torch.Tensor) -> None:
        """Use ``region`` (``size + 1`` floats, zeroed by the strategy at each step)."""
        if region.numel() != self.size + 1:
            raise ValueError(f"control region has {region.numel()} floats, needs {self.size + 1}")
        self._region = region
        self.direct = region.device.type == "cpu"
        if self.direct:  # numpy scalar writes into the buffer are ~20x cheaper than torch
            self.stage = self.values = region.numpy()
        else:
            self.stage = np.zeros(self.size, dtype=np.float64)
            self.values = np.zeros(self.size + 1, dtype=np.float64)

    def slot(self, name: str) -> int:
        """This rank's index of ``name`` in :attr:`stage` and :attr:`values`."""
        off, per_rank = self._slots[name]
        return off + self.rank if per_rank else off

    # -- before the reduction ------------------------------------------------------------
    def set(self, name: str, value: float) -> None:
        """This rank's value of ``name`` for the coming reduction."""
        self.stage[self.slot(name)] = value

    def publish(self) -> None:
        """Copy the values set on the host into the region (a no-op on the CPU)."""
        if not self.direct and self._region is not None:
            self._region[: self.size].copy_(torch.from_numpy(self.stage))
            self.stage[:] = 0.0

    # -- after the reduction -------------------------------------------------------------
    def collect(self) -> None:
        """Fetch the reduced region to the host (one copy; a no-op on the CPU)."""
        if not self.direct and self._region is not None:
            self.values = self._region.detach().cpu().numpy()

    def clear(self) -> None:
        """Forget the values of a step that had no reduction (a skipped batch)."""
        if self.direct:
            self.values[:] = 0.0
        else:
            self.values = np.zeros(self.size + 1, dtype=np.float64)

    def total(self, name: str) -> float:
        """The sum over ranks (shared), or this rank's reduced value (per rank)."""
        return float(self.values[self.slot(name)])

    def per_rank(self, name: str) -> list[float]:
        off, per_rank = self._slots[name]
        if not per_rank:
            raise KeyError(f"signal {name!r} is shared, not per rank")
        return [float(x) for x in self.values[off: off + self.world]]

    @property
    def loss(self) -> float:
        """The global loss of the step (the region's last slot, summed over ranks)."""
        return float(self.values[self.size])
