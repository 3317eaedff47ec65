"""``fsdp``: sharded data parallel with FSDP2 (``torch.distributed.fsdp.fully_shard``).

Each transformer block (the workload's ``shard_units``) and the root are sharded over the
job's ranks; parameters are gathered for forward and backward and gradients
reduce-scattered, so each rank holds 1/N of the parameters, gradients and optimizer
state. The loop does not change (see :mod:`mixfleet.train.parallel.strategy`); three things differ
from ``dp`` and are handled here:

- FSDP2 divides reduced gradients by the world size; mixfleet's loss is already scaled
  by 1/B of the global batch, so the divide factor is set to 1 on every sharded module:
  gradients are **summed**, and any split of the global batch gives the same update.
- Its all-gathers and reduce-scatters are collectives that every rank must issue in the
  same order, so with uneven shares every rank runs the same number of micro-batches
  (``uniform_micro_batches``; a rank with fewer samples runs a stand-in that contributes
  nothing) and gradient sync is off until the last one.
- The control region (health signals, the loss) and each rank's sum of squared gradient
  shards go through one tiny all-reduce of their own after the backward pass; the global
  gradient norm is the square root of that sum (no extra collective). On gloo it is one
  direct exchange between every pair of ranks (:func:`~mixfleet.train.parallel.strategy.sum_small`:
  one message of latency); on a mixed fleet the fleet's version of it, which times its
  wait: a fast rank that waits there for a slow one is not counted as slow by the
  rebalance.

Mixed precision: ``MixedPrecisionPolicy(param_dtype, reduce_dtype=float32)``; the
parameter dtype defaults to bf16 on accelerators and fp32 on the CPU.

Emulated links: with a ``pacer`` every all-gather and reduce-scatter goes through FSDP2's
custom-comm hooks (:func:`paced_comms`): the real gloo
collective runs synchronously, then the pacer waits out its priced time. That removes the
overlap of communication with compute that FSDP's prefetch gives on real hardware (see
``docs/emulation.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from mixfleet.emulate.links import LinkPacer
from mixfleet.train.parallel.strategy import AllReduce, ParallelConfig, ReductionStrategy, sum_small

__all__ = ["FullyShardedDP", "param_dtype_for", "paced_comms"]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def param_bytes_for(name: str) -> int:
    """Bytes per parameter a chip computes in under ``param_dtype = name`` (the cost model's
    and the emulator's price: ``auto`` is bf16 on the accelerators they price)."""
    return 4 if name == "fp32" else 2


def param_dtype_for(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on accelerators, fp32 on the CPU."""
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    return _DTYPES[name]


def _checkpointed(block: nn.Module) -> None:
    """Recompute ``block``'s activations in the backward pass (activation checkpointing)."""
    from torch.utils.checkpoint import checkpoint

    forward = block.forward

    def run(*args: Any, **kwargs: Any) -> Any:
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    block.forward = run


def paced_comms(pacer: LinkPacer, *, numel: int | None = None) -> tuple[Any, Any]:
    """FSDP2 custom all-gather and reduce-scatter comms paced by ``pacer`` (synchronous:
    the real collective, then the wait to its priced time; ``async_op`` is honoured by
    returning no work, which FSDP2 accepts as already done). ``numel``: the elements of
    the module's own parameters, priced instead of FSDP2's buffer (each parameter padded
    to a multiple of the world size: 4% more on the small llama of hetero_pipeline over
    six ranks, none on the llama3-8b it stands for under as_model)."""
    from torch.distributed.fsdp._fully_shard._fsdp_api import AllGather, ReduceScatter

    class PacedAllGather(AllGather):
        def allocate(self, size: Sequence[int | torch.SymInt], *, dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
            return torch.empty(*size, dtype=dtype, device=device)

        def __call__(self, output_tensor: torch.Tensor, input_tensor: torch.Tensor,
                     group: dist.ProcessGroup, async_op: bool = False) -> None:
            t = pacer.arrive()
            _ALL_GATHER(output_tensor, input_tensor, group=group)
            pacer.settle("all_gather", pacer.nbytes(
                "all_gather", numel or output_tensor.numel(), output_tensor.element_size()), t)

    class PacedReduceScatter(ReduceScatter):
        def allocate(self, size: Sequence[int | torch.SymInt], *, dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
            return torch.empty(*size, dtype=dtype, device=device)

        def __call__(self, output_tensor: torch.Tensor, input_tensor: torch.Tensor,
                     group: dist.ProcessGroup, op: Any, async_op: bool = False) -> None:
            t = pacer.arrive()
            _REDUCE_SCATTER(output_tensor, input_tensor, op=op, group=group)
            pacer.settle("reduce_scatter", pacer.nbytes(
                "reduce_scatter", numel or input_tensor.numel(), input_tensor.element_size()), t)

    return PacedAllGather(), PacedReduceScatter()


# torch 2.13 names them ``*_single`` (the ``*_into_tensor`` names are deprecated there); older
# builds, which GPU and NPU users may bring, only have the ``*_into_tensor`` ones
_ALL_GATHER: Any = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_REDUCE_SCATTER: Any = (getattr(dist, "reduce_scatter_single", None)
                        or dist.reduce_scatter_tensor)


class FullyShardedDP(ReductionStrategy):
    """See the module docstring."""

    name = "fsdp"
    uniform_micro_batches = True
    collective_forward = True  # every rank runs every forward (evaluation too)
    # One DTensor dispatch per optimizer op for all parameters, not one per parameter (on
    # the CPU an SGD step of digits-cnn takes 234 us instead of 526 us, AdamW 443 vs 1411).
    optimizer_foreach = True

    def __init__(self, model: nn.Module, *, device: torch.device, world: int, group: Any,
                 units: Sequence[nn.Module], cfg: ParallelConfig,
                 all_reduce: AllReduce | None = None,
                 control_reduce: AllReduce | None = None,
                 pacer: LinkPacer | None = None) -> None:
        super().__init__(model, device=device, world=world, group=group, all_reduce=all_reduce,
                         control_reduce=control_reduce, pacer=pacer)
        from torch.distributed.device_mesh import DeviceMesh
        from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

        pg = group if group is not None else dist.group.WORLD
        assert pg is not None, "fsdp needs an initialized process group"
        mesh = DeviceMesh.from_group(pg, device_type=device.type)
        mp = MixedPrecisionPolicy(param_dtype=param_dtype_for(cfg.param_dtype, device),
                                  reduce_dtype=torch.float32)
        own = {id(u): sum(p.numel() for p in u.parameters()) for u in units}
        own[id(model)] = sum(p.numel() for p in model.parameters()) - sum(own.values())
        for unit in units:
            if cfg.activation_checkpointing:
                _checkpointed(unit)
            if cfg.compile:
                unit.compile()
            fully_shard(unit, mesh=mesh, mp_policy=mp,
                        reshard_after_forward=cfg.reshard_after_forward)
        fully_shard(model, mesh=mesh, mp_policy=mp,
                    reshard_after_forward=cfg.reshard_after_forward)
        self.fsdp_modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for m in self.fsdp_modules:
            m.set_gradient_divide_factor(1.0)  # sum, not mean: the loss is already / B
            m.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no PREMUL_SUM)
        if pacer is not None and world > 1:  # each unit priced by its own parameters
            for m in self.fsdp_modules:
                gather, scatter = paced_comms(pacer, numel=own.get(id(m)))
                m.set_custom_all_gather(gather)
                m.set_custom_reduce_scatter(scatter)
        self.root: Any = model
        self.params = [p for p in model.parameters() if p.requires_grad]

    def bind(self, n_control: int) -> torch.Tensor:
        # [signals | loss | sum of squared gradient shards]
        self._ctl = torch.zeros(n_control + 2, dtype=torch.float32, device=self.device)
        self.control = self._ctl[: n_control + 1]
        return self.control

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
        self._ctl.zero_()

    def materialize_grads(self) -> None:
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def backward(self, scaled_loss: torch.Tensor, *, last: bool = True) -> None:
        self.root.set_requires_gradient_sync(last)
        scaled_loss.backward()
        self.control[-1:].add_(scaled_loss.detach().float())

    def _locals(self) -> list[torch.Tensor]:
        return [p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
                for p in self.params if p.grad is not None]

    def reduce(self) -> None:
        local = self._locals()
        if local:
            norms = torch._foreach_norm([g.float() for g in local])
            self._ctl[-1] = torch.stack(norms).pow(2).sum()
        if self._control_reduce is not None:  # a mixed fleet's: it times its wait
            self._control_reduce(self._ctl)
        elif self.world > 1 and self.device.type == "cpu":  # gloo: one message of latency
            sum_small(self._ctl, self.group, dist.get_rank(self.group), self.world)
        elif self.world > 1:
            dist.all_reduce(self._ctl, group=self.group)

    def grad_size(self, norm: bool) -> float:
        sumsq = float(self._ctl[-1].item())
        return math.sqrt(sumsq) if norm and sumsq >= 0 else sumsq

    def poison_grads(self) -> None:
        for g in self._locals():
            g.fill_(float("nan"))

    def scale_grads(self, factor: float) -> None:
        torch._foreach_mul_(self._locals(), factor)

    def snapshot_tensors(self, opt: torch.optim.Optimizer) -> list[tuple[str, torch.Tensor]]:
        return [(k, v.to_local() if isinstance(v, DTensor) else v)
                for k, v in super().snapshot_tensors(opt)]

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model gathered shard by shard to rank 0's host memory (a collective:
        every rank calls it; ranks other than 0 get an empty dict)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True,
                                                                       cpu_offload=True))
        return {k: v.detach().cpu() for k, v in sd.items() if isinstance(v, torch.Tensor)}
