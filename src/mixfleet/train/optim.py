"""The optimizer and the LR schedule of ``[train]``."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from mixfleet.train.config import TrainConfig

__all__ = ["lr_factor", "build_optimizer"]


def lr_factor(step: int, steps: int, warmup: int, schedule: str) -> float:
    """LR multiplier at ``step``: linear warmup, then constant or cosine down to 10%."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(params: Iterable[torch.nn.Parameter], t: TrainConfig, *,
                    foreach: bool | None = None
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """SGD with momentum or AdamW, with the LR schedule of ``t``. ``foreach``: the
    optimizer's multi-tensor implementation (None: PyTorch's default for the device)."""
    params = list(params)
    opt: torch.optim.Optimizer
    if t.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                              foreach=foreach)
    else:
        opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, foreach=foreach)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, t.steps, t.warmup_steps, t.schedule))
    return opt, sched
