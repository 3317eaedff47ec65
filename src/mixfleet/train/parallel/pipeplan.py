"""A pipeline job's plan before it runs: its stages, the job ranks in stage order, the
micro-batches and the split of blocks, with each stage's predicted time and memory and the
bubble (see docs/pipeline.md, "In the trainer").

Every rank computes the same plan from the config, the chip kinds of the job's ranks and
the model (built on the ``meta`` device: no memory, no random numbers drawn), and
:func:`~mixfleet.train.launch.prepare_run` computes it once before anything is written, so
bad input exits 2 with nothing written.

Blocks come from ``[[parallel.stages]] blocks`` when given, else from
:func:`~mixfleet.train.parallel.split.split_blocks` with **predicted** per-block times: a
block's parameter count over its chip kind's catalog peak (compute grows with the
parameters in a decoder; the embedding lookup costs ~nothing; the head with its
parameters), and memory from the catalog HBM (the host's is not limited). That basis is
recorded with the plan (``basis``, and ``times``: where the per-block times come from);
``[parallel] split_times = "bench:PATH"`` takes them from ``mixfleet bench --class llama``
rows instead (:mod:`~mixfleet.train.parallel.benchsplit`), and re-splits from the run's
measured stage times (:mod:`~mixfleet.train.parallel.resplit`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from mixfleet.errors import ConfigError
from mixfleet.train.mixed.shares import largest_remainder
from mixfleet.train.parallel.benchsplit import bench_times
from mixfleet.train.parallel.pipeconfig import PipelineConfig, StageConfig, resolve_stages
from mixfleet.train.parallel.pipeline import Layout, bubble_fraction, check_schedule
from mixfleet.train.parallel.split import (
    ModelBytes,
    SplitPlan,
    StageChip,
    split_blocks,
    split_of,
)
from mixfleet.train.parallel.stages import parts_for

__all__ = ["PipelinePlan", "plan_pipeline", "chip_memory_gib", "pick_microbatches",
           "meta_model", "job_pipeline", "AsModelCosts", "as_model_costs", "stage_fields"]

_GIB = 2**30
_HOST = 1e15  # bytes: a host stage is not limited by the split (the OS is)


@dataclasses.dataclass(frozen=True)
class PipelinePlan:
    """What a pipeline job runs; see the module docstring."""

    stages: tuple[StageConfig, ...]
    order: tuple[int, ...]  # pipeline rank i is job rank order[i]
    layout: Layout
    microbatches: int
    schedule: str
    stage_mode: str
    split: SplitPlan | None  # the prediction (None: virtual stages)
    basis: str  # where the blocks come from
    inputs: tuple[tuple[StageChip, ...], ModelBytes] | None = None  # what split_blocks got
    times: str = "parameters / catalog peak"  # where the per-block times come from
    seconds: bool = False  # the times are seconds on every chip (bench rows)

    def fields(self) -> dict[str, Any]:
        """The ``stages`` event's fields."""
        sp = self.split
        # seconds only where every stage's chip has a catalog peak (the host has none:
        # its times are relative, in units of 1e12 FLOP/s)
        unit = ("predicted_s" if self.seconds or all(chip_memory_gib(s.chip) is not None
                                                      for s in self.stages)
                else "predicted_relative_time")
        return {
            "stages": [{"chip": s.chip, "ranks": s.ranks, "blocks": b,
                        **({unit: float(f"{sp.stage_s[i]:.4g}"),
                            "predicted_gib": round(sp.stage_bytes[i] / _GIB, 3)}
                           if sp is not None else {})}
                       for i, (s, b) in enumerate(zip(self.stages, self._blocks(), strict=True))],
            "order": list(self.order), "microbatches": self.microbatches,
            "lanes": self.layout.lanes, "schedule": self.schedule,
            "virtual_stages": self.layout.virtual, "stage_mode": self.stage_mode,
            "bubble": round(bubble_fraction(self.layout.stages, self.microbatches,
                                            self.layout.virtual), 4),
            "basis": self.basis, "times": self.times}

    @property
    def step_s(self) -> float | None:
        """The predicted step (the split's units: seconds where every chip has a catalog
        peak), or None without a prediction."""
        return self.split.step_s if self.split is not None else None

    def _blocks(self) -> list[int]:
        v, p = self.layout.virtual, self.layout.stages
        return [sum(self.layout.blocks[j] for j in range(s, p * v, p)) for s in range(p)]

    def describe(self) -> str:
        """One line: each stage's chip, ranks and blocks, and the bubble."""
        parts = [f"{s.chip} x{s.ranks}: {b} blocks"
                 for s, b in zip(self.stages, self._blocks(), strict=True)]
        bub = bubble_fraction(self.layout.stages, self.microbatches, self.layout.virtual)
        return (f"pipeline {self.schedule}, {self.microbatches} micro-batches x "
                f"{self.layout.lanes} lane(s): " + " | ".join(parts) + f" (bubble {bub:.0%}; "
                f"times from {self.times})")


