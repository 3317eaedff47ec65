"""Exact gradients: per-rank summed losses scaled by 1/B, summed, equal one batch of B."""

from __future__ import annotations

import torch

from mixfleet.workloads import get_workload


def _grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])  # type: ignore[union-attr]


def test_uneven_shares_sum_to_the_single_batch_gradient() -> None:
    """Shares (48, 16) give the gradient of batch 64 up to float rounding (atol 1e-6)."""
    w = get_workload("digits-cnn")
    torch.manual_seed(0)
    model = w.build_model()
    idx = torch.arange(64)
    B = 64
    model.zero_grad()
    (w.loss(model, w.train_set.take(idx)) / B).backward()
    full = _grads(model).clone()
    total = torch.zeros_like(full)
    for lo, hi in ((0, 48), (48, 64)):
        model.zero_grad()
        (w.loss(model, w.train_set.take(idx[lo:hi])) / B).backward()
        total += _grads(model)
    assert torch.allclose(total, full, rtol=0, atol=1e-6)
    assert full.abs().max() > 1e-3  # the comparison is not between zeros
