"""Pipeline stages x ranks within a stage, on ``torch.distributed.pipelining`` (see
docs/pipeline.md).

The layout (:class:`Layout`): ``P`` physical stages, stage ``s`` on ``ranks[s]`` ranks of
one chip kind (global ranks numbered stage after stage), each holding ``virtual`` stage
modules (interleaved schedules: virtual stage ``j`` lives on physical stage ``j % P``).

Stages may have different numbers of ranks (2 H20s, then 1 P800). A DeviceMesh is
rectangular and a ``PipelineStage`` talks to exactly one previous and one next rank, so
the job runs ``L = max(ranks)`` pipelines side by side, **lanes**: lane ``r`` uses rank
``r % ranks[s]`` of stage ``s`` and its own process group (its ranks in stage order). A
rank of a stage with fewer ranks serves several lanes **at once**: a thread per lane, each
with its own ``PipelineStage`` and schedule over its own replica of the stage modules (the
replicas share the weights' storage and keep their own gradients, summed in lane order
after the step, so the result does not depend on the threads' timing). Run one after the
other instead, the lanes would leave the wider stage's ranks idle in turn, and FSDP inside
it would deadlock (docs/pipeline.md). Every ``ranks[s]`` must divide ``L``.

The math is dp's: the global batch of ``B`` samples (the sampler's, unchanged) is cut into
``L`` contiguous lane slices and each of those into ``microbatches`` equal micro-batches;
each micro-batch's summed loss is divided by ``B`` (:func:`~.stages.stage_loss`), the
schedule's own division by the number of micro-batches is off (``scale_grads=False``),
each lane sums its micro-batches' gradients, a rank its lanes' in lane order, and the
ranks of a stage theirs (one flat all-reduce over the stage's group). The update then
equals one process's step on the whole batch up to the order of the float sums
(docs/pipeline.md, "Exactness").
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mixfleet.errors import ConfigError
from mixfleet.train.parallel.stagefsdp import prefetch, reshard, shard_stage
from mixfleet.train.parallel.stages import StageModule, split_bounds, stage_loss, tied_parameters
from mixfleet.workloads.base import Batch

__all__ = ["Layout", "PipelineRank", "SCHEDULES", "bubble_fraction", "check_schedule",
           "make_schedule", "lane_order"]

SCHEDULES = ("1f1b", "gpipe", "interleaved-1f1b")


def bubble_fraction(stages: int, microbatches: int, virtual: int = 1) -> float:
    """Idle share of a 1F1B / GPipe step: (P-1) / (m + P-1); interleaving with ``virtual``
    stages per rank divides the bubble's length by ``virtual``."""
    idle = (stages - 1) / virtual
    return idle / (microbatches + idle)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Ranks per physical stage and blocks per (virtual) stage; see the module doc."""

    ranks: tuple[int, ...]
    blocks: tuple[int, ...]
    virtual: int = 1

    def __post_init__(self) -> None:
        p = len(self.ranks)
        if p < 2:
            raise ConfigError(f"a pipeline needs at least 2 stages (got {p}); add a "
                              f"[[stages]] entry or use parallel.mode = 'dp'")
        if any(n < 1 for n in self.ranks):
            raise ConfigError(f"every stage needs at least 1 rank (got ranks {list(self.ranks)});"
                              f" set ranks >= 1 in each [[stages]] entry")
        if self.virtual < 1:
            raise ConfigError(f"parallel.virtual_stages must be >= 1 (got {self.virtual}); set "
                              f"virtual_stages = 1")
        if len(self.blocks) != p * self.virtual:
            raise ConfigError(f"{p} stages x {self.virtual} virtual stages need "
                              f"{p * self.virtual} block counts (got {list(self.blocks)}); "
                              f"give one per (virtual) stage")
        if any(b < 1 for b in self.blocks):
            raise ConfigError(f"every stage needs at least 1 block (got {list(self.blocks)}); "
                              f"use fewer stages or a model with more blocks")
        lanes = max(self.ranks)
        odd = [n for n in self.ranks if lanes % n]
        if odd:
            raise ConfigError(f"stage ranks {list(self.ranks)}: each stage's number of ranks "
                              f"must divide the largest ({lanes}); {odd[0]} does not "
                              f"(e.g. ranks 2 and 1, or 4, 2 and 1)")

    @property
    def stages(self) -> int:
        return len(self.ranks)

    @property
    def lanes(self) -> int:
        return max(self.ranks)

    @property
    def world(self) -> int:
        return sum(self.ranks)

    def first_rank(self, stage: int) -> int:
        return sum(self.ranks[:stage])

    def stage_of(self, rank: int) -> int:
        for s in range(self.stages):
            if rank < self.first_rank(s) + self.ranks[s]:
                return s
        raise ValueError(f"rank {rank} is outside the layout's {self.world} ranks")

    def lane_ranks(self, lane: int) -> list[int]:
        """The global ranks of lane ``lane``, stage by stage."""
        return [self.first_rank(s) + lane % n for s, n in enumerate(self.ranks)]

    def lanes_of(self, rank: int) -> list[int]:
        s = self.stage_of(rank)
        return [r for r in range(self.lanes) if self.lane_ranks(r)[s] == rank]


def make_schedule(name: str, stages: list[Any], microbatches: int,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Any:
    """The torch schedule ``name`` (see :data:`SCHEDULES`), summing (not averaging) the
    micro-batches' gradients."""
    from torch.distributed import pipelining as pp

    if name == "interleaved-1f1b":
        return pp.ScheduleInterleaved1F1B(stages, microbatches, loss_fn=loss_fn, scale_grads=False)
    if len(stages) != 1:
        raise ConfigError(f"parallel.schedule = {name!r} runs one stage per rank; set "
                          f"virtual_stages = 1 or schedule = 'interleaved-1f1b'")
    cls = pp.Schedule1F1B if name == "1f1b" else pp.ScheduleGPipe
    return cls(stages[0], microbatches, loss_fn=loss_fn, scale_grads=False)