def chip_memory_gib(kind: str) -> float | None:
    """The catalog HBM of a chip kind; None for the host or a kind the catalog lacks."""
    from mixfleet.catalog.base import get_chip

    try:
        return get_chip(kind).hbm_gib.value
    except ConfigError:
        return None


def _peak(kind: str) -> float:
    from mixfleet.catalog.base import get_chip

    try:
        return get_chip(kind).peak_flops() or 1e12
    except ConfigError:
        return 1e12  # the host: one unit; only ratios between stages matter


def pick_microbatches(stages: int, lane_batch: int, schedule: str) -> int:
    """The micro-batches per lane a plan picks: the fewest that divide the lane's batch
    and keep the bubble at or under 10% ((P-1)/(m+P-1) <= 0.1 needs m >= 9(P-1)); the
    whole lane batch (one sample each) when none does; at least ``stages`` (1F1B)."""
    need = max(stages if schedule != "gpipe" else 1, 9 * (stages - 1))
    for m in range(1, lane_batch + 1):
        if lane_batch % m == 0 and m >= need:
            return m
    return lane_batch


def _model_bytes(model: nn.Module, sample_tokens: int, micro: int) -> tuple[ModelBytes, list[int]]:
    """Parameter bytes per block (and of the embeddings and head) and a rough activation
    estimate per micro-batch (tokens x widest dimension x 4 bytes x 16 per block)."""
    parts = parts_for(model)
    blocks = list(getattr(model, parts.blocks))
    counts = [sum(q.numel() for q in b.parameters()) for b in blocks]
    width = max((max(q.shape) for b in blocks[:1] for q in b.parameters()), default=1)
    act = float(micro * sample_tokens * width * 4 * 16)
    first = sum(q.numel() for n in parts.first for q in getattr(model, n).parameters())
    last = sum(q.numel() for n in parts.last for q in getattr(model, n).parameters())
    mb = ModelBytes(block_params=tuple(4.0 * c for c in counts),
                    block_acts=tuple(act for _ in counts), embed_params=4.0 * first,
                    head_params=4.0 * last, head_acts=act,
                    gathered_factor=2.0)  # fsdp: fp32 gathered weights and gradients
    return mb, counts


