"""Blocks per pipeline stage from measured per-block times and each chip's memory (see
docs/pipeline.md, "The split").

A pure function: :func:`split_blocks` takes the stages in order (chip kind, ranks, memory
per chip, per-block forward + backward seconds per micro-batch on that kind, plus the
embeddings' and the head's), the model's bytes (parameters and activations per block),
the schedule and the number of micro-batches, and returns the contiguous split that
minimizes the slowest stage's time per micro-batch among the splits whose every stage
fits its chips' memory, with each stage's predicted time and memory and the bubble.

The model of a stage ``s`` holding blocks ``i..j-1`` (``L`` lanes, see
:mod:`~mixfleet.train.parallel.pipeline`; a rank of a stage with ``n`` ranks serves
``L / n`` of them at once):

- time per micro-batch slot: ``(sum of block_s[i:j] (+ embed_s on the first, + head_s on
  the last) + slot_fixed_s) x L / n``;
- memory per chip: parameter bytes x ``state_factor`` (parameters, gradients, optimizer
  state; divided by ``n`` under fsdp inside the stage, where the gathered parameters and
  gradients add ``gathered_factor`` whole) + activation bytes per micro-batch
  x the micro-batches in flight per lane (1F1B keeps ``min(m, P - s)``, GPipe all ``m``)
  x its ``L / n`` lanes (a shared rank's extra lanes' gradients are not counted)
  + ``fixed_bytes``;
- the step: ``(m + P - 1)`` slots of the slowest stage; the bubble
  ``(P - 1) / (m + P - 1)``.

The solver is exact: dynamic programming over the last block of each stage (``O(P N^2)``
for ``N`` blocks), checked against brute force in tests/train/test_pipeline_split.py.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Literal

from mixfleet.errors import ConfigError

__all__ = ["StageChip", "ModelBytes", "SplitPlan", "split_blocks", "split_of", "in_flight",
           "stage_cost", "all_splits"]

Schedule = Literal["1f1b", "gpipe"]
_GIB = 2**30


@dataclasses.dataclass(frozen=True)
class StageChip:
    """One stage's chips: kind, ranks, memory per chip, and its measured times (seconds
    per micro-batch on one chip of this kind, forward + backward)."""

    chip: str
    ranks: int
    memory_bytes: float
    block_s: tuple[float, ...]
    embed_s: float = 0.0
    head_s: float = 0.0  # final norm, head and loss
    slot_fixed_s: float = 0.0  # per micro-batch whatever its blocks (launches, sends)
    fixed_bytes: float = 0.0  # per chip whatever its blocks (gathered buffers)


@dataclasses.dataclass(frozen=True)
class ModelBytes:
    """The model's memory: parameter bytes and activation bytes kept for the backward
    per micro-batch, per block, and those of the embeddings and the head."""

    block_params: tuple[float, ...]
    block_acts: tuple[float, ...]
    embed_params: float = 0.0
    head_params: float = 0.0
    head_acts: float = 0.0
    state_factor: float = 4.0  # fp32 AdamW: weights + gradients + two moments
    # fsdp inside a stage of several ranks: bytes held per parameter byte through the
    # step, whatever the sharding (the gathered parameters and the unsharded gradients)
    gathered_factor: float = 0.0


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """The chosen split and what it predicts."""

    blocks: tuple[int, ...]  # blocks per stage, in order
    stage_s: tuple[float, ...]  # time per micro-batch slot of each stage
    stage_bytes: tuple[float, ...]  # memory per chip of each stage
    step_s: float  # (m + P - 1) x the slowest stage's slot
    bubble: float  # (P - 1) / (m + P - 1)


def in_flight(schedule: str, stages: int, stage: int, microbatches: int) -> int:
    """Micro-batches whose activations stage ``stage`` holds at once."""
    return microbatches if schedule == "gpipe" else min(microbatches, stages - stage)


def stage_cost(stages: Sequence[StageChip], model: ModelBytes, s: int, lo: int, hi: int, *,
               microbatches: int, schedule: str, sharded: bool = False) -> tuple[float, float]:
    """(time per micro-batch slot, memory per chip) of stage ``s`` holding blocks
    ``lo..hi-1`` (see the module doc)."""
    st, p = stages[s], len(stages)
    lanes = max(x.ranks for x in stages)
    first, last = s == 0, s == p - 1
    t = (sum(st.block_s[lo:hi]) + (st.embed_s if first else 0.0) + (st.head_s if last else 0.0)
         + st.slot_fixed_s)
    params = (sum(model.block_params[lo:hi]) + (model.embed_params if first else 0.0)
              + (model.head_params if last else 0.0))
    acts = sum(model.block_acts[lo:hi]) + (model.head_acts if last else 0.0)
    state = params * model.state_factor / (st.ranks if sharded else 1)
    if sharded and st.ranks > 1:
        state += params * model.gathered_factor
    mem = state + acts * in_flight(schedule, p, s, microbatches) * lanes / st.ranks \
        + st.fixed_bytes
    return t * lanes / st.ranks, mem


def _check(stages: Sequence[StageChip], model: ModelBytes, microbatches: int,
           schedule: str) -> int:
    n, p = len(model.block_params), len(stages)
    if schedule not in ("1f1b", "gpipe"):
        raise ConfigError(f"the split knows schedules '1f1b' and 'gpipe' (got {schedule!r})")
    if p < 2:
        raise ConfigError(f"a pipeline needs at least 2 stages (got {p})")
    if len(model.block_acts) != n or any(len(s.block_s) != n for s in stages):
        raise ConfigError(f"every per-block figure needs {n} values, one per block")
    if p > n:
        raise ConfigError(f"{p} stages need at least {p} blocks; the model has {n}: use at "
                          f"most {n} stages")
    if microbatches < 1 or (schedule == "1f1b" and microbatches < p):
        raise ConfigError(f"parallel.schedule = {schedule!r} over {p} stages needs "
                          f"microbatches >= {p if schedule == '1f1b' else 1} (got "
                          f"{microbatches}); set microbatches = {max(p, 2 * p)}")
    for s in stages:
        if s.ranks < 1 or s.memory_bytes <= 0:
            raise ConfigError(f"stage on {s.chip}: ranks must be >= 1 and memory > 0 (got "
                              f"{s.ranks}, {s.memory_bytes})")
    return n


def _no_fit(stages: Sequence[StageChip], model: ModelBytes, n: int, microbatches: int,
            schedule: str, sharded: bool) -> ConfigError:
    """The error when no split fits: the stage that cannot hold even its least, or else
    the stage most over its memory in the best split that ignores memory."""
    p = len(stages)
    for s, st in enumerate(stages):
        # Its least: one block (the smallest), with only the other stages' minimum blocks.
        need = min(stage_cost(stages, model, s, i, i + 1, microbatches=microbatches,
                              schedule=schedule, sharded=sharded)[1] for i in range(n))
        if need > st.memory_bytes:
            return ConfigError(f"stage {s} on {st.chip} cannot fit even one block: it needs "
                               f"{need / _GIB:.2f} GiB per chip, a {st.chip} has "
                               f"{st.memory_bytes / _GIB:.2f} GiB; add ranks with "
                               f"stage_mode = 'fsdp', use fewer micro-batches in flight "
                               f"(schedule = '1f1b') or a larger chip")
    best = _solve(stages, model, n, microbatches, schedule, sharded, fit=False)
    assert best is not None
    over = []
    lo = 0
    for s, k in enumerate(best):
        mem = stage_cost(stages, model, s, lo, lo + k, microbatches=microbatches,
                         schedule=schedule, sharded=sharded)[1]
        over.append((mem / stages[s].memory_bytes, s, mem))
        lo += k
    _, s, mem = max(over)
    return ConfigError(f"no split of {n} blocks over {p} stages fits memory: stage {s} on "
                       f"{stages[s].chip} needs {mem / _GIB:.2f} GiB per chip in the fastest "
                       f"split, a {stages[s].chip} has {stages[s].memory_bytes / _GIB:.2f} "
                       f"GiB; add ranks to that stage (stage_mode = 'fsdp'), use fewer "
                       f"micro-batches in flight, or more stages")


def _solve(stages: Sequence[StageChip], model: ModelBytes, n: int, microbatches: int,
           schedule: str, sharded: bool, *, fit: bool) -> tuple[int, ...] | None:
    """Blocks per stage minimizing the slowest stage (only splits that fit when ``fit``);
    None if none fits. Ties go to the split whose earlier stages end earliest."""
    p = len(stages)
    inf = float("inf")
    # best[s][j]: slowest slot of stages 0..s when stage s ends after block j-1.
    best = [[inf] * (n + 1) for _ in range(p)]
    back = [[-1] * (n + 1) for _ in range(p)]
    for s in range(p):
        for j in range(s + 1, n - (p - 1 - s) + 1):
            for i in range(s, j):  # stage s holds blocks i..j-1
                prev = 0.0 if s == 0 else best[s - 1][i]
                if s == 0 and i != 0:
                    break
                if prev == inf:
                    continue
                t, mem = stage_cost(stages, model, s, i, j, microbatches=microbatches,
                                    schedule=schedule, sharded=sharded)
                if fit and mem > stages[s].memory_bytes:
                    continue
                v = max(prev, t)
                if v < best[s][j]:
                    best[s][j], back[s][j] = v, i
    if best[p - 1][n] == inf:
        return None
    ends, j = [], n
    for s in range(p - 1, -1, -1):
        ends.append(j)
        j = back[s][j] if s > 0 else 0
    ends.reverse()
    return tuple(b - a for a, b in zip([0, *ends[:-1]], ends, strict=True))


def all_splits(n: int, p: int) -> list[tuple[int, ...]]:
    """Every split of ``n`` blocks into ``p`` non-empty contiguous stages (brute force)."""
    return [tuple(b - a for a, b in zip((0, *cuts), (*cuts, n), strict=True))
            for cuts in itertools.combinations(range(1, n), p - 1)]


def split_blocks(stages: Sequence[StageChip], model: ModelBytes, *, microbatches: int,
                 schedule: Schedule = "1f1b", sharded: bool = False) -> SplitPlan:
    """The fastest contiguous split that fits every stage's memory (see the module doc);
    ConfigError with the numbers when none fits or the input is not valid. ``sharded``:
    fsdp inside each stage (parameter state divided by the stage's ranks)."""
    n = _check(stages, model, microbatches, schedule)
    blocks = _solve(stages, model, n, microbatches, schedule, sharded, fit=True)
    if blocks is None:
        raise _no_fit(stages, model, n, microbatches, schedule, sharded)
    return split_of(stages, model, blocks, microbatches=microbatches, schedule=schedule,
                    sharded=sharded)


def split_of(stages: Sequence[StageChip], model: ModelBytes, blocks: Sequence[int], *,
             microbatches: int, schedule: Schedule = "1f1b", sharded: bool = False
             ) -> SplitPlan:
    """What a given split (``blocks`` per stage) predicts: each stage's time and memory,
    the step and the bubble (no memory check: the caller decided the split)."""
    times, mems, lo = [], [], 0
    for s, k in enumerate(blocks):
        t, mem = stage_cost(stages, model, s, lo, lo + k, microbatches=microbatches,
                            schedule=schedule, sharded=sharded)
        times.append(t)
        mems.append(mem)
        lo += k
    p = len(stages)
    return SplitPlan(blocks=tuple(blocks), stage_s=tuple(times), stage_bytes=tuple(mems),
                     step_s=(microbatches + p - 1) * max(times),
                     bubble=(p - 1) / (microbatches + p - 1))
