"""Global-batch sampler: order from (seed, epoch, step) only; shares slice one batch."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixfleet.train.sampler import GlobalBatchSampler, equal_shares, share_bounds


def test_order_depends_only_on_seed_and_step() -> None:
    """Two samplers with the same seed give the same batch at any step, in any call order."""
    a, b = GlobalBatchSampler(1000, 64, seed=3), GlobalBatchSampler(1000, 64, seed=3)
    steps = [0, 500, 15, 16, 17, 3, 999]
    for s in steps:
        assert torch.equal(a.global_batch_at(s), b.global_batch_at(s))
    for s in reversed(steps):  # another call order, same answers
        assert torch.equal(a.global_batch_at(s), GlobalBatchSampler(1000, 64, 3).global_batch_at(s))
    assert not torch.equal(a.global_batch_at(0), GlobalBatchSampler(1000, 64, 4).global_batch_at(0))


def test_epoch_is_a_permutation_without_repeats() -> None:
    """Within an epoch every sample appears at most once; across epochs the order changes."""
    s = GlobalBatchSampler(130, 32, seed=0)
    epoch0 = torch.cat([s.global_batch_at(i) for i in range(s.steps_per_epoch)])
    assert len(set(epoch0.tolist())) == len(epoch0) == 128
    epoch1 = torch.cat([s.global_batch_at(s.steps_per_epoch + i)
                        for i in range(s.steps_per_epoch)])
    assert not torch.equal(epoch0, epoch1)


@settings(max_examples=60, deadline=None)
@given(B=st.integers(1, 97), ranks=st.integers(1, 8), step=st.integers(0, 10_000),
       data=st.data())
def test_rank_slices_concatenate_to_the_global_batch(B: int, ranks: int, step: int,
                                                     data: st.DataObject) -> None:
    """For any shares summing to B, the ranks' slices in order are exactly the global batch."""
    ranks = min(ranks, B)
    cuts = sorted(data.draw(st.lists(st.integers(0, B), min_size=ranks - 1,
                                     max_size=ranks - 1)))
    shares = [b - a for a, b in zip([0, *cuts], [*cuts, B], strict=True)]
    s = GlobalBatchSampler(500, B, seed=1)
    parts = [s.rank_batch(step, shares, r) for r in range(ranks)]
    assert torch.equal(torch.cat(parts), s.global_batch_at(step))
    assert share_bounds(shares, ranks - 1)[1] == B


def test_equal_shares_sum_to_batch() -> None:
    """Equal shares differ by at most one sample and sum to B."""
    for B in range(1, 70):
        for r in range(1, min(B, 9) + 1):
            sh = equal_shares(B, r)
            assert sum(sh) == B and max(sh) - min(sh) <= 1
