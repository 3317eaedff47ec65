"""The terms of the cost model (docs/costmodel.md): the job record, a chip's seconds per
work unit, a rank's step, balanced shares, memory per chip and the priced collectives of
each mode. Every assumption is a constant at the top of this module, in one place.
:mod:`mixfleet.fleet.costmodel` puts the terms together.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable, Sequence

from mixfleet.catalog.base import Chip
from mixfleet.catalog.table import ThroughputRow
from mixfleet.emulate.pricing import LinkPrices, StepCost, transfer_s
from mixfleet.emulate.profile import EmuProfile
from mixfleet.errors import ConfigError
from mixfleet.fleet.jobshape import ModelShape, RankSpec

__all__ = ["OVERLAP", "GRAD_BYTES", "MASTER_BYTES", "OPT_BYTES", "HBM_USABLE", "Fig",
           "JobSpec", "roofline_s", "unit_seconds", "rank_time", "split_micro",
           "balanced_shares", "memory_parts", "dp_comm", "fsdp_comm", "Comm"]

#: Fraction of each mode's communication hidden behind compute. None: dp reduces after the
#: backward pass, and the emulator paces every collective on its own (it cannot overlap
#: with the compute it follows), so the model assumes the same for fsdp.
OVERLAP: dict[str, float] = {"dp": 0.0, "fsdp": 0.0}
GRAD_BYTES = 4  # gradients are reduced in fp32 (dp's flat buffer; fsdp's reduce_dtype)
MASTER_BYTES = 4  # parameters kept in fp32 (dp replicas; fsdp shards)
OPT_BYTES = {"sgd": 4, "adamw": 8}  # momentum; Adam's two moments (fp32)
HBM_USABLE = 0.9  # share of the catalog HBM a job can use (assumed: runtime, allocator)

#: Exposed seconds per link class, and the links crossed (described with their origin).
Comm = tuple[dict[str, float], list[str]]


@dataclasses.dataclass(frozen=True)
class Fig:
    """A number and where it comes from (measured, emulated, catalog, assumed)."""

    value: float
    origin: str
    note: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobSpec:
    """A training job as the cost model sees it."""

    model: ModelShape
    global_batch: int
    optimizer: str = "adamw"
    unit: str = "samples"  # the work unit the chips' step cost counts: samples or tokens
    param_bytes: int = 2  # fsdp's compute dtype of the parameters (bf16 on accelerators)
    reshard_after_forward: bool = True
    activation_checkpointing: bool = False
    max_micro_batch: int = 0  # samples a rank holds at once unless its own limit says
    max_accum: int = 8
    sample_s: float | None = None  # the emulated pace (no as_model): s per sample at speed 1
    shares: tuple[int, ...] | None = None  # pinned shares; None: balanced by the model
    microbatches: int = 0  # pipeline: micro-batches per lane and step (0: the plan picks)
    schedule: str = "1f1b"  # pipeline: the schedule (1f1b or gpipe are modelled)
    stage_modes: tuple[str, ...] = ("dp", "fsdp")  # pipeline: inside-stage modes the run
    # can take (none: the workload cannot be cut into stages)
    stages: tuple[tuple[str, int, int], ...] = ()  # pipeline: given (chip, ranks, blocks)

    def __post_init__(self) -> None:
        if self.global_batch < 1:
            raise ConfigError(f"train.global_batch must be >= 1 (got {self.global_batch})")
        if self.optimizer not in OPT_BYTES:
            raise ConfigError(f"train.optimizer {self.optimizer!r} is unknown to the cost "
                              f"model; use {' or '.join(OPT_BYTES)}")
        if self.unit not in ("samples", "tokens"):
            raise ValueError(f"unit must be samples or tokens (got {self.unit!r})")

    @property
    def units_per_sample(self) -> int:
        return (self.model.seq_len or 1) if self.unit == "tokens" else 1


def roofline_s(flops: float, chip: Chip, efficiency: float, *, nbytes: float = 0.0,
               memory_efficiency: float = 1.0, peak_tflops: float | None = None,
               bw_tbps: float | None = None) -> float | None:
    """Seconds of ``flops`` (and ``nbytes`` of memory traffic) on ``chip`` at the given
    efficiencies: the catalog roofline, the one the fleet planner uses too. None when a
    figure it needs is unknown (``peak_tflops`` / ``bw_tbps`` stand in for the catalog's)."""
    peak = chip.peak_flops() or (peak_tflops * 1e12 if peak_tflops else None)
    if peak is None:
        return None
    t = flops / (peak * efficiency)
    if nbytes > 0:
        bw = chip.hbm_tbps.value if chip.hbm_tbps.value is not None else bw_tbps
        if bw is None:
            return None
        t = max(t, nbytes / (bw * 1e12 * memory_efficiency))
    return t


def unit_seconds(chip: Chip, job: JobSpec, profile: EmuProfile, *, emulated: bool,
                 speed: float = 1.0, rows: Sequence[ThroughputRow] = ()) -> Fig:
    """Seconds per work unit at full efficiency on ``chip``: from the largest-batch bench
    row of the model on the chip (its profile's fixed costs and efficiency taken out), else
    the emulated pace (``sample_s / speed``), else the roofline at the profile's MFU."""
    upb = job.units_per_sample
    cost = profile.step_cost(job.unit)
    mine = [r for r in rows if r.workload == job.model.name and r.chip == chip.id
            and r.samples_per_s > 0]
    if mine:
        r = max(mine, key=lambda x: (x.batch, x.samples_per_s))
        t = r.step_p50_s if r.step_p50_s else r.batch / r.samples_per_s
        b = r.batch * upb
        work = max(t - cost.step_fixed_s - cost.microbatch_fixed_s, 1e-12)
        return Fig(work * cost.efficiency(b) / b, "emulated" if r.emulated else "measured",
                   f"bench row at batch {r.batch}")
    if emulated and job.sample_s is not None and job.unit == "samples":
        return Fig(job.sample_s / speed, "emulated", f"sample_s {job.sample_s:g} / speed "
                   f"{speed:.3f}")
    flops = job.model.flops_per_sample / upb
    roof = roofline_s(flops, chip, profile.mfu, peak_tflops=profile.relative_tflops)
    if roof is None:
        raise ConfigError(f"chip {chip.id} has no compute figure (catalog bf16_tflops "
                          f"unknown, no relative_tflops in its profile); give a bench table "
                          f"with --table, or set relative_tflops for it in a profile file")
    origin = "catalog" if chip.peak_flops() else "assumed"
    return Fig(roof, origin, f"FLOPs / (peak x mfu {profile.mfu:g}, assumed)")


def split_micro(share: int, micro: int) -> list[int]:
    if micro <= 0 or share <= micro:
        return [share]
    return [micro] * (share // micro) + ([share % micro] if share % micro else [])


def rank_time(share: int, micro: int, cost: StepCost, unit_s: float, upb: int,
              n_micro: int = 0) -> tuple[float, float, list[int]]:
    """(compute s, fixed s, micro-batches) of a rank's step: its share cut into
    micro-batches of at most ``micro`` samples, as ``StepCost.step_s`` prices them.
    ``n_micro`` > 0 (fsdp: every rank runs the same number, so that the collectives
    match): the share cut into ``n_micro`` near-equal micro-batches as the trainer cuts
    it (``torch.tensor_split``); the empty ones are listed as 0 and each is a stand-in
    that computes one sample (its loss x 0), priced as one, as a real chip and the
    emulator spend it."""
    if n_micro <= 0:
        mbs = split_micro(share, micro)
        sizes = mbs
    else:
        q, r = divmod(share, n_micro)
        mbs = [q + 1] * r + [q] * (n_micro - r)
        sizes = [b or 1 for b in mbs]
    compute = sum(b * upb * unit_s / cost.efficiency(b * upb) for b in sizes)
    fixed = cost.step_fixed_s + len(sizes) * cost.microbatch_fixed_s
    return compute, fixed, mbs


def balanced_shares(times: Sequence[Callable[[int], float]], total: int,
                    caps: Sequence[int | None]) -> list[int]:
    """Integer shares (>= 1, <= cap, summing to ``total``) minimizing the slowest rank's
    time, for nondecreasing ``times[i](share)``: one sample at a time to the rank whose
    next time is lowest (this picks the smallest values of the merged staircases, which is
    optimal for the min-max)."""
    n = len(times)
    cap = [total if c is None else c for c in caps]
    if sum(cap) < total or n > total:
        raise ConfigError(f"the ranks can hold {sum(cap)} samples a step (micro-batch x "
                          f"max_accum each) but train.global_batch is {total}; raise "
                          f"[shares] max_accum or max_micro_batch, or lower global_batch")
    s = [1] * n
    heap = [(times[i](2), i) for i in range(n) if cap[i] > 1]
    heapq.heapify(heap)
    for _ in range(total - n):
        t, i = heapq.heappop(heap)
        s[i] += 1
        if s[i] < cap[i]:
            heapq.heappush(heap, (times[i](s[i] + 1), i))
    return s


def memory_parts(job: JobSpec, mode: str, world: int, micro: int
                 ) -> tuple[dict[str, float], str]:
    """Bytes per part on one rank holding micro-batches of ``micro`` samples, and the
    origin of the activation figure. fsdp: a 1/world shard of the fp32 parameters,
    gradients and optimizer state, plus the root and two blocks gathered (one computing,
    one prefetched) in the compute dtype."""
    m = job.model
    parts: dict[str, float]
    if mode == "dp":
        parts = {"params": m.params * MASTER_BYTES, "grads": m.params * GRAD_BYTES,
                 "optimizer": m.params * OPT_BYTES[job.optimizer]}
        act_bytes = 4  # dp runs the model in fp32
    else:
        shard = m.params / world
        parts = {"params": shard * MASTER_BYTES, "grads": shard * GRAD_BYTES,
                 "optimizer": shard * OPT_BYTES[job.optimizer],
                 "gathered": (m.root_params + 2 * m.block_params) * job.param_bytes}
        act_bytes = job.param_bytes if job.param_bytes == 2 else 4
    act = m.act_bytes(micro, act_bytes=act_bytes, checkpointing=job.activation_checkpointing
                      and mode == "fsdp")
    parts["activations"] = act if act is not None else 0.0
    return parts, "assumed" if act is None else m.act_origin


def _add(acc: dict[str, float], links: list[str], cls: str, t: float, desc: str) -> None:
    acc[cls] = acc.get(cls, 0.0) + t
    if desc not in links:
        links.append(desc)


def dp_comm(job: JobSpec, ranks: Sequence[RankSpec], n_micro: int, prices: LinkPrices,
            catalog: dict[str, Chip]) -> Comm:
    """dp: one ring all-reduce of the fp32 gradients over all ranks after the backward
    pass, on the group's slowest link (the emulator paces the whole logical all-reduce so;
    mixfleet's hierarchical reduce on several kinds moves the same bytes across the bridge
    when each kind has one rank)."""
    acc: dict[str, float] = {}
    links: list[str] = []
    if len(ranks) > 1:
        lk = prices.group_link([r.chip for r in ranks], [r.node for r in ranks],
                               catalog=catalog)
        _add(acc, links, lk.cls, transfer_s("all_reduce", job.model.params * GRAD_BYTES,
                                            len(ranks), lk), lk.describe())
    return acc, links


def fsdp_comm(job: JobSpec, ranks: Sequence[RankSpec], n_micro: int, prices: LinkPrices,
              catalog: dict[str, Chip]) -> Comm:
    """fsdp: per micro-batch an all-gather of each block and of the root for the forward
    and again for the backward (when resharded after the forward: FSDP2 keeps the root
    gathered only when ``reshard_after_forward`` is left unset, and mixfleet sets it on
    every unit); per step a reduce-scatter of each one's fp32 gradients (gradient sync is
    off until the last micro-batch)."""
    n = len(ranks)
    acc: dict[str, float] = {}
    links: list[str] = []
    if n == 1:
        return acc, links
    lk = prices.group_link([r.chip for r in ranks], [r.node for r in ranks], catalog=catalog)
    m = job.model
    twice = 2 if job.reshard_after_forward else 1
    units = [(m.block_params, twice)] * m.blocks + ([(m.root_params, twice)]
                                                     if m.root_params else [])
    t = sum(n_micro * g * transfer_s("all_gather", u * job.param_bytes, n, lk)
            + transfer_s("reduce_scatter", u * GRAD_BYTES, n, lk) for u, g in units)
    _add(acc, links, lk.cls, t, lk.describe())
    return acc, links
