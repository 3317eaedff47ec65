"""Shares of the global batch for ranks on different chips (docs/architecture.md,
"Training semantics").

A rank's *share* is how many of the B samples of a global step it takes (the sampler gives
it a contiguous slice). Shares are integers summing to B, in proportion to each rank's
speed - from the chips' relative speeds (a throughput table, the catalog, or a per-rank
override), or measured from the ranks' compute times - and at least 1 each so every rank
keeps a measurable step. A rank's memory caps how many samples it holds at once (its
*micro-batch*); gradient accumulation over up to ``max_accum`` micro-batches lets its share
exceed that, so the share itself is capped at ``micro x max_accum``.

Everything here is a pure function of its arguments (no collectives, no clocks).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import torch

from mixfleet.config import Section, field, require
from mixfleet.errors import ConfigError

__all__ = ["SharesConfig", "largest_remainder", "shares_from_speeds", "step_time",
           "memory_micro_cap", "micro_cap", "share_cap", "micro_batches", "rank_speeds",
           "start_speeds", "shed_shares"]


def largest_remainder(weights: Sequence[float], total: int, *,
                      caps: Sequence[int | None] | None = None, minimum: int = 1) -> list[int]:
    """Integers summing to ``total``, proportional to ``weights``, each in [minimum, cap].

    Proportional shares above a cap are clamped and the excess is spread over the others
    (water-filling); the integer parts are floors plus one for the largest remainders.
    Raises ConfigError when the caps cannot hold ``total`` or the minimum cannot be met.
    """
    n = len(weights)
    if n == 0:
        raise ValueError("no ranks to share among")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be finite and >= 0 (got {list(weights)})")
    cap = [total if c is None or c <= 0 else int(c) for c in (caps or [None] * n)]
    if sum(cap) < total:
        raise ConfigError(f"the ranks can hold {sum(cap)} samples a step (micro-batch x "
                          f"max_accum each) but train.global_batch is {total}; raise "
                          f"[shares] max_accum or max_micro_batch, or lower global_batch")
    if minimum * n > total or any(c < minimum for c in cap):
        raise ConfigError(f"{n} ranks need at least {minimum} sample(s) each but "
                          f"train.global_batch is {total}; raise global_batch")
    w = [max(x, 0.0) for x in weights]
    if sum(w) <= 0:
        w = [1.0] * n
    # Water-filling on the real line: clamp to [minimum, cap], re-spread the rest.
    fixed: dict[int, float] = {}
    while True:
        free = [i for i in range(n) if i not in fixed]
        left = total - sum(fixed.values())
        wsum = sum(w[i] for i in free)
        ideal = {i: left * (w[i] / wsum if wsum > 0 else 1.0 / len(free)) for i in free}
        over = {i: float(cap[i]) for i, v in ideal.items() if v > cap[i]}
        under = {i: float(minimum) for i, v in ideal.items() if v < minimum}
        if not over and not under:
            real = {**fixed, **ideal}
            break
        fixed.update(over if over else under)
    out = [min(cap[i], max(minimum, math.floor(real[i] + 1e-9))) for i in range(n)]
    rest = total - sum(out)
    order = sorted(range(n), key=lambda i: (-(real[i] - math.floor(real[i] + 1e-9)), i))
    while rest > 0:
        progressed = False
        for i in order:
            if rest and out[i] < cap[i]:
                out[i] += 1
                rest -= 1
                progressed = True
        if not progressed:  # pragma: no cover - excluded by the capacity check above
            raise ConfigError("shares cannot be placed within the ranks' caps")
    while rest < 0:  # floors above the real value only through the minimum clamp
        i = max((j for j in range(n) if out[j] > minimum), key=lambda j: out[j] - real[j])
        out[i] -= 1
        rest += 1
    return out


def shares_from_speeds(speeds: Sequence[float], global_batch: int, *,
                       caps: Sequence[int | None] | None = None) -> list[int]:
    """Shares in proportion to ``speeds`` (samples/s or relative), summing to the batch."""
    return largest_remainder(speeds, global_batch, caps=caps)


def step_time(shares: Sequence[int], speeds: Sequence[float]) -> float:
    """Predicted step time: the slowest rank's share over its speed (all wait for it)."""
    return max(s / max(v, 1e-12) for s, v in zip(shares, speeds, strict=True))


