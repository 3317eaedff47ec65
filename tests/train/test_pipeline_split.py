"""The pipeline split (mixfleet.train.parallel.split): the exact solver finds the fastest
contiguous split that fits every stage's memory (checked against brute force), predicts
each stage's time and memory and the bubble, and refuses bad input with the numbers."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixfleet.errors import ConfigError
from mixfleet.train.parallel import split as sp
from mixfleet.train.parallel.split import ModelBytes, StageChip, split_blocks

GIB = 2**30


def _uniform(n: int, *, act: float = 1.0, param: float = 1.0) -> ModelBytes:
    return ModelBytes(block_params=(param,) * n, block_acts=(act,) * n)


def test_equal_chips_split_blocks_evenly_and_predict_the_bubble() -> None:
    """Two equal chips share 8 equal blocks 4 + 4; 1F1B with 8 micro-batches loses
    (P-1)/(m+P-1) = 1/9 to the bubble; the step is (m + P - 1) slots."""
    chips = [StageChip(chip="nvidia-h20", ranks=1, memory_bytes=1e9, block_s=(1.0,) * 8)] * 2
    plan = split_blocks(chips, _uniform(8), microbatches=8)
    assert plan.blocks == (4, 4)
    assert plan.stage_s == (4.0, 4.0)
    assert plan.bubble == pytest.approx(1 / 9)
    assert plan.step_s == pytest.approx(9 * 4.0)


def test_a_twice_faster_chip_takes_twice_the_blocks_and_the_head_counts() -> None:
    """A chip twice as fast per block gets twice the blocks; a costly head on the last
    stage moves blocks to the first."""
    fast = StageChip(chip="nvidia-h20", ranks=1, memory_bytes=1e9, block_s=(1.0,) * 9)
    slow = StageChip(chip="kunlun-p800", ranks=1, memory_bytes=1e9, block_s=(2.0,) * 9)
    assert split_blocks([fast, slow], _uniform(9), microbatches=4).blocks == (6, 3)
    headed = StageChip(chip="nvidia-h20", ranks=1, memory_bytes=1e9, block_s=(1.0,) * 8,
                       head_s=4.0)
    plain = StageChip(chip="nvidia-h20", ranks=1, memory_bytes=1e9, block_s=(1.0,) * 8)
    assert split_blocks([plain, headed], _uniform(8), microbatches=4).blocks == (6, 2)


def test_two_ranks_in_a_stage_halve_its_time_per_lane() -> None:
    """A stage of 2 ranks (2 lanes) against a stage of 1 rank that serves both lanes: the
    single rank's stage costs twice per slot, so it gets a third of equal blocks."""
    two = StageChip(chip="nvidia-h20", ranks=2, memory_bytes=1e9, block_s=(1.0,) * 6)
    one = StageChip(chip="kunlun-p800", ranks=1, memory_bytes=1e9, block_s=(1.0,) * 6)
    plan = split_blocks([two, one], _uniform(6), microbatches=4)
    assert plan.blocks == (4, 2)
    assert plan.stage_s == (4.0, 4.0)


def test_memory_limits_the_split_and_1f1b_keeps_fewer_in_flight_than_gpipe() -> None:
    """1F1B's first stage holds P micro-batches' activations, GPipe's all m: with memory
    for 5 blocks' state + 2 in flight, GPipe can no longer put 6 blocks first."""
    assert sp.in_flight("1f1b", 2, 0, 8) == 2 and sp.in_flight("1f1b", 2, 1, 8) == 1
    assert sp.in_flight("gpipe", 2, 0, 8) == 8
    fast = StageChip(chip="nvidia-h20", ranks=1, memory_bytes=20.0, block_s=(1.0,) * 9)
    slow = StageChip(chip="kunlun-p800", ranks=1, memory_bytes=100.0, block_s=(2.0,) * 9)
    model = ModelBytes(block_params=(0.5,) * 9, block_acts=(1.0,) * 9, state_factor=2.0)
    assert split_blocks([fast, slow], model, microbatches=8).blocks == (6, 3)  # 6+12=18
    plan = split_blocks([fast, slow], model, microbatches=8, schedule="gpipe")
    assert plan.blocks[0] < 6 and plan.stage_bytes[0] <= 20.0