def check_schedule(name: str, stages: int, microbatches: int) -> None:
    """ConfigError unless ``name`` can run ``microbatches`` over ``stages`` physical
    stages (torch's 1F1B needs at least as many micro-batches as stages; its interleaved
    1F1B a multiple of the rounds, ``max(1, m // stages)``)."""
    if name not in SCHEDULES:
        raise ConfigError(f"parallel.schedule {name!r} is unknown; use one of "
                          f"{', '.join(SCHEDULES)}")
    if microbatches < 1:
        raise ConfigError(f"parallel.microbatches must be >= 1 (got {microbatches}); set "
                          f"microbatches = {max(1, stages)}")
    if name != "gpipe" and microbatches < stages:
        raise ConfigError(f"parallel.schedule = {name!r} needs at least as many micro-batches "
                          f"as stages ({stages}), got microbatches = {microbatches}; set "
                          f"microbatches >= {stages} or schedule = 'gpipe'")
    rounds = max(1, microbatches // stages)
    if name == "interleaved-1f1b" and microbatches % rounds:
        raise ConfigError(f"parallel.schedule = 'interleaved-1f1b' over {stages} stages needs "
                          f"microbatches a multiple of {rounds} (got {microbatches}); set "
                          f"microbatches = {rounds * stages}")


class PipelineRank:
    """This rank's part of a pipeline: its stage modules (sharing ``model``'s modules and
    names; a replica more per extra lane it serves), one ``PipelineStage`` set and schedule
    per lane, and its stage's group for the gradient sum. Every rank must construct it (it
    creates process groups, a collective over the default group)."""

    def __init__(self, model: nn.Module, layout: Layout, *, rank: int,
                 loss: Callable[[nn.Module, Batch], torch.Tensor], global_batch: int,
                 microbatches: int, schedule: str = "1f1b", stage_mode: str = "dp",
                 device: torch.device | None = None,
                 param_dtype: torch.dtype = torch.float32) -> None:
        from torch.distributed.pipelining import PipelineStage

        check_schedule(schedule, layout.stages, microbatches)
        if schedule != "interleaved-1f1b" and layout.virtual != 1:
            raise ConfigError(f"virtual_stages = {layout.virtual} needs schedule = "
                              f"'interleaved-1f1b' (got {schedule!r})")
        per = layout.lanes * microbatches
        if global_batch % per:
            raise ConfigError(f"train.global_batch ({global_batch}) must be a multiple of "
                              f"lanes x microbatches ({layout.lanes} x {microbatches} = {per}): "
                              f"micro-batches are equal slices of the global batch")
        if stage_mode not in ("dp", "fsdp"):
            raise ConfigError(f"parallel.stage_mode {stage_mode!r} is unknown; use 'dp' or "
                              f"'fsdp'")
        if stage_mode == "fsdp" and any(1 < n < layout.lanes for n in layout.ranks):
            raise ConfigError(f"parallel.stage_mode = 'fsdp' needs every stage to have 1 rank "
                              f"or the most ranks ({layout.lanes}); got {list(layout.ranks)}: "
                              f"a rank serving several lanes runs them in threads, and FSDP's "
                              f"collectives from two threads would interleave differently on "
                              f"each rank (docs/pipeline.md); use stage_mode = 'dp'")
        # A head tied to the embedding: a copy at each end, their gradients summed over
        # the ranks of the first and the last stage (before the stage's own sum).
        tied = {id(q) for q in tied_parameters(model)}
        if tied and stage_mode == "fsdp":
            raise ConfigError("parallel.stage_mode = 'fsdp' with tied embeddings is not "
                              "supported yet; set stage_mode = 'dp' or [workload.options] "
                              "tie_embeddings = false")
        self.layout, self.rank, self.B = layout, rank, global_batch
        self.device = device or torch.device("cpu")
        self.stage = layout.stage_of(rank)
        p, v = layout.stages, layout.virtual
        bounds = split_bounds(layout.blocks)
        mine = [j for j in range(p * v) if j % p == self.stage]
        self.modules = [StageModule(model, *bounds[j], first=j == 0, last=j == p * v - 1)
                        for j in mine]
        # Process groups: every rank creates every group, in one order.
        self.stage_group: Any = None
        for s in range(p):
            g = dist.new_group(list(range(layout.first_rank(s),
                                          layout.first_rank(s) + layout.ranks[s])))
            if s == self.stage:
                self.stage_group = g
        ends = sorted({*range(layout.first_rank(0), layout.ranks[0]),
                       *range(layout.first_rank(p - 1), layout.world)})
        self.tie_group = dist.new_group(ends) if tied else None
        self.sharded = stage_mode == "fsdp" and layout.ranks[self.stage] > 1
        self._fsdp: list[Any] = []  # gathered once per step (stagefsdp)
        if self.sharded:
            self._fsdp = shard_stage(self.modules, self.modules[0].blocks_attr,
                                     self.stage_group, self.device, param_dtype)
        self.params = [q for m in self.modules for q in m.parameters()]
        self._tied = [q for q in self.params if id(q) in tied]
        self._untied = [q for q in self.params if id(q) not in tied]
        self.lanes = layout.lanes_of(rank)
        # A rank serving several lanes runs them at once (a thread each), each lane on its
        # own replica of the stage modules: the replicas' parameters share the weights'
        # storage but keep their own gradients, summed in lane order after the step.
        self._replicas = [self.modules] + [_replica(self.modules) for _ in self.lanes[1:]]
        loss_fn = stage_loss(loss, global_batch)
        self._schedules: list[Any] = []
        self._stages: list[tuple[Any, int]] = []  # (PipelineStage, virtual stage index)
        for lane in range(layout.lanes):
            g = dist.new_group(layout.lane_ranks(lane))
            if lane in self.lanes:
                mods = self._replicas[self.lanes.index(lane)]
                stages = [PipelineStage(m, j, p * v, self.device, group=g)
                          for m, j in zip(mods, mine, strict=True)]
                self._schedules.append(make_schedule(schedule, stages, microbatches, loss_fn))
                self._stages += list(zip(stages, mine, strict=True))
        self.is_first, self.is_last = self.stage == 0, self.stage == p - 1

    def pace(self, pacer: Any) -> None:
        """Let ``pacer`` (an emulated chip's
        :class:`~mixfleet.emulate.stagepace.ChunkPacer`) time every stage's forward and
        backward of a micro-batch, on every lane."""
        for stage, j in self._stages:
            pacer.wrap(stage, j)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.params)

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """This rank's parameters under the model's own names."""
        return [kv for m in self.modules for kv in m.named_parameters()]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """This rank's tensors under the model's own names."""
        out: dict[str, torch.Tensor] = {}
        for m in self.modules:
            out.update(m.state_dict())
        return out

    def _lane_slice(self, t: torch.Tensor, lane: int) -> torch.Tensor:
        n = self.B // self.layout.lanes
        return t[lane * n: (lane + 1) * n]

    def _run_lanes(self, batch: Batch | None, train: bool) -> torch.Tensor | None:
        """Each of this rank's lanes through its schedule, at once when there are several;
        the loss summed in lane order on the last stage."""
        x, y = batch if batch is not None else (None, None)  # middle stages read nothing
        out: list[torch.Tensor | None] = [None] * len(self.lanes)

        def run(i: int) -> None:
            lane, sched = self.lanes[i], self._schedules[i]
            losses: list[torch.Tensor] = []
            args = (self._lane_slice(x, lane),) if self.is_first and x is not None else ()
            target = self._lane_slice(y, lane) if self.is_last and y is not None else None
            if train:
                sched.step(*args, target=target, losses=losses, return_outputs=False)
            else:
                with torch.no_grad():
                    sched.eval(*args, target=target, losses=losses)
            if self.is_last:
                out[i] = torch.stack([t.detach() for t in losses]).sum()

        if len(self.lanes) == 1:
            run(0)
        else:
            _in_threads(run, len(self.lanes))
        if not self.is_last:
            return None
        total = out[0]
        for t in out[1:]:
            assert total is not None and t is not None
            total = total + t
        return total

    def forward_backward(self, batch: Batch | None) -> torch.Tensor | None:
        """Run this rank's lanes over the global ``batch`` (inputs, targets; every rank may
        pass it, only the first and last stages read it) and sum the stage's gradients
        (over its lanes in lane order, then across its ranks). Returns the loss of the
        step (summed over this rank's lanes' micro-batches, already / B) on the last
        stage, else None. Gradients accumulate into ``.grad``: zero them before."""
        prefetch(self._fsdp)
        total = self._run_lanes(batch, train=True)
        self._sum_replicas()
        self._reduce()
        return total

    def eval_loss(self, batch: Batch | None) -> torch.Tensor | None:
        """The loss of ``batch`` (summed, / B) through the pipeline without gradients (the
        schedules' ``eval``; every rank must call it, as for a training step). Returns it
        on the last stage, else None."""
        total = self._run_lanes(batch, train=False)
        reshard(self._fsdp)  # a forward-only pass keeps the stage's parameters gathered
        return total

    def _sum_replicas(self) -> None:
        """Add the other lanes' replica gradients to the weights' own, in lane order."""
        for rep in self._replicas[1:]:
            for q, r in zip(self.params, (q for m in rep for q in m.parameters()), strict=True):
                if r.grad is not None:
                    q.grad = r.grad.clone() if q.grad is None else q.grad + r.grad
                    r.grad = None

    def _reduce(self) -> None:
        if self._tied:  # each end's partial sums over the first and last stages' ranks
            _sum_grads(self._tied, self.tie_group)
        if self.layout.ranks[self.stage] > 1 and not self.sharded:
            _sum_grads(self._untied, self.stage_group)


