"""``[parallel] mode = "pipeline"`` as a reduction strategy: the trainer's loop, the step
manager and the checkpoint manager talk to it as to dp or fsdp (see docs/pipeline.md,
"In the trainer").

The schedule runs the step (:meth:`PipelineStrategy.run_schedule` hands the whole global
batch to :class:`~mixfleet.train.parallel.pipeline.PipelineRank`), the stage's ranks sum
their gradients inside it, and :meth:`reduce` then sums one small buffer over **every**
rank of every stage: ``[signals | loss | sum of squared gradients | sum of gradients]``.
The loss comes from the last stage only; each stage's gradient counts once (from its
first rank under dp, from every rank's shard under fsdp; a tied weight from the first
stage only), so every rank of every stage sees the same loss and gradient norm and takes
the same commit, skip and clipping decision.

State is keyed by the model's own parameter names (the stage modules keep them) and the
optimizer state is flattened per parameter, so a checkpoint written under one split, one
number of stages, or under dp/fsdp loads under any other: each rank asks DCP for its own
stage's keys only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from mixfleet.emulate.stagepace import ChunkPacer
from mixfleet.train.exchange import all_gather_json
from mixfleet.train.parallel.pipeline import PipelineRank
from mixfleet.train.parallel.strategy import ReductionStrategy

if TYPE_CHECKING:
    from mixfleet.emulate.links import LinkPacer
    from mixfleet.train.parallel.pipeplan import PipelinePlan

__all__ = ["PipelineStrategy", "RankModules"]


class RankModules(nn.Module):
    """This rank's stage modules as one module under the model's names (several with
    virtual stages: their blocks merged into one ``ModuleDict`` keyed by model index)."""

    def __init__(self, modules: list[Any]) -> None:
        super().__init__()
        blocks: dict[str, nn.Module] = {}
        for m in modules:
            for name, child in m.named_children():
                if name == m.blocks_attr:
                    blocks.update(child.items())
                else:
                    self.add_module(name, child)
        self.add_module(modules[0].blocks_attr, nn.ModuleDict(blocks))


class PipelineStrategy(ReductionStrategy):
    """One rank of a pipeline; see the module docstring."""

    name = "pipeline"
    collective_forward = True  # evaluation gathers the stages: every rank takes part
    runs_schedule = True  # the step manager hands over the whole global batch

    def __init__(self, model: nn.Module, *, plan: PipelinePlan, rank: int, device: torch.device,
                 world: int, group: Any, loss: Any, global_batch: int,
                 pacer: LinkPacer | None = None, param_dtype: torch.dtype = torch.float32
                 ) -> None:
        self.plan = plan
        self.pipe = PipelineRank(model, plan.layout, rank=rank, loss=loss,
                                 global_batch=global_batch, microbatches=plan.microbatches,
                                 schedule=plan.schedule, stage_mode=plan.stage_mode,
                                 device=device, param_dtype=param_dtype)
        self.chunks = ChunkPacer()  # times every chunk (an emulated chip: paces it too)
        self.pipe.pace(self.chunks)
        mods = self.pipe.modules
        super().__init__(mods[0] if len(mods) == 1 else RankModules(mods), device=device,
                         world=world, group=group, pacer=pacer)
        self.full_model = model
        self.rank = rank
        # the control buffer lives on the host: summed over gloo (a device backend's group
        # may not take host tensors)
        self._ctl_group = (group if dist.get_backend(group) == "gloo" else
                           dist.new_group(backend="gloo"))
        self.optimizer_foreach = True if self.pipe.sharded else None
        lead = plan.layout.first_rank(self.pipe.stage) == rank
        tied = {id(q) for q in self.pipe._tied}
        # the parameters whose gradients this rank counts in the global norm and sum
        self._counted = ([q for q in self.pipe.params] if self.pipe.sharded else
                         [q for q in self.pipe.params if lead and
                          (id(q) not in tied or self.pipe.is_first)])

    # -- the step ---------------------------------------------------------------------------
    def bind(self, n_control: int) -> torch.Tensor:
        self.buf = torch.zeros(n_control + 3, dtype=torch.float64, device="cpu")
        self.control = self.buf[: n_control + 1]
        self._loss_slot = self.control[-1:]
        return self.control

    def zero_grad(self) -> None:
        for q in self.pipe.params:
            q.grad = None
        self.buf.zero_()

    def run_schedule(self, batch: Any) -> None:
        """Forward and backward of the whole global ``batch`` through the schedule (only
        the first and last stages read it; others may pass None), gradients summed in the
        stage; the step's loss (already / B) into the loss slot on the last stage."""
        self.chunks.begin_step()
        loss = self.pipe.forward_backward(batch)
        if loss is not None:
            self._loss_slot.add_(loss.detach().to("cpu", torch.float64))

    def backward(self, scaled_loss: torch.Tensor, *, last: bool = True) -> None:
        raise RuntimeError("pipeline: the schedule runs the backward (run_schedule)")

    def _local(self, q: torch.Tensor) -> torch.Tensor:
        g = q.grad
        assert g is not None
        return g.to_local() if hasattr(g, "to_local") else g

    def reduce(self) -> None:
        acc = torch.zeros(2, dtype=torch.float64, device=self.device)  # one copy to host
        for q in self._counted:
            if q.grad is not None:
                g = self._local(q).detach().to(torch.float64)
                acc[0] += g.pow(2).sum()
                acc[1] += g.sum()
        self.buf[-2:] = acc.cpu()
        if self.world > 1:
            dist.all_reduce(self.buf, group=self._ctl_group)

    def grad_size(self, norm: bool) -> float:
        return float(self.buf[-2].sqrt() if norm else self.buf[-1])

    def poison_grads(self) -> None:
        for q in self.pipe.params:
            if q.grad is not None:
                self._local(q).fill_(float("nan"))

    def scale_grads(self, factor: float) -> None:
        for q in self.pipe.params:
            if q.grad is not None:
                self._local(q).mul_(factor)

    def materialize_grads(self) -> None:
        for q in self.pipe.params:
            if q.grad is None:
                q.grad = torch.zeros_like(q)

    # -- state ------------------------------------------------------------------------------
    def snapshot_tensors(self, opt: torch.optim.Optimizer) -> list[tuple[str, torch.Tensor]]:
        """This rank's tensors (a sharded stage's: its local shards)."""
        return [(k, v.to_local() if hasattr(v, "to_local") else v)
                for k, v in super().snapshot_tensors(opt)]

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model on rank 0 (CPU tensors; a collective: every rank calls it, the
        others get an empty dict). Each stage's first rank sends its stage's weights."""
        if self.pipe.sharded:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            own: dict[str, Any] = dict(get_model_state_dict(
                self.model, options=StateDictOptions(full_state_dict=True)))
        else:
            own = dict(self.model.state_dict())
        layout = self.plan.layout
        lead = layout.first_rank(self.pipe.stage) == self.rank
        keys = sorted(own)
        listed = all_gather_json(
            [[k, list(own[k].shape), str(own[k].dtype).removeprefix("torch.")] for k in keys]
            if lead and self.rank != 0 else [])
        host = dist.get_backend() == "gloo"
        if self.rank != 0:
            if lead:
                for k in keys:
                    t = own[k].detach()
                    dist.send((t.cpu() if host else t).contiguous(), dst=0)
            return {}
        out = {k: v.detach().to("cpu", copy=True) for k, v in own.items()}
        dev = torch.device("cpu") if host else self.device
        for src, entries in enumerate(listed):
            for k, shape, dtype in entries:
                buf = torch.empty(shape, dtype=getattr(torch, dtype), device=dev)
                dist.recv(buf, src=src)
                out[k] = buf.cpu()
        for k, v in self.full_model.state_dict().items():  # buffers outside every stage
            out.setdefault(k, v.detach().to("cpu", copy=True))
        return out
