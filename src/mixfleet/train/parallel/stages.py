"""A workload's model cut into pipeline stages (see docs/pipeline.md).

A stage is a :class:`StageModule` that holds *the model's own modules* under *the model's
own names*: the first stage the embeddings, every stage a contiguous run of blocks (the
workload's ``shard_units``), the last one the final norm and the head. A stage's
``state_dict()`` keys are therefore the model's (``layers.5.attn.q_proj.weight``, never a
stage-local ``layers.0...``), so a checkpoint written under one split loads under another,
or under dp/fsdp.

How a model family runs in pieces (what its ``forward`` does before, between and after
the blocks) is a :class:`Parts`; :func:`parts_for` knows the built-in decoders (``llama``,
``char-gpt``). The loss is the workload's own ``loss(model, batch)`` with the last stage's
output standing in for the model (:func:`stage_loss`), divided by the global batch B as
in every mode (docs/pipeline.md, "Exactness").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mixfleet.errors import ConfigError
from mixfleet.workloads.base import Batch

__all__ = ["Parts", "StageModule", "parts_for", "stage_loss", "block_count", "split_bounds",
           "tied_parameters"]


@dataclasses.dataclass(frozen=True)
class Parts:
    """How a model family runs in pieces: the names of its modules before the blocks
    (``first``), the attribute holding the blocks, the names after them (``last``), and
    the three pieces of its forward."""

    first: tuple[str, ...]
    blocks: str
    last: tuple[str, ...]
    embed: Callable[[Any, torch.Tensor], torch.Tensor]  # (stage, ids) -> hidden
    block: Callable[[Any, Any, torch.Tensor], torch.Tensor]  # (stage, block, hidden)
    head: Callable[[Any, torch.Tensor], torch.Tensor]  # (stage, hidden) -> output


def _llama_parts(model: Any) -> Parts:
    from mixfleet.workloads.llama import LlamaConfig, rotary

    cfg: LlamaConfig = model.cfg

    def block(stage: Any, blk: Any, h: torch.Tensor) -> torch.Tensor:
        cos, sin = rotary(h.shape[1], cfg.head_dim, cfg.rope_theta, h.device)
        return blk(h, cos.to(h.dtype), sin.to(h.dtype))

    return Parts(first=("embed",), blocks="layers", last=("norm", "head"),
                 embed=lambda s, ids: s.embed(ids), block=block,
                 head=lambda s, h: s.head(s.norm(h)))


def _chargpt_parts(model: Any) -> Parts:
    def embed(s: Any, ids: torch.Tensor) -> torch.Tensor:
        return s.tok(ids) + s.pos(torch.arange(ids.shape[1], device=ids.device))

    return Parts(first=("tok", "pos"), blocks="blocks", last=("ln", "head"), embed=embed,
                 block=lambda s, blk, h: blk(h), head=lambda s, h: s.head(s.ln(h)))


def parts_for(model: nn.Module) -> Parts:
    """The :class:`Parts` of a built-in decoder; ConfigError for any other model."""
    from mixfleet.workloads.chargpt import CharGPT
    from mixfleet.workloads.llama import Llama

    if isinstance(model, Llama):
        return _llama_parts(model)
    if isinstance(model, CharGPT):
        return _chargpt_parts(model)
    raise ConfigError(f"parallel.mode = 'pipeline' does not know how to cut a "
                      f"{type(model).__name__} into stages; use workload.name = 'llama' or "
                      f"'char-gpt', or parallel.mode = 'dp' / 'fsdp'")


def tied_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters shared between the first stage's modules and the last stage's (a head
    tied to the input embedding): each end holds a copy on its own rank, and the two
    copies' gradients must be summed (see :class:`~.pipeline.PipelineRank`)."""
    parts = parts_for(model)
    first = {id(q): q for n in parts.first for q in getattr(model, n).parameters()}
    return [q for n in parts.last for q in getattr(model, n).parameters() if id(q) in first]


def block_count(model: nn.Module) -> int:
    """How many blocks the model has (what a split divides)."""
    return len(getattr(model, parts_for(model).blocks))


class StageModule(nn.Module):
    """Blocks ``lo..hi-1`` of ``model`` (plus the embeddings when ``first``, the final
    norm and head when ``last``), sharing the model's modules and keeping their names."""

    def __init__(self, model: nn.Module, lo: int, hi: int, *, first: bool, last: bool) -> None:
        super().__init__()
        self._parts = parts_for(model)
        blocks = list(getattr(model, self._parts.blocks))
        if not 0 <= lo <= hi <= len(blocks) or (lo == hi and not (first or last)):
            raise ConfigError(f"a stage's blocks {lo}..{hi - 1} are out of the model's "
                              f"{len(blocks)} blocks (0..{len(blocks) - 1}); give every stage "
                              f"at least one block")
        self.first, self.last, self.lo, self.hi = first, last, lo, hi
        self.blocks_attr = self._parts.blocks
        for name in self._parts.first if first else ():
            self.add_module(name, getattr(model, name))
        # A ModuleDict keyed by the block's index in the model: names stay the model's.
        self.add_module(self._parts.blocks,
                        nn.ModuleDict({str(i): blocks[i] for i in range(lo, hi)}))
        for name in self._parts.last if last else ():
            self.add_module(name, getattr(model, name))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        p = self._parts
        if self.first:
            h = p.embed(self, h)
        elif h.is_floating_point():  # from a stage computing in another dtype (fsdp's bf16)
            dt = next(self.parameters()).dtype
            h = h if h.dtype == dt else h.to(dt)
        for blk in getattr(self, p.blocks).values():
            h = p.block(self, blk, h)
        return p.head(self, h) if self.last else h


class _Given(nn.Module):
    """A stand-in model whose output is already computed (the last stage's)."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, *_: torch.Tensor) -> torch.Tensor:
        return self.out


def stage_loss(loss: Callable[[nn.Module, Batch], torch.Tensor], global_batch: int
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The schedule's ``loss_fn(output, target)``: the workload's summed loss of a
    micro-batch divided by the global batch ``B`` (so the schedule must not divide again:
    ``scale_grads=False``)."""

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss(_Given(out), (target, target)) / global_batch

    return loss_fn


def split_bounds(blocks_per_stage: Sequence[int]) -> list[tuple[int, int]]:
    """``[3, 5]`` -> ``[(0, 3), (3, 8)]``: each stage's block range."""
    out, lo = [], 0
    for n in blocks_per_stage:
        out.append((lo, lo + n))
        lo += n
    return out