def _replica(modules: list[StageModule]) -> list[StageModule]:
    """A copy of ``modules`` whose parameters share the originals' storage (an in-place
    optimizer step updates both) but have their own ``.grad``."""
    copies = copy.deepcopy(modules)
    with torch.no_grad():
        for m, c in zip(modules, copies, strict=True):
            for q, r in zip(m.parameters(), c.parameters(), strict=True):
                r.data = q.data
    return copies


def _in_threads(run: Callable[[int], None], n: int) -> None:
    """``run(0)`` .. ``run(n - 1)`` in threads at once; the first error is raised here."""
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            run(i)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,), name=f"lane-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _sum_grads(params: list[nn.Parameter], group: Any) -> None:
    """Sum ``params``' gradients over ``group`` with one flat all-reduce; the gradients
    become views of the summed buffer (as under dp)."""
    if not params:
        return
    flat = torch.cat([(q.grad if q.grad is not None else torch.zeros_like(q)).reshape(-1)
                      for q in params])
    dist.all_reduce(flat, group=group)
    off = 0
    for q in params:
        q.grad = flat[off: off + q.numel()].view_as(q)
        off += q.numel()


def lane_order(layout: Layout, microbatches: int, global_batch: int) -> list[Sequence[int]]:
    """The sample indices (positions in the global batch) of each lane's micro-batches,
    lane by lane: what the reference accumulation of a test walks through."""
    n = global_batch // layout.lanes // microbatches
    return [range((lane * microbatches + j) * n, (lane * microbatches + j + 1) * n)
            for lane in range(layout.lanes) for j in range(microbatches)]
