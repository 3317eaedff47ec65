"""The ``[parallel] mode = "pipeline"`` draft (mixfleet.train.parallel.pipeconfig): a TOML
table becomes stages checked against the job's ranks and the model's blocks; default
stages are one per chip kind; every bad input is a ConfigError naming the field and the
fix."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from mixfleet.config import from_dict, reference
from mixfleet.errors import ConfigError
from mixfleet.train.config import RunConfig
from mixfleet.train.parallel import pipeconfig as pc
from mixfleet.train.parallel.pipeconfig import PipelineConfig, StageConfig
from mixfleet.train.parallel.strategy import ParallelConfig

TOML = """
stage_mode = "dp"
schedule = "1f1b"
microbatches = 8
[[stages]]
chip = "nvidia-h20"
ranks = 2
blocks = 5
[[stages]]
chip = "kunlun-p800"
ranks = 1
blocks = 3
"""
JOB = ["kunlun-p800", "nvidia-h20", "nvidia-h20"]  # job ranks 0, 1, 2


def _cfg(text: str = TOML) -> PipelineConfig:
    return from_dict(PipelineConfig, tomllib.loads(text), prefix="parallel")


def test_a_toml_table_resolves_to_stages_and_the_pipeline_rank_order() -> None:
    """Two stages (2 H20s, 1 P800) from TOML cover the job's ranks; the pipeline lists the
    job's ranks stage after stage (H20 ranks 1 and 2, then P800 rank 0)."""
    res = pc.resolve_stages(_cfg(), JOB, n_blocks=8)
    assert [(s.chip, s.ranks, s.blocks) for s in res.stages] == [
        ("nvidia-h20", 2, 5), ("kunlun-p800", 1, 3)]
    assert res.order == (1, 2, 0)


def test_default_stages_are_one_per_kind_with_the_most_memory_at_the_ends() -> None:
    """Without [[stages]]: one stage per chip kind; the kind with the most memory in all
    takes the first stage, the next the last, the rest go between."""
    mem = {"nvidia-h20": 96.0, "kunlun-p800": 96.0, "ascend-910b": 64.0}
    chips = ["ascend-910b", "nvidia-h20", "kunlun-p800", "nvidia-h20", "ascend-910b"]
    # in all: H20 2 x 96 = 192, 910B 2 x 64 = 128, P800 1 x 96 = 96 GiB
    assert [(s.chip, s.ranks) for s in pc.default_stages(chips, mem)] == [
        ("nvidia-h20", 2), ("kunlun-p800", 1), ("ascend-910b", 2)]
    res = pc.resolve_stages(PipelineConfig(), chips, n_blocks=6, memory_gib=mem)
    assert res.order == (1, 3, 2, 0, 4)


@pytest.mark.parametrize(("text", "blocks", "match"), [
    (TOML.replace("ranks = 1", "ranks = 2"), 8, "do not cover the job's ranks"),
    (TOML, 1, "at least as many blocks; the model has 1"),
    (TOML.replace("blocks = 3", "blocks = 4"), 8, "add up to 9; the model has 8"),
    (TOML, 0, "needs a workload made of blocks"),
    (TOML.replace("microbatches = 8", "microbatches = 1"), 8, "microbatches >= 2"),
])
def test_stages_that_do_not_fit_the_job_are_refused(text: str, blocks: int,
                                                    match: str) -> None:
    """Stages that do not cover the ranks, more stages than blocks, blocks that do not add
    up, a model without blocks, too few micro-batches for 1F1B: ConfigError with the fix."""
    with pytest.raises(ConfigError, match=match):
        pc.resolve_stages(_cfg(text), JOB, n_blocks=blocks)


