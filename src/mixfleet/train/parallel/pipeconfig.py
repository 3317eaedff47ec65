"""The fields of ``[parallel] mode = "pipeline"``: its fields and ``[[stages]]`` (see
docs/pipeline.md). ``ParallelConfig`` (the ``[parallel]`` table) carries these fields;
:mod:`~mixfleet.train.parallel.pipeplan` turns them into a job's plan.

    [parallel]
    mode = "pipeline"
    stage_mode = "dp"          # inside a stage: dp (replicas) or fsdp (sharded)
    schedule = "1f1b"          # or "gpipe", "interleaved-1f1b" (with virtual_stages >= 2)
    microbatches = 16          # per lane and step; 0: the plan picks
    [[parallel.stages]]        # optional; by default one stage per chip kind of [[ranks]]
    chip = "nvidia-h20"
    ranks = 2
    blocks = 20                # optional: all or none; else the split picks them
    [[parallel.stages]]
    chip = "kunlun-p800"
    ranks = 1
    blocks = 12
    # optional: per-block times from `mixfleet bench --class llama` rows
    # split_times = "bench:bench-out/throughput.json"

:func:`resolve_stages` checks the stages against the job's ranks and the model's blocks
and returns them with the job ranks listed stage after stage (the pipeline's rank order).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal

from mixfleet.config import Section, field, require
from mixfleet.errors import ConfigError
from mixfleet.train.parallel.pipeline import SCHEDULES, Layout, check_schedule

__all__ = ["StageConfig", "PipelineConfig", "ResolvedStages", "resolve_stages",
           "default_stages"]


@dataclasses.dataclass(kw_only=True, frozen=True)
class StageConfig(Section, section="parallel.stages"):
    """One ``[[parallel.stages]]`` entry: a stage is one chip kind."""

    chip: str = field(help="catalog id of the stage's chips, or cpu (a stage never mixes "
                           "kinds)", example="nvidia-h20")
    ranks: int = field(help="ranks of the job in this stage (dp or fsdp among them)", ge=1,
                       example=1)
    blocks: int = field(0, help="the model's blocks in this stage, in order; 0: the split "
                                "picks them from measured per-block times and memory", ge=0)

    def __post_init__(self) -> None:
        from mixfleet.catalog.base import get_chip

        if self.chip != "cpu":
            get_chip(self.chip)  # an unknown id -> ConfigError naming the known ones


@dataclasses.dataclass(kw_only=True, frozen=True)
class PipelineConfig(Section, section="parallel"):
    """The pipeline fields of ``[parallel]``."""

    stage_mode: Literal["dp", "fsdp"] = field(
        "dp", help="inside a stage: dp (a replica per rank) or fsdp (sharded over the stage)",
        choices=("dp", "fsdp"))
    schedule: Literal["1f1b", "gpipe", "interleaved-1f1b"] = field(
        "1f1b", help="torch.distributed.pipelining schedule", choices=SCHEDULES)
    microbatches: int = field(0, help="micro-batches per lane and step (1F1B needs >= the "
                                      "stages); 0: the plan picks", ge=0)
    virtual_stages: int = field(1, help="stage modules per rank (interleaved-1f1b: >= 2)",
                                ge=1)
    stages: list[StageConfig] = field([], help="the stages in order; none: one per chip "
                                               "kind of [[ranks]]")
    resplit_every: int = field(0, help="steps between comparisons of the measured stage "
                                       "times with the split's; a re-split that the "
                                       "hysteresis lets through relaunches the job (0: off)",
                               ge=0)
    resplit_hysteresis: float = field(0.1, help="re-split only when the predicted step "
                                                "drops by more than this fraction", ge=0, lt=1)
    split_times: str = field("", help="per-block times of the split: \"bench:PATH\" (rows "
                                      "of `mixfleet bench --class llama`); empty: "
                                      "parameters / catalog peak (or [emulate] as_model)")

    def __post_init__(self) -> None:
        interleaved = self.schedule == "interleaved-1f1b"
        require(interleaved == (self.virtual_stages >= 2), f"parallel.virtual_stages = "
                f"{self.virtual_stages} with schedule = {self.schedule!r}: interleaved-1f1b "
                f"needs virtual_stages >= 2 and the others 1; set both together")
        given = [s.blocks > 0 for s in self.stages]
        require(all(given) or not any(given), "parallel.stages: give blocks for every stage "
                "or for none (then the split picks them)")
        if self.stages and self.microbatches:
            check_schedule(self.schedule, len(self.stages), self.microbatches)
        require(not self.split_times or (self.split_times.startswith("bench:")
                                         and len(self.split_times) > 6),
                f"parallel.split_times = {self.split_times!r}: expected \"bench:PATH\" (a "
                f"table of `mixfleet bench --class llama`); e.g. split_times = "
                f"\"bench:bench-out/throughput.json\", or leave it out")


@dataclasses.dataclass(frozen=True)
class ResolvedStages:
    """The stages of a job and its ranks listed stage after stage."""

    stages: tuple[StageConfig, ...]
    order: tuple[int, ...]  # pipeline rank i is job rank order[i]


def default_stages(rank_chips: Sequence[str],
                   memory_gib: Mapping[str, float | None]) -> list[StageConfig]:
    """One stage per chip kind. The first stage (embeddings, and under 1F1B the most
    micro-batches in flight) goes to the kind with the most memory in all (memory per
    chip x ranks), the last (head, logits, loss) to the next, the others between in
    decreasing order; ties by chip id. An unknown memory counts as 0."""
    count = Counter(rank_chips)
    kinds = sorted(count, key=lambda c: (-(memory_gib.get(c) or 0.0) * count[c], c))
    ordered = kinds[:1] + kinds[2:] + kinds[1:2] if len(kinds) > 2 else kinds
    return [StageConfig(chip=c, ranks=count[c]) for c in ordered]


def resolve_stages(cfg: PipelineConfig, rank_chips: Sequence[str], n_blocks: int,
                   memory_gib: Mapping[str, float | None] | None = None) -> ResolvedStages:
    """Check ``cfg``'s stages (or the default ones) against the job's ranks (their chip
    kinds, in job rank order) and the model's ``n_blocks`` blocks."""
    if n_blocks < 1:
        raise ConfigError("parallel.mode = 'pipeline' needs a workload made of blocks (its "
                          "shard_units); this one has none: use parallel.mode = 'dp' or "
                          "'fsdp'")
    if memory_gib is None:
        from mixfleet.catalog.base import get_chip

        memory_gib = {c: get_chip(c).hbm_gib.value for c in set(rank_chips)}
    stages = list(cfg.stages) or default_stages(rank_chips, memory_gib)
    want, have = Counter(rank_chips), Counter[str]()
    for s in stages:
        have[s.chip] += s.ranks
    if want != have:
        diff = sorted(set(want) | set(have))
        detail = ", ".join(f"{c}: {have[c]} in stages, {want[c]} in [[ranks]]"
                           for c in diff if want[c] != have[c])
        raise ConfigError(f"parallel.stages do not cover the job's ranks ({detail}); give "
                          f"each chip kind's ranks to stages of that chip")
    if len(stages) * cfg.virtual_stages > n_blocks:
        raise ConfigError(f"{len(stages)} stages x {cfg.virtual_stages} virtual stages need "
                          f"at least as many blocks; the model has {n_blocks}: use fewer "
                          f"stages")
    if stages[0].blocks and sum(s.blocks for s in stages) != n_blocks:
        raise ConfigError(f"parallel.stages.blocks add up to {sum(s.blocks for s in stages)}"
                          f"; the model has {n_blocks} blocks: make them add up or leave "
                          f"them out")
    if cfg.virtual_stages > 1 and stages[0].blocks:
        raise ConfigError("parallel.stages.blocks with virtual_stages > 1: leave blocks out "
                          "(the split assigns the virtual stages)")
    Layout(tuple(s.ranks for s in stages), (1,) * len(stages) * cfg.virtual_stages,
           cfg.virtual_stages)  # ranks per stage must divide the largest
    if cfg.microbatches:
        check_schedule(cfg.schedule, len(stages), cfg.microbatches)
    ranks = [s.ranks for s in stages]
    if cfg.stage_mode == "fsdp" and any(1 < n < max(ranks) for n in ranks):
        raise ConfigError(f"parallel.stage_mode = 'fsdp' needs every stage to have 1 rank or "
                          f"the most ranks ({max(ranks)}); got {ranks}: use stage_mode = 'dp' "
                          f"(docs/pipeline.md, 'Stages with different numbers of ranks')")
    free = {c: [r for r, k in enumerate(rank_chips) if k == c] for c in want}
    order = []
    for s in stages:
        order += free[s.chip][: s.ranks]
        free[s.chip] = free[s.chip][s.ranks:]
    return ResolvedStages(stages=tuple(stages), order=tuple(order))
