"""``digits-cnn``: a small CNN on scikit-learn's bundled 8x8 digits images (1,797 images).

The train/test split is fixed and seeded (20% test, ``random_state=0``), so every run and
every rank sees the same split. No BatchNorm: a sample's gradient never depends on the
other samples of its batch, which keeps results independent of the number of ranks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mixfleet.workloads.base import Batch, Dataset, Workload, count_train_flops

__all__ = ["DigitsCNN", "make_digits_cnn"]


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def _load() -> tuple[Dataset, Dataset]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(torch.arange(len(y)).numpy(), test_size=0.2,
                                           random_state=0, stratify=d.target)
    tr, te = torch.as_tensor(idx_train), torch.as_tensor(idx_test)
    return Dataset(tensors=(x[tr], y[tr])), Dataset(tensors=(x[te], y[te]))


def _loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="sum")


def _accuracy(eval_set: Dataset) -> Callable[[nn.Module, torch.device], tuple[str, float]]:
    def evaluate(model: nn.Module, device: torch.device) -> tuple[str, float]:
        assert eval_set.tensors is not None
        x, y = (t.to(device) for t in eval_set.tensors)
        with torch.no_grad():
            pred = model(x).argmax(dim=1)
        return "test_accuracy", float((pred == y).float().mean().item())
    return evaluate


def make_digits_cnn(width: int = 16) -> Workload:
    train, test = _load()
    w = Workload(name="digits-cnn", build_model=lambda: DigitsCNN(width), train_set=train,
                 eval_set=test, loss=_loss, evaluate=_accuracy(test),
                 info={"data": "scikit-learn load_digits (1,797 8x8 images, BSD-3-Clause)",
                       "train_samples": len(train), "test_samples": len(test)})
    w.flops_per_sample = count_train_flops(w.build_model(), _loss, train.take(torch.arange(2)))
    return w