@pytest.mark.parametrize(("text", "match"), [
    ('[[stages]]\nchip = "no-such-chip"\nranks = 1', "no-such-chip"),
    ('[[stages]]\nchip = "nvidia-h20"\nranks = 0',
     r"parallel.stages\[0\].ranks must be >= 1 \(got 0\); set ranks = 1 in parallel.stages\[0\]"),
    ('[[stages]]\nchip = "nvidia-h20"\nranks = 1\nblocks = -2',
     r"parallel.stages\[0\].blocks must be >= 0 \(got -2\); set blocks = 0 in"),
    ('[[stages]]\nranks = 1', r"'parallel.stages\[0\].chip'; set chip = \"nvidia-h20\""),
    ('schedule = "zigzag"', "parallel.schedule must be one of '1f1b', 'gpipe', "),
    ('stage_mode = "tp"', r"parallel.stage_mode must be one of 'dp', 'fsdp' \(got 'tp'\)"),
    ('schedule = "interleaved-1f1b"', "virtual_stages >= 2"),
    ("virtual_stages = 2", "virtual_stages >= 2"),
    ("virtual_stages = 0", r"parallel.virtual_stages must be >= 1 \(got 0\); set \[parallel\] "
                           "virtual_stages = 1"),
    ("microbatches = -1", r"microbatches must be >= 0 \(got -1\); set \[parallel\] "
                          "microbatches = 0"),
    ("resplit_every = -5", r"parallel.resplit_every must be >= 0 \(got -5\); set \[parallel\] "
                           "resplit_every = 0"),
    ("resplit_hysteresis = 1.0", r"parallel.resplit_hysteresis must be in \[0, 1\) \(got 1.0\); "
                                 r"set \[parallel\] resplit_hysteresis = 0.1"),
    (TOML.replace("blocks = 3", "blocks = 0"), "blocks for every stage or for none"),
    ("pipeline_depth = 2", "unknown config key 'parallel.pipeline_depth'"),
])
def test_bad_fields_are_refused_naming_the_field(text: str, match: str) -> None:
    """An unknown chip, zero ranks, negative blocks, a stage without a chip, an unknown
    schedule or stage mode, virtual stages without the interleaved schedule (and back),
    zero virtual stages, negative micro-batches or re-split interval, a hysteresis of 1,
    blocks for some stages only, an unknown key: ConfigError naming the field, the value
    and the fix."""
    with pytest.raises(ConfigError, match=match):
        _cfg(text)


@pytest.mark.parametrize(("build", "match"), [
    (lambda: StageConfig(chip="cpu", ranks=0),
     r"parallel.stages.ranks must be >= 1 \(got 0\)"),
    (lambda: PipelineConfig(schedule="zigzag"),  # type: ignore[arg-type]
     r'parallel.schedule must be one of "1f1b", "gpipe", "interleaved-1f1b" \(got \'zigzag\'\)'),
    (lambda: ParallelConfig(mode="pipeline", resplit_hysteresis=-0.1),
     r"parallel.resplit_hysteresis must be in \[0, 1\) \(got -0.1\)"),
    (lambda: ParallelConfig(stages=[StageConfig(chip="cpu", ranks=1)]),
     "parallel.stages are given but parallel.mode = 'dp'"),
])
def test_configs_built_in_code_are_held_to_the_same_bounds(build: Any, match: str) -> None:
    """The bounds declared on the fields hold for configs built in code too (the stages,
    the pipeline fields, and ``[parallel]`` which adds the mode to them)."""
    with pytest.raises(ConfigError, match=match):
        build()


def test_help_config_lists_the_pipeline_bounds() -> None:
    """`mixfleet train --help-config` shows the bounds declared on the pipeline fields."""
    bounds = {key: b for key, _, b, _ in reference(RunConfig)}
    assert bounds["parallel.microbatches"] == ">= 0"
    assert bounds["parallel.virtual_stages"] == ">= 1"
    assert bounds["parallel.resplit_hysteresis"] == "in [0, 1)"
    assert bounds["parallel.schedule"] == 'one of "1f1b", "gpipe", "interleaved-1f1b"'
    assert bounds["[[parallel.stages]].ranks"] == ">= 1"
    assert bounds["[[parallel.stages]].blocks"] == ">= 0"


def test_stage_ranks_that_do_not_divide_the_largest_are_refused() -> None:
    """Stages of 3 and 2 ranks cannot share lanes: refused with examples that work."""
    cfg = PipelineConfig(stages=[StageConfig(chip="nvidia-h20", ranks=3),
                                 StageConfig(chip="kunlun-p800", ranks=2)])
    with pytest.raises(ConfigError, match="must divide the largest"):
        pc.resolve_stages(cfg, ["nvidia-h20"] * 3 + ["kunlun-p800"] * 2, n_blocks=8)


def test_fsdp_inside_stages_needs_one_lane_per_rank_of_a_sharded_stage() -> None:
    """fsdp inside stages of 2 and 1 ranks is accepted (each H20 serves one lane); with 4,
    2 and 1 ranks the middle stage's ranks would serve two lanes each: refused."""
    two_one = _cfg(TOML.replace('"dp"', '"fsdp"'))
    assert pc.resolve_stages(two_one, JOB, n_blocks=8).order == (1, 2, 0)
    cfg = PipelineConfig(stage_mode="fsdp", stages=[
        StageConfig(chip="nvidia-h20", ranks=4), StageConfig(chip="kunlun-p800", ranks=2),
        StageConfig(chip="ascend-910b", ranks=1)])
    chips = ["nvidia-h20"] * 4 + ["kunlun-p800"] * 2 + ["ascend-910b"]
    with pytest.raises(ConfigError, match=r"fsdp' needs every stage to have 1 rank or the most"):
        pc.resolve_stages(cfg, chips, n_blocks=8)