@dataclasses.dataclass(frozen=True)
class AsModelCosts:
    """``[emulate] as_model`` under pipeline: the named model's figures stand in for the
    configured small model's blocks (each of its ``n`` blocks is ``layers / n`` layers of
    the named model) in the split and in the emulated chips' pace."""

    params: int
    layers: int
    dim: int
    vocab: int
    flops_per_token: float  # training (forward + backward)
    seq_len: int
    token_s: Mapping[str, float]  # chip seconds per token of the whole model, per kind
    optimizer: str

    def head_fraction(self) -> float:
        """The head's share of a token's training FLOPs (6 x dim x vocab)."""
        return min(0.5, 6.0 * self.dim * self.vocab / self.flops_per_token)

    def block_s(self, kind: str, n_blocks: int, tokens: float) -> float:
        """Chip seconds of one small-model block (``layers / n_blocks`` layers), forward and
        backward of ``tokens`` tokens."""
        return (1 - self.head_fraction()) / n_blocks * self.token_s[kind] * tokens

    def head_s(self, kind: str, tokens: float) -> float:
        return self.head_fraction() * self.token_s[kind] * tokens

    def model_bytes(self, n_blocks: int, tokens: float) -> ModelBytes:
        """Memory of the named model cut in ``n_blocks``: fp32 weights (x the state
        factor: gradients, optimizer state), bf16 activations 34 x dim per token and layer
        (as in ``emulate.asmodel.memory_need``), fp32 logits."""
        lpb = self.layers / n_blocks
        emb = float(self.dim * self.vocab)
        per_layer = max(0.0, (self.params - 2 * emb) / self.layers)
        return ModelBytes(block_params=tuple(4.0 * per_layer * lpb for _ in range(n_blocks)),
                          block_acts=tuple(34.0 * self.dim * tokens * lpb
                                           for _ in range(n_blocks)),
                          embed_params=4.0 * emb, head_params=4.0 * emb,
                          head_acts=4.0 * self.vocab * tokens,
                          state_factor=4.0 if self.optimizer == "adamw" else 3.0,
                          gathered_factor=1.5)  # fsdp: bf16 weights, fp32 gradients


