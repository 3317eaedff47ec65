"""The strategy of ``[parallel] mode``: the one place that knows every strategy (so the
strategies import the interface, never each other)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mixfleet.errors import ConfigError
from mixfleet.train.parallel.fsdp import FullyShardedDP, param_dtype_for
from mixfleet.train.parallel.strategy import (
    AllReduce,
    DataParallel,
    ParallelConfig,
    ReductionStrategy,
    shard_units,
)

if TYPE_CHECKING:
    from mixfleet.emulate.links import LinkPacer
    from mixfleet.train.parallel.pipeplan import PipelinePlan

__all__ = ["make_strategy"]


def make_strategy(cfg: ParallelConfig, model: nn.Module, *, device: torch.device, world: int,
                  group: Any, all_reduce: AllReduce | None = None,
                  control_reduce: AllReduce | None = None,
                  units: Sequence[nn.Module] | None = None,
                  pacer: LinkPacer | None = None, pipeline: PipelinePlan | None = None,
                  rank: int = 0, loss: Any = None, global_batch: int = 0
                  ) -> ReductionStrategy:
    """The strategy of ``[parallel] mode`` (``all_reduce``/``control_reduce``: a mixed
    fleet's timed all-reduce of the gradients and of a control region; ``units``: the
    blocks FSDP shards one by one, by default those of :func:`shard_units`; ``pacer``:
    emulated links, see ``docs/emulation.md``; ``pipeline``: the plan of a pipeline job,
    with this ``rank``, the workload's ``loss`` and the ``global_batch``)."""
    if cfg.mode == "auto":  # resolved at launch (mixfleet.train.autoplan.resolve_auto)
        raise ConfigError("parallel.mode = \"auto\" was not resolved; start the run with "
                          "`mixfleet train`, which picks the mode, or set dp or fsdp")
    if cfg.mode == "pipeline":
        from mixfleet.train.parallel.pipestrategy import PipelineStrategy

        if pipeline is None:
            raise ConfigError("parallel.mode = \"pipeline\" needs the job's plan; start the run "
                              "with `mixfleet train`")
        return PipelineStrategy(model, plan=pipeline, rank=rank, device=device, world=world,
                                group=group, loss=loss, global_batch=global_batch, pacer=pacer,
                                param_dtype=param_dtype_for(cfg.param_dtype, device))
    if cfg.mode == "dp":
        return DataParallel(model, device=device, world=world, group=group,
                            all_reduce=all_reduce, control_reduce=control_reduce, pacer=pacer)
    return FullyShardedDP(model, device=device, world=world, group=group,
                          units=shard_units(model) if units is None else units, cfg=cfg,
                          all_reduce=all_reduce, control_reduce=control_reduce, pacer=pacer)
