"""The workload interface: a model, its real data, its loss and its FLOPs per sample.

A workload is what ``[workload] name = ...`` selects: a built-in (``digits-cnn``,
``char-gpt``) or a user's ``package.module:function`` (see :mod:`mixfleet.workloads.user`).
The trainer only uses this interface, so any of them trains, checkpoints and resumes the
same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixfleet.config import Section, field
from mixfleet.errors import ConfigError

__all__ = ["WorkloadConfig", "Dataset", "Workload", "count_train_flops"]

# A batch as the trainer hands it to ``loss``: a tuple of tensors (inputs..., targets).
Batch = tuple[torch.Tensor, ...]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Samples as aligned tensors (first dimension = sample), or any map-style dataset."""

    tensors: tuple[torch.Tensor, ...] | None = None
    items: Any = None  # a torch.utils.data.Dataset-like object (``__len__``, ``__getitem__``)

    def __post_init__(self) -> None:
        if (self.tensors is None) == (self.items is None):
            raise ValueError("Dataset needs exactly one of tensors= or items=")

    def __len__(self) -> int:
        if self.tensors is not None:
            return int(self.tensors[0].shape[0])
        return len(self.items)

    def take(self, index: torch.Tensor) -> Batch:
        """The samples at ``index`` (an int64 tensor) as a batch of stacked tensors."""
        ts = self.tensors
        if ts is not None:
            if len(ts) == 2:  # (inputs, targets) without a comprehension's frame, every step
                return ts[0][index], ts[1][index]
            return tuple([t[index] for t in ts])  # (a list: cheaper per step)
        take_batch = getattr(self.items, "take_batch", None)
        if callable(take_batch):  # gathers a whole batch at once (token windows)
            return tuple(take_batch(index))
        from torch.utils.data import default_collate

        rows = [self.items[int(i)] for i in index]
        out = default_collate(rows)
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)


@dataclasses.dataclass(kw_only=True)
class Workload:
    """A model family with its data.

    ``loss(model, batch)`` returns the **sum** of the per-sample losses of ``batch`` (the
    trainer scales by 1/B of the global batch, so gradients do not depend on the number of
    ranks). ``evaluate(model, device)`` returns ``(metric_name, value)`` on held-out data.
    ``shard_units(model)`` lists the model's blocks (LLM workloads), else None.
    """

    name: str
    build_model: Callable[[], nn.Module]
    train_set: Dataset
    eval_set: Dataset | None
    loss: Callable[[nn.Module, Batch], torch.Tensor]
    evaluate: Callable[[nn.Module, torch.device], tuple[str, float]] | None = None
    flops_per_sample: float | None = None  # forward + backward, per training sample
    # The blocks a sharding strategy wraps one by one (e.g. ``fully_shard`` per transformer
    # block), in order; None where the model is not made of blocks.
    shard_units: Callable[[nn.Module], list[nn.Module]] | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def count_train_flops(model: nn.Module, loss: Callable[[nn.Module, Batch], torch.Tensor],
                      batch: Batch) -> float:
    """FLOPs of one forward + backward pass per sample, counted by torch's FlopCounterMode
    (matmuls and convolutions; elementwise work is not counted, as in MFU conventions)."""
    from torch.utils.flop_counter import FlopCounterMode

    n = int(batch[0].shape[0])
    counter = FlopCounterMode(display=False)
    with counter:
        loss(model, batch).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / n


@dataclasses.dataclass(kw_only=True, frozen=True)
class WorkloadConfig(Section, section="workload"):
    """The ``[workload]`` table of a run config: what to train."""

    name: str = field(help="built-in workload (digits-cnn, char-gpt, llama), hf:<dir> (a "
                           "transformers causal LM from a local directory), or "
                           "'package.module:function' returning model, dataset and loss")
    options: dict[str, Any] = field({}, help="keyword arguments for the workload")
    path: str = field("", help="folder to import a 'package.module:function' workload from "
                               "(after installed packages; relative: to the config file); "
                               "default: the config file's folder when it is yours and not "
                               "writable by group or others; never the working directory")

    def __post_init__(self) -> None:
        from mixfleet.workloads import check_workload_name

        check_workload_name(self.name)
        if self.path and not Path(self.path).is_dir():
            raise ConfigError(f"workload.path {self.path!r} is not a directory; set [workload] "
                              f"path to the folder holding your workload's module")