def test_bad_input_is_refused_with_the_fix() -> None:
    """1F1B with fewer micro-batches than stages, more stages than blocks, and a stage
    that cannot hold one block are refused naming the value, the chip and the need."""
    chip = StageChip(chip="ascend-910b", ranks=1, memory_bytes=64 * GIB, block_s=(1.0,) * 4)
    with pytest.raises(ConfigError, match="microbatches >= 2"):
        split_blocks([chip, chip], _uniform(4), microbatches=1)
    with pytest.raises(ConfigError, match="at least 3 blocks"):
        split_blocks([dataclasses.replace(chip, block_s=(1.0, 1.0))] * 3, _uniform(2),
                     microbatches=4)
    small = StageChip(chip="ascend-910b", ranks=1, memory_bytes=1 * GIB, block_s=(1.0,) * 4)
    big = _uniform(4, param=1 * GIB)
    with pytest.raises(ConfigError, match=r"ascend-910b.*needs 4\.00 GiB.*has 1\.00 GiB"):
        split_blocks([small, chip], big, microbatches=4)


def test_stages_that_each_fit_one_block_but_not_all_together_name_the_worst() -> None:
    """When every stage holds one block but no split holds all, the error names the stage
    most over its memory in the fastest split."""
    chip = StageChip(chip="nvidia-h20", ranks=1, memory_bytes=3.0, block_s=(1.0,) * 8)
    with pytest.raises(ConfigError, match=r"no split of 8 blocks over 2 stages fits memory"):
        split_blocks([chip, chip], _uniform(8, act=0.0, param=0.5), microbatches=2)


def _brute(chips: list[StageChip], model: ModelBytes, m: int, sched: str,
           sharded: bool) -> float | None:
    best = None
    for split in sp.all_splits(len(model.block_params), len(chips)):
        lo, worst, fits = 0, 0.0, True
        for s, k in enumerate(split):
            t, mem = sp.stage_cost(chips, model, s, lo, lo + k, microbatches=m, schedule=sched,
                                sharded=sharded)
            fits &= mem <= chips[s].memory_bytes
            worst, lo = max(worst, t), lo + k
        if fits and (best is None or worst < best):
            best = worst
    return best


@st.composite
def _cases(draw: st.DrawFn) -> tuple[list[StageChip], ModelBytes, int, str, bool]:
    p = draw(st.integers(2, 3))
    n = draw(st.integers(p, 7))
    small = st.integers(1, 9).map(float)
    chips = [StageChip(chip=f"chip{s}", ranks=draw(st.sampled_from([1, 2])),
                       memory_bytes=draw(st.integers(5, 60).map(float)),
                       block_s=tuple(draw(small) for _ in range(n)),
                       embed_s=draw(small) if s == 0 else 0.0,
                       head_s=draw(small) if s == p - 1 else 0.0) for s in range(p)]
    ranks = [c.ranks for c in chips]
    if max(ranks) % min(ranks):
        chips = [dataclasses.replace(c, ranks=1) for c in chips]
    model = ModelBytes(block_params=tuple(draw(small) for _ in range(n)),
                       block_acts=tuple(draw(small) for _ in range(n)),
                       embed_params=draw(small), head_params=draw(small),
                       head_acts=draw(small), state_factor=draw(st.sampled_from([1.0, 2.0])))
    return (chips, model, draw(st.integers(p, 6)), draw(st.sampled_from(["1f1b", "gpipe"])),
            draw(st.booleans()))


@settings(max_examples=150, deadline=None)
@given(_cases())
def test_the_solver_equals_brute_force(case: tuple[list[StageChip], ModelBytes, int, str,
                                                   bool]) -> None:
    """On small random cases the solver's slowest stage equals the best over every
    contiguous split that fits, its split fits, and it refuses exactly when none fits."""
    chips, model, m, sched, sharded = case
    want = _brute(chips, model, m, sched, sharded)
    if want is None:
        with pytest.raises(ConfigError):
            split_blocks(chips, model, microbatches=m, schedule=sched,  # type: ignore[arg-type]
                         sharded=sharded)
        return
    plan = split_blocks(chips, model, microbatches=m, schedule=sched,  # type: ignore[arg-type]
                        sharded=sharded)
    assert max(plan.stage_s) == want
    assert sum(plan.blocks) == len(model.block_params) and min(plan.blocks) >= 1
    assert all(b <= c.memory_bytes for b, c in zip(plan.stage_bytes, chips, strict=True))