def plan_pipeline(cfg: PipelineConfig, kinds: Sequence[str], model: nn.Module, *,
                  global_batch: int, sample_tokens: int = 1,
                  memory_gib: Mapping[str, float | None] | None = None,
                  as_model: AsModelCosts | None = None) -> PipelinePlan:
    """The plan of a pipeline job whose ranks are of chip ``kinds`` (job rank order);
    ``model`` may be on the meta device. ConfigError (exit 2) naming the field and the
    fix when the stages, the micro-batches or the memory do not work out. ``as_model``:
    split by the named model's figures (an emulated job)."""
    parts = parts_for(model)
    n_blocks = len(getattr(model, parts.blocks))
    mem = dict(memory_gib) if memory_gib is not None else {
        k: chip_memory_gib(k) for k in set(kinds)}
    if not cfg.stages and len(set(kinds)) == 1:  # one kind: a stage per rank
        cfg = dataclasses.replace(cfg, stages=[StageConfig(chip=kinds[0], ranks=1)
                                               for _ in kinds])
    res = resolve_stages(cfg, kinds, n_blocks, mem)
    stages, v = res.stages, cfg.virtual_stages
    ranks = tuple(s.ranks for s in stages)
    lanes = max(ranks)
    if global_batch % lanes:
        raise ConfigError(f"train.global_batch ({global_batch}) must be a multiple of the "
                          f"pipeline's lanes ({lanes}, the most ranks of a stage); set "
                          f"global_batch = {lanes * max(1, global_batch // lanes)}")
    m = cfg.microbatches or pick_microbatches(len(stages), global_batch // lanes, cfg.schedule)
    check_schedule(cfg.schedule, len(stages), m)
    if global_batch % (lanes * m):
        raise ConfigError(f"train.global_batch ({global_batch}) must be a multiple of lanes x "
                          f"parallel.microbatches ({lanes} x {m} = {lanes * m}): micro-batches "
                          f"are equal slices of the global batch; set microbatches to a "
                          f"divisor of {global_batch // lanes}")
    micro = global_batch // lanes // m
    seconds = False  # the times are seconds whatever the chips (bench rows)
    if as_model is not None and cfg.split_times:
        raise ConfigError(f"parallel.split_times = {cfg.split_times!r} and [emulate] as_model "
                          f"both set the per-block times (as_model paces the emulated chips "
                          f"by its own figures); remove one of them")
    if as_model is not None:
        tokens = float(micro * as_model.seq_len)
        mb = as_model.model_bytes(n_blocks, tokens)
        chips = [StageChip(chip=s.chip, ranks=s.ranks,
                           memory_bytes=(mem.get(s.chip) or _HOST / _GIB) * _GIB,
                           block_s=tuple(as_model.block_s(s.chip, n_blocks, tokens)
                                         for _ in range(n_blocks)),
                           head_s=as_model.head_s(s.chip, tokens)) for s in stages]
        basis = "predicted for the emulated model (catalog peak x profile MFU, catalog HBM)"
        times = f"as_model ({as_model.params / 1e9:.3g}B parameters, catalog peak x MFU)"
    elif cfg.split_times:  # per-block seconds from `bench --class llama` rows
        mb, _ = _model_bytes(model, sample_tokens, micro)
        bt = bench_times(cfg.split_times, [s.chip for s in stages], model, micro=micro,
                         sample_tokens=sample_tokens)
        chips = [StageChip(chip=s.chip, ranks=s.ranks,
                           memory_bytes=(mem.get(s.chip) or _HOST / _GIB) * _GIB,
                           block_s=(bt.kinds[s.chip].block_s,) * n_blocks,
                           embed_s=bt.kinds[s.chip].embed_s,
                           head_s=bt.kinds[s.chip].head_s) for s in stages]
        basis, times, seconds = "bench rows (per-block seconds), catalog memory", bt.label, True
    else:
        mb, counts = _model_bytes(model, sample_tokens, micro)
        chips = [StageChip(chip=s.chip, ranks=s.ranks,
                           memory_bytes=(mem.get(s.chip) or _HOST / _GIB) * _GIB,
                           block_s=tuple(c / _peak(s.chip) for c in counts),
                           head_s=mb.head_params / 4.0 / _peak(s.chip)) for s in stages]
        basis = "predicted (parameters / catalog peak, catalog memory)"
        times = "parameters / catalog peak"
    sched: Literal["1f1b", "gpipe"] = "gpipe" if cfg.schedule == "gpipe" else "1f1b"
    sharded = cfg.stage_mode == "fsdp"
    split: SplitPlan | None = None
    if stages[0].blocks:
        per = [s.blocks for s in stages]
        basis = "given ([[parallel.stages]] blocks)"
        if v == 1:
            split = split_of(chips, mb, per, microbatches=m, schedule=sched, sharded=sharded)
    else:
        split = split_blocks(chips, mb, microbatches=m, schedule=sched, sharded=sharded)
        per = list(split.blocks)
    if v > 1:  # virtual stage j on physical stage j % P: each stage's blocks cut in v
        blocks = _interleave(per, v)
    else:
        blocks = per
    layout = Layout(ranks, tuple(blocks), v)
    return PipelinePlan(stages=stages, order=res.order, layout=layout, microbatches=m,
                        schedule=cfg.schedule, stage_mode=cfg.stage_mode,
                        split=split if v == 1 else None, basis=basis,
                        inputs=(tuple(chips), mb), times=times, seconds=seconds)


def _interleave(per: Sequence[int], v: int) -> list[int]:
    """Blocks per virtual stage (``P x v`` of them, virtual stage ``j`` on physical stage
    ``j % P``) from blocks per physical stage: each cut into ``v`` near-equal runs."""
    p = len(per)
    if any(b < v for b in per):
        raise ConfigError(f"parallel.virtual_stages = {v} needs at least {v} blocks per stage "
                          f"(the split gives {list(per)}); use fewer virtual stages")
    out = [0] * (p * v)
    for s, b in enumerate(per):
        for k in range(v):
            out[k * p + s] = b // v + (1 if k < b % v else 0)
    return out


def meta_model(build: Any) -> nn.Module:
    """``build()`` on the meta device (no memory, no random numbers drawn)."""
    with torch.device("meta"):
        return build()


def job_pipeline(cfg: Any, kinds: Sequence[str], workload: Any,
                 as_model: AsModelCosts | None = None) -> PipelinePlan | None:
    """The plan of a run config (``RunConfig``) whose ranks are of chip ``kinds``, or None
    when ``[parallel] mode`` is not ``pipeline`` (``as_model``: see :func:`plan_pipeline`;
    by default from ``[emulate] as_model`` when every rank is an emulated chip)."""
    if cfg.parallel.mode != "pipeline":
        return None
    if len(kinds) < 2:
        raise ConfigError(f"parallel.mode = 'pipeline' needs at least 2 ranks (got "
                          f"{len(kinds)}); set launch.nproc = 2 or more, or mode = 'dp'")
    sample = workload.train_set.take(torch.arange(1))[0]
    if as_model is None and cfg.emulate.as_model is not None:
        as_model = as_model_costs(cfg.emulate.as_model, kinds, cfg.train.optimizer,
                                  cfg.emulate.as_model_seq_len or None)
    return plan_pipeline(cfg.parallel, kinds, meta_model(workload.build_model),
                         global_batch=cfg.train.global_batch,
                         sample_tokens=int(sample.shape[-1]) if sample.dim() > 1 else 1,
                         as_model=as_model)


def as_model_costs(name: str, kinds: Sequence[str], optimizer: str,
                   seq_len: int | None = None) -> AsModelCosts:
    """The figures of ``[emulate] as_model = name`` on these chip kinds (the same seconds
    per token as the dp/fsdp emulation: catalog BF16 peak x the profile's MFU)."""
    from mixfleet.catalog.base import get_chip
    from mixfleet.emulate import load_profiles
    from mixfleet.emulate.asmodel import model_shape, peak_tflops

    shape = model_shape(name, seq_len)
    profiles = load_profiles()
    token_s = {}
    for k in set(kinds):
        if k not in profiles:
            raise ConfigError(f"emulate.as_model paces emulated chips; rank kind {k!r} is not "
                              f"one (use emu:<chip-id> devices or remove [emulate] as_model)")
        prof = profiles[k]
        token_s[k] = shape.flops_per_token / (peak_tflops(get_chip(k), prof) * 1e12 * prof.mfu)
    return AsModelCosts(params=shape.params, layers=shape.layers, dim=shape.dim,
                        vocab=shape.vocab, flops_per_token=shape.flops_per_token,
                        seq_len=shape.seq_len, token_s=token_s, optimizer=optimizer)


def stage_fields(plan: Any, n_blocks: int, virtual_stages: int = 1) -> dict[str, Any]:
    """The ``[parallel]`` fields that run ``plan`` (a pipeline ModePlan): ``stage_mode``,
    ``microbatches`` and ``stages`` (``chip``, ``ranks``, ``blocks``; the configured
    schedule is kept). ``n_blocks``: the blocks of the model that really trains (under
    ``[emulate] as_model`` it differs from the predicted one's: the predicted split is
    scaled to it, each stage keeping at least one block). With ``virtual_stages > 1`` the
    blocks are left to the run's split (it assigns the virtual stages)."""
    d = plan.detail
    given = [r["blocks"] for r in d["stages"]]
    if n_blocks < len(given) * virtual_stages:
        raise ConfigError(f"the pipeline plan has {len(given)} stages x {virtual_stages} "
                          f"virtual but the model trained has {n_blocks} blocks; set "
                          f"[parallel] mode = 'fsdp' or 'dp'")
    blocks = given if sum(given) == n_blocks else largest_remainder(
        [float(x) for x in given], n_blocks)
    return {"stage_mode": d["stage_mode"], "microbatches": d["microbatches"],
            "stages": [StageConfig(chip=r["chip"], ranks=r["ranks"],
                                   blocks=k if virtual_stages == 1 else 0)
                       for r, k in zip(d["stages"], blocks, strict=True)]}
