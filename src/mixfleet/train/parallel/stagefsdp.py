"""FSDP2 inside a pipeline stage (``stage_mode = "fsdp"``; see docs/pipeline.md, "fsdp
inside a stage").

A stage's parameters are gathered **once per step**, not once per micro-batch:

- ``reshard_after_forward=False``: a micro-batch's forward keeps its block's parameters
  gathered, and the schedule itself keeps them gathered through every backward but the
  last (``PipelineStage`` sets ``reshard_after_backward`` only on the last micro-batch),
  so the parameters are gathered at the step's first forward and freed after its last
  backward, as torchtitan runs FSDP under pipeline parallelism;
- :func:`prefetch` issues every gather of the stage at the start of the step, before the
  schedule waits for its first input, so a later stage's gathers overlap with the earlier
  stages' first micro-batches instead of following them;
- the gradients are summed (divide factor 1; the loss is already / B) and reduce-scattered
  once per step by the schedule's end-of-backward hook.

The price is memory: the whole stage's gathered parameters and its unsharded gradients are
held through the step (:attr:`~.split.ModelBytes.gathered_factor` counts them in the split).
Parameters compute in ``param_dtype`` (``auto``: bf16 on accelerators, fp32 on the CPU) and
gradients reduce in fp32, as under ``mode = "fsdp"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["shard_stage", "prefetch", "reshard"]


def shard_stage(modules: Sequence[nn.Module], blocks_attr: str, group: Any,
                device: torch.device, param_dtype: torch.dtype) -> list[Any]:
    """FSDP2 over ``group`` on each block of ``modules`` (a stage's modules), then on each
    stage module; returns every FSDP module, outermost last."""
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    mesh = DeviceMesh.from_group(group, device_type=device.type)
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for m in modules:
        for blk in getattr(m, blocks_attr).values():
            fully_shard(blk, mesh=mesh, mp_policy=mp, reshard_after_forward=False)
        fully_shard(m, mesh=mesh, mp_policy=mp, reshard_after_forward=False)
    out = [sub for m in modules for sub in m.modules() if isinstance(sub, FSDPModule)]
    for sub in out:
        sub.set_gradient_divide_factor(1.0)
        sub.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no PREMUL_SUM)
    return out


def prefetch(fsdp_modules: Sequence[Any]) -> None:
    """Start gathering every module's parameters now (FSDP waits for them in each module's
    pre-forward)."""
    for m in fsdp_modules:
        m.unshard(async_op=True)


def reshard(fsdp_modules: Sequence[Any]) -> None:
    """Free the gathered parameters (after a forward-only pass, which keeps them)."""
    for m in fsdp_modules:
        m.reshard()
