"""A user's own model under mixfleet: a small MLP on scikit-learn's wine data.

    mixfleet train examples/custom.toml --nproc 2

mixfleet imports ``custom_model:build`` from the config file's folder (``examples/``: yours,
not writable by group or others; an installed package or ``[workload] path`` work too, the
working directory never does) and calls it with the ``[workload.options]`` table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def build(hidden: int = 32) -> dict:
    from sklearn.datasets import load_wine

    d = load_wine()
    x = torch.tensor(d.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(d.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    train, test = perm[:140], perm[140:]
    return {
        # a callable: mixfleet seeds, then builds, so every rank starts from the same weights
        "model": lambda: nn.Sequential(nn.Linear(13, hidden), nn.ReLU(), nn.Linear(hidden, 3)),
        "dataset": (x[train], y[train]),
        "eval_dataset": (x[test], y[test]),
        # the SUM over the batch: mixfleet scales by 1/global_batch itself
        "loss": lambda out, target: F.cross_entropy(out, target, reduction="sum"),
        "metric": lambda out, target: (out.argmax(1) == target).float().mean().item(),
        "metric_name": "test_accuracy",
    }
