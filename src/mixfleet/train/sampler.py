"""The global-batch sampler (docs/architecture.md, "Training semantics").

The data order is a function of (seed, epoch, global step) only: epoch ``e`` is a seeded
permutation of the sample indices; step ``s`` takes the next ``B`` indices of it (the tail
that does not fill a batch is dropped, so every step has exactly B samples). Ranks take
contiguous slices of the global batch in proportion to their shares. Resuming with another
number of ranks or other shares replays the same global batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mixfleet.errors import ConfigError

__all__ = ["GlobalBatchSampler", "equal_shares", "share_bounds"]


def equal_shares(global_batch: int, ranks: int) -> list[int]:
    """Integer shares summing to ``global_batch``, as equal as possible (first ranks +1)."""
    base, extra = divmod(global_batch, ranks)
    return [base + (1 if r < extra else 0) for r in range(ranks)]


def share_bounds(shares: Sequence[int], rank: int) -> tuple[int, int]:
    """The ``[lo, hi)`` slice of the global batch that ``rank`` takes."""
    lo = sum(shares[:rank])
    return lo, lo + shares[rank]


class GlobalBatchSampler:
    """Global batches of ``global_batch`` sample indices, a pure function of the step."""

    def __init__(self, num_samples: int, global_batch: int, seed: int) -> None:
        if global_batch > num_samples:
            raise ConfigError(f"train.global_batch ({global_batch}) exceeds the dataset "
                              f"({num_samples} samples); set train.global_batch <= "
                              f"{num_samples}")
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.seed = seed
        self.steps_per_epoch = num_samples // global_batch
        self._cache: tuple[int, torch.Tensor] | None = None

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def _perm(self, epoch: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cache = (epoch, torch.randperm(self.num_samples, generator=g))
        return self._cache[1]

    def global_batch_at(self, step: int) -> torch.Tensor:
        """The B sample indices of global step ``step`` (0-based)."""
        if step < 0:
            raise ValueError(f"step must be >= 0 (got {step})")
        epoch, k = divmod(step, self.steps_per_epoch)
        start = k * self.global_batch
        return self._perm(epoch)[start: start + self.global_batch]

    def rank_batch(self, step: int, shares: Sequence[int], rank: int) -> torch.Tensor:
        """This rank's contiguous slice of step ``step``'s global batch."""
        whole = self.global_batch_at(step)
        if len(shares) == 1:  # one rank takes it all
            return whole
        lo, hi = share_bounds(shares, rank)
        return whole if hi - lo == self.global_batch else whole[lo:hi]

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "global_batch": self.global_batch,
                "num_samples": self.num_samples}

    def state_at(self, step: int) -> dict[str, int]:
        """:meth:`state_dict` with the step a run resumes at and its epoch (the manifest's
        ``sampler``)."""
        return {**self.state_dict(), "cursor_step": step, "epoch": self.epoch_of(step)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for k in ("seed", "global_batch", "num_samples"):
            if state[k] != getattr(self, k):
                raise ConfigError(f"checkpoint was written with sampler {k}={state[k]}, "
                                  f"this config has {getattr(self, k)}; resume with the "
                                  f"same train.seed/global_batch or start a new --run-dir")
