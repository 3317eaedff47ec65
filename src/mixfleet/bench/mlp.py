"""``mlp-matmul``: a bias-free MLP whose training FLOPs are known in closed form.

Only matrix multiplies are counted (the MFU convention); ReLU and the loss are elementwise.
Per sample, with layer widths ``d0 -> d1 -> ... -> dn``:

* forward: ``2 * sum(d_i * d_{i+1})``
* backward, weight gradients: ``2 * sum(d_i * d_{i+1})``
* backward, input gradients: the same for every layer but the first (its input needs none)

so ``flops_per_sample = 6 * sum(d_i d_{i+1}) - 2 * d0 * d1``. The data are seeded random
inputs with labels from a fixed random linear teacher, so the model can learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mixfleet.errors import WorkloadError
from mixfleet.workloads.base import Batch, Dataset, Workload

__all__ = ["make_mlp_matmul", "mlp_flops_per_sample"]


def mlp_flops_per_sample(widths: Sequence[int]) -> float:
    """Training FLOPs (forward + backward matmuls) per sample of a bias-free MLP."""
    pairs = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    return float(6 * pairs - 2 * widths[0] * widths[1])


def _loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="sum")


def make_mlp_matmul(d_in: int = 256, hidden: int = 512, layers: int = 3, classes: int = 16,
                    samples: int = 4096, seed: int = 0) -> Workload:
    """The ``mlp-matmul`` bench workload (``layers`` hidden layers of width ``hidden``)."""
    for name, v in (("d_in", d_in), ("hidden", hidden), ("layers", layers),
                    ("classes", classes), ("samples", samples)):
        if v < 1:
            raise WorkloadError(f"mlp-matmul option {name} = {v!r} must be >= 1")
    widths = [d_in] + [hidden] * layers + [classes]

    def build() -> nn.Module:
        mods: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            mods.append(nn.Linear(a, b, bias=False))
            if i < len(widths) - 2:
                mods.append(nn.ReLU())
        return nn.Sequential(*mods)

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, d_in, generator=g)
    teacher = torch.randn(d_in, classes, generator=g)
    y = (x @ teacher).argmax(dim=1)
    return Workload(name="mlp-matmul", build_model=build, train_set=Dataset(tensors=(x, y)),
                    eval_set=None, loss=_loss, flops_per_sample=mlp_flops_per_sample(widths),
                    info={"widths": widths})
