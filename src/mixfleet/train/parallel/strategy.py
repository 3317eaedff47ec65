"""Reduction strategies: how a step's gradients (and its control region) are summed.

The trainer's loop only talks to :class:`ReductionStrategy`. ``dp`` (:class:`DataParallel`)
replicates the model and sums one flat buffer per step: the parameters' ``.grad`` are views
of it, and the control region (health signals and the loss, see
:mod:`mixfleet.train.health.signals`) rides at its end, so a step costs one all-reduce. A sharded
strategy (FSDP2) reduce-scatters gradients itself and all-reduces the tiny control region on
its own; it plugs in here without touching the loop.

Every rank scales its summed loss by 1/B of the global batch and gradients are **summed**
across ranks, so any split of the global batch gives the same update up to float rounding.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)

from mixfleet.config import field, require
from mixfleet.train.parallel.flatopt import FlatSGD
from mixfleet.train.parallel.pipeconfig import PipelineConfig

if TYPE_CHECKING:
    from mixfleet.emulate.links import LinkPacer

__all__ = ["ParallelConfig", "ReductionStrategy", "DataParallel", "shard_units", "sum_small"]


@dataclasses.dataclass(kw_only=True, frozen=True)
class ParallelConfig(PipelineConfig, section="parallel"):
    """The ``[parallel]`` table (the pipeline fields: :class:`PipelineConfig`)."""

    mode: Literal["dp", "fsdp", "pipeline", "auto"] = field(
        "dp", help="dp: a replica per rank, one flat all-reduce (small models); fsdp: FSDP2, "
                   "parameters, gradients and optimizer state sharded over the ranks; "
                   "pipeline: a stage per chip kind, only activations cross between kinds "
                   "(docs/pipeline.md); auto: the cost model's fastest plan that fits, "
                   "chosen at launch (`mixfleet plan-job` shows it)")
    param_dtype: Literal["auto", "fp32", "bf16"] = field(
        "auto", help="fsdp compute dtype of the parameters (auto: bf16 on accelerators, "
                     "fp32 on the CPU); gradients are reduced in fp32")
    reshard_after_forward: bool = field(True, help="fsdp: free gathered parameters after "
                                                   "the forward (less memory, one more "
                                                   "all-gather in backward)")
    activation_checkpointing: bool = field(False, help="fsdp: recompute each block's "
                                                       "activations in the backward pass")
    compile: bool = field(False, help="fsdp: torch.compile each block")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.mode == "pipeline" or not self.stages, f"parallel.stages are given but "
                f"parallel.mode = {self.mode!r}; set mode = 'pipeline' or remove "
                f"[[parallel.stages]]")

AllReduce = Callable[[torch.Tensor], None]
_FLAT = StateDictOptions(flatten_optimizer_state_dict=True)


class ReductionStrategy(abc.ABC):
    """The parallelism of one rank's model: buffers, backward, reduction, state."""

    name: str = ""
    control: torch.Tensor  # [signals | loss]: summed across ranks by reduce()
    _loss_slot: torch.Tensor  # control[-1:], where backward() adds the loss
    uniform_micro_batches = False  # every rank must run the same number of micro-batches
    collective_forward = False  # every rank must run every forward (evaluation included)
    optimizer_foreach: bool | None = None  # the optimizer's multi-tensor path (None: default)
    runs_schedule = False  # run_schedule(global batch) replaces the micro-batch loop

    def __init__(self, model: nn.Module, *, device: torch.device, world: int, group: Any,
                 all_reduce: AllReduce | None = None,
                 control_reduce: AllReduce | None = None,
                 pacer: LinkPacer | None = None) -> None:
        self.model, self.device, self.world, self.group = model, device, world, group
        self._all_reduce = all_reduce  # a mixed fleet's (hierarchical) all-reduce
        self._control_reduce = control_reduce  # and its one-phase one for a few values
        self.pacer = pacer  # emulated links: the model's transfers take their priced time

    @abc.abstractmethod
    def bind(self, n_control: int) -> torch.Tensor:
        """Allocate the buffers (once the optimizer exists); returns the control region
        of ``n_control + 1`` floats (the last one is the loss)."""

    @abc.abstractmethod
    def zero_grad(self) -> None:
        """Zero gradients and the control region before a step."""

    def backward(self, scaled_loss: torch.Tensor, *, last: bool = True) -> None:
        """Backpropagate one micro-batch's loss (already scaled by 1/B) and add it to the
        loss slot. ``last``: the step's last micro-batch on this rank."""
        scaled_loss.backward()
        self._loss_slot.add_(scaled_loss.detach())

    def run_schedule(self, batch: Any) -> None:
        """Forward and backward of the whole global ``batch`` (strategies that set
        ``runs_schedule``: a pipeline's schedule)."""
        raise NotImplementedError(f"{self.name} runs micro-batches through backward()")

    @abc.abstractmethod
    def reduce(self) -> None:
        """Sum gradients and the control region across ranks."""

    @abc.abstractmethod
    def grad_size(self, norm: bool) -> float:
        """The global gradient's L2 norm (``norm``) or its sum (NaN/inf propagate)."""

    def grad_size_into(self, out: torch.Tensor, norm: bool) -> bool:
        """Write :meth:`grad_size` into ``out`` (a 0-d slot of the control region, on the
        device) without reading it, so that it reaches the host with the loss in the
        region's one copy; False where this strategy does not (then :meth:`grad_size`)."""
        return False

    @abc.abstractmethod
    def poison_grads(self) -> None:
        """Make this rank's gradient NaN (fault injection)."""

    @abc.abstractmethod
    def scale_grads(self, factor: float) -> None:
        """Multiply the (reduced) gradient by ``factor`` (gradient clipping)."""

    def optimizer_step(self, opt: torch.optim.Optimizer) -> None:
        """Apply the (reduced) gradients: ``opt.step()``."""
        opt.step()

    def state_generation(self, opt: torch.optim.Optimizer) -> int:
        """Changes when the tensors of :meth:`snapshot_tensors` were replaced (the
        snapshot then maps the new ones)."""
        return 0

    def materialize_grads(self) -> None:  # noqa: B027 - a no-op unless gradients are lazy
        """Make every gradient exist (zeros) so that an optimizer step creates its state."""

    def state_dict(self, opt: torch.optim.Optimizer) -> dict[str, Any]:
        """Model and optimizer tensors for DCP, by parameter name. The optimizer state is
        flattened per parameter (``state.<name>.exp_avg``, ``param_groups.<name>.lr``), so
        a rank that holds only some of the parameters (a pipeline stage, another split)
        reads exactly theirs."""
        model_sd, optim_sd = get_state_dict(self.model, opt, options=_FLAT)
        return {"model": model_sd, "optim": optim_sd}

    def load_state_dict(self, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        set_state_dict(self.model, opt, model_state_dict=state["model"],
                       optim_state_dict=state["optim"], options=_FLAT)

    def snapshot_tensors(self, opt: torch.optim.Optimizer) -> list[tuple[str, torch.Tensor]]:
        """This rank's tensors for an in-memory snapshot (copied in and out in place)."""
        named = list(self.model.state_dict().items())
        params = [p for g in opt.param_groups for p in g["params"]]
        for i, p in enumerate(params):
            for k, v in sorted(opt.state.get(p, {}).items()):
                if isinstance(v, torch.Tensor):
                    named.append((f"optim.{i}.{k}", v))
        return named

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model's weights as CPU tensors (``final/model.pt``)."""
        return {k: v.detach().to("cpu", copy=True)  # (not views of a flat buffer)
                for k, v in self.model.state_dict().items()}


class DataParallel(ReductionStrategy):
    """``dp``: a replica per rank; one flat buffer ``[gradients | signals | loss]`` and
    one all-reduce per step. The weights are views of one more flat buffer, so that SGD
    steps the whole model at once (:class:`~mixfleet.train.parallel.flatopt.FlatSGD`)."""

    name = "dp"
    flat_sgd: FlatSGD | None = None
    _loss_host: Any = None  # the loss slot as a numpy view when the buffer is host memory

    def bind(self, n_control: int) -> torch.Tensor:
        params = [p for p in self.model.parameters() if p.requires_grad]
        n = sum(p.numel() for p in params)
        self.flat = torch.zeros(n + n_control + 1, device=self.device)
        self.grads, self.control = self.flat[:n], self.flat[n:]
        self._loss_slot = self.control[-1:]
        if self.flat.device.type == "cpu":
            self._loss_host = self._loss_slot.numpy()
        flat_weights = bool(params) and all(p.dtype == self.flat.dtype for p in params)
        self.weights = torch.empty(n if flat_weights else 0, device=self.device)
        off = 0
        with torch.no_grad():
            for p in params:
                p.grad = self.flat[off: off + p.numel()].view_as(p)
                if flat_weights:  # the parameters move into one buffer too (FlatSGD)
                    w = self.weights[off: off + p.numel()].view_as(p)
                    w.copy_(p)
                    p.data = w
                off += p.numel()
        if flat_weights:
            self.flat_sgd = FlatSGD(params, self.weights, self.grads)
        return self.control

    def backward(self, scaled_loss: torch.Tensor, *, last: bool = True) -> None:
        scaled_loss.backward()
        if self._loss_host is not None:  # a float32 add in place, as add_ does, without
            self._loss_host[0] += scaled_loss.item()  # two tensor ops (~4 us in a step)
        else:
            self._loss_slot.add_(scaled_loss.detach())

    def optimizer_step(self, opt: torch.optim.Optimizer) -> None:
        if self.flat_sgd is None:
            opt.step()
        else:
            self.flat_sgd.step(opt)

    def state_generation(self, opt: torch.optim.Optimizer) -> int:
        if self.flat_sgd is None:
            return 0
        self.flat_sgd.link(opt)  # a replaced state goes back into the flat buffer now
        return self.flat_sgd.generation

    def zero_grad(self) -> None:
        self.flat.zero_()

    def reduce(self) -> None:
        t = self.pacer.arrive() if self.pacer is not None else 0.0
        if self._all_reduce is not None:
            self._all_reduce(self.flat)
        elif self.world > 1:
            dist.all_reduce(self.flat, group=self.group)
        if self.pacer is not None and self.world > 1:  # the whole logical all-reduce
            self.pacer.settle("all_reduce", self.pacer.nbytes(
                "all_reduce", self.grads.numel(), self.flat.element_size()), t)

    def grad_size(self, norm: bool) -> float:
        return float((self.grads.norm() if norm else self.grads.sum()).item())

    def grad_size_into(self, out: torch.Tensor, norm: bool) -> bool:
        if norm:
            torch.linalg.vector_norm(self.grads, out=out)
        else:
            torch.sum(self.grads, 0, out=out)
        return True

    def poison_grads(self) -> None:
        self.grads.fill_(float("nan"))

    def scale_grads(self, factor: float) -> None:
        self.grads.mul_(factor)


def sum_small(t: torch.Tensor, group: Any, rank: int, world: int) -> None:
    """Sum a few values (a control region, on the host) over the ``world`` ranks of
    ``group`` (gloo), in place: every rank sends its values to every other rank at once and
    adds what it receives in rank order, so every rank gets the same bits after one message
    of latency (a ring all-reduce waits for 2(n-1) messages in turn). ``rank``: this rank's
    index in ``group``."""
    if world <= 1:
        return
    peer = (lambda i: i) if group is None else (lambda i: dist.get_global_rank(group, i))
    got = {i: torch.empty_like(t) for i in range(world) if i != rank}
    reqs = [dist.isend(t, dst=peer(i), group=group) for i in got]
    reqs += [dist.irecv(buf, src=peer(i), group=group) for i, buf in got.items()]
    for q in reqs:
        if q is not None:
            q.wait()
    acc = got.get(0, t).clone()
    for i in range(1, world):
        acc.add_(got.get(i, t))
    t.copy_(acc)


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The blocks to shard one by one: the entries of the model's largest ``ModuleList`` or
    ``Sequential`` of blocks of one type (a transformer's layers), or none (then only the
    root is sharded)."""
    lists: list[list[nn.Module]] = [
        list(m) for m in model.modules() if isinstance(m, (nn.ModuleList, nn.Sequential))
        and len(m) > 1 and len({type(c) for c in m}) == 1]
    return max(lists, key=len) if lists else []