def memory_micro_cap(hbm_gib: float | None, sample_mib: float, reserve: float = 0.2) -> int:
    """Samples that fit at once in ``hbm_gib`` at ``sample_mib`` each (0: no limit known).

    ``reserve`` is the fraction kept for the model, optimizer state and the allocator.
    """
    if hbm_gib is None or sample_mib <= 0:
        return 0
    return max(1, int(hbm_gib * 1024 * (1.0 - reserve) // sample_mib))


def micro_cap(*limits: int) -> int:
    """The tightest of several micro-batch limits (0 or less: no limit); 0 if none."""
    real = [x for x in limits if x > 0]
    return min(real) if real else 0


def share_cap(micro: int, max_accum: int) -> int | None:
    """The most samples a rank can take a step: micro-batch x accumulation (None: any)."""
    return micro * max_accum if micro > 0 else None


def micro_batches(idx: torch.Tensor, micro: int) -> list[torch.Tensor]:
    """``idx`` split into chunks of at most ``micro`` samples (0: one chunk)."""
    if micro <= 0 or len(idx) <= micro:
        return [idx]
    return list(idx.split(micro))


def rank_speeds(devices: Sequence[str], *, overrides: Sequence[float | None] = (),
                table: Sequence[object] | None = None, workload: str | None = None) -> list[float]:
    """Relative speed of each rank's device, for ``[shares] mode = "speed"``.

    Emulated chips (``emu:<id>``) take their speed from the throughput table or the
    catalog (relative to the fastest emulated chip of the job); a per-rank override wins.
    Real devices with no override count as speed 1.0 (equal), since a device string
    alone does not name the chip; give them a speed in ``[[ranks]]``.
    """
    from mixfleet.emulate import is_emulated, parse_emu_device, relative_speeds

    chips = sorted({parse_emu_device(d) for d in devices if is_emulated(d)})
    rel = relative_speeds(chips, table=table, workload=workload) if chips else {}  # type: ignore[arg-type]
    out = []
    for i, d in enumerate(devices):
        ov = overrides[i] if i < len(overrides) else None
        if ov is not None:
            out.append(float(ov))
        elif is_emulated(d):
            out.append(rel[parse_emu_device(d)])
        else:
            out.append(1.0)
    return out


def start_speeds(sc: SharesConfig, devices: Sequence[str], *,
                 overrides: Sequence[float | None] = (), workload: str | None = None
                 ) -> list[float]:
    """The weights of a run's initial shares (``[shares] mode``): 1.0 each (equal or
    measured, which starts equal), else :func:`rank_speeds` (with ``sc.table``'s rows).
    The trainer starts from these and the cost model predicts them (one owner)."""
    if sc.mode != "speed":
        return [1.0] * len(devices)
    table = None
    if sc.table:
        from mixfleet.catalog.table import read_table

        table = read_table(sc.table)
    return rank_speeds(devices, overrides=overrides, table=table, workload=workload)


def shed_shares(shares: Sequence[int], rank: int) -> list[int] | None:
    """Half of ``rank``'s share moved to the others in proportion to theirs (the same
    integers on every rank); None when there is nothing to move."""
    old = list(shares)
    give = old[rank] // 2
    others = [r for r in range(len(old)) if r != rank]
    total = sum(old[r] for r in others)
    if give < 1 or total < 1:
        return None
    add = {r: give * old[r] // total for r in others}
    for r in sorted(others, key=lambda q: -(give * old[q] % total))[: give - sum(add.values())]:
        add[r] += 1
    return [old[r] - give if r == rank else old[r] + add[r] for r in range(len(old))]


@dataclasses.dataclass(kw_only=True, frozen=True)
class SharesConfig(Section, section="shares"):
    """The ``[shares]`` table of a run config: each rank's share of the global batch."""

    mode: Literal["equal", "speed", "measured"] = field(
        "equal", help="initial shares of the global batch: equal; speed (from the chips' "
                      "relative speeds); measured (equal, then from the compute times of "
                      "the first rebalance_every steps)")
    rebalance_every: int = field(0, help="steps between rebalances from the measured "
                                 "compute times (0: never; mode = measured needs >= 1)", ge=0)
    hysteresis: float = field(0.05, help="apply new shares only when they shorten the "
                              "predicted step time by more than this fraction", ge=0, lt=1)
    max_micro_batch: int = field(0, help="samples any rank holds at once (0: no limit)", ge=0)
    max_accum: int = field(8, help="micro-batches a rank may accumulate per step; a share "
                           "is capped at micro-batch x max_accum", ge=1)
    sample_mib: float = field(0.0, help="memory per sample (MiB); with the catalog's HBM "
                              "it caps each chip's micro-batch (0: unknown, no cap)", ge=0)
    table: str | None = field(None, help="throughput table (JSON from `mixfleet bench`) "
                              "for mode = speed")

    def __post_init__(self) -> None:
        require(self.mode != "measured" or self.rebalance_every >= 1, "shares.mode "
                 "\"measured\" needs shares.rebalance_every >= 1 (got 0); set [shares] "
                 "rebalance_every = 20")
