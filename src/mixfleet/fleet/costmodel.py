"""One cost model (DESIGN.md "One cost model"; docs/costmodel.md): a job's step time,
memory per chip and throughput under each parallel mode, before it runs.

Step time = the slowest rank's compute + fixed costs, then the exposed communication per
link class. A rank's compute is its micro-batches' work at its chip's seconds per work unit
(:func:`unit_seconds`: a ``mixfleet bench`` row, the emulated pace, or the catalog roofline),
each micro-batch through the profile's efficiency curve; fixed costs are the profile's
:class:`~mixfleet.emulate.pricing.StepCost`; transfers are priced by
:func:`~mixfleet.emulate.pricing.transfer_s` on :meth:`LinkPrices.group_link`, the same
functions the emulator paces by. Every figure carries its origin: measured, emulated,
catalog or assumed. The assumptions are constants of :mod:`mixfleet.fleet.costterms`, in
one place.

A mode is a predictor in :data:`MODES`: ``(mode, Context) -> ModePlan``. ``dp`` and
``fsdp`` share :func:`data_parallel` (they differ in memory and collectives); the pipeline
mode registers its own predictor (stages, bubbles) with the same signature.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from mixfleet.catalog.base import Chip, load_catalog
from mixfleet.catalog.table import ThroughputRow
from mixfleet.emulate.pricing import LinkPrices, StepCost
from mixfleet.emulate.profile import EmuProfile, load_profiles
from mixfleet.errors import ConfigError
from mixfleet.fleet.costterms import (
    HBM_USABLE,
    OVERLAP,
    Fig,
    JobSpec,
    balanced_shares,
    dp_comm,
    fsdp_comm,
    memory_parts,
    rank_time,
    split_micro,
    unit_seconds,
)
from mixfleet.fleet.jobshape import RankSpec

__all__ = ["JobSpec", "Fig", "RankPlan", "ModePlan", "Context", "ModeFn", "MODES",
           "data_parallel", "predict", "choose", "register_mode", "refusal_text"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RankPlan:
    """One rank's share of a mode's step and its memory."""

    rank: int
    chip: str
    share: int
    micro_batches: tuple[int, ...]  # samples per micro-batch (stand-ins of fsdp count 0)
    compute_s: float
    fixed_s: float
    unit_s: Fig
    memory: dict[str, float]  # bytes per part (params, grads, optimizer, activations, ...)
    hbm_bytes: float | None
    fits: bool

    @property
    def busy_s(self) -> float:
        return self.compute_s + self.fixed_s

    @property
    def need_bytes(self) -> float:
        return sum(self.memory.values())


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModePlan:
    """A mode's predicted step: its split, per-rank figures, throughput and origins."""

    mode: str
    ranks: tuple[RankPlan, ...]
    comm: dict[str, float]  # exposed seconds per link class (intra, bridge, nic)
    links: tuple[str, ...]  # the links crossed, described with their origin
    samples_per_step: int
    units_per_sample: int
    origins: dict[str, str]
    refusal: str = ""  # why it does not fit (names the chip, the need and the HBM)
    idle_s: float = 0.0  # seconds the critical rank waits (a pipeline's bubble)
    critical_rank: int | None = None  # the rank that sets the step (None: the busiest)
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)  # a mode's own figures

    @property
    def critical(self) -> RankPlan:
        if self.critical_rank is not None:
            return next(r for r in self.ranks if r.rank == self.critical_rank)
        return max(self.ranks, key=lambda r: (r.busy_s, -r.rank))

    @property
    def compute_s(self) -> float:
        return self.critical.compute_s

    @property
    def fixed_s(self) -> float:
        return self.critical.fixed_s

    @property
    def step_s(self) -> float:
        return self.critical.busy_s + self.idle_s + sum(self.comm.values())

    @property
    def fits(self) -> bool:
        return not self.refusal

    @property
    def samples_per_s(self) -> float:
        return self.samples_per_step / self.step_s if self.step_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A stable JSON shape (plan-job --json, the ``plan`` event)."""
        return {
            "mode": self.mode, "step_s": self.step_s, "compute_s": self.compute_s,
            "fixed_s": self.fixed_s, "comm_s": dict(self.comm), "links": list(self.links),
            "samples_per_s": self.samples_per_s,
            "tokens_per_s": self.samples_per_s * self.units_per_sample
            if self.units_per_sample > 1 else None,
            "fits": self.fits, "refusal": self.refusal or None, "origins": dict(self.origins),
            "ranks": [{"rank": r.rank, "chip": r.chip, "share": r.share,
                       "micro_batches": list(r.micro_batches), "compute_s": r.compute_s,
                       "fixed_s": r.fixed_s, "unit_s": r.unit_s.value,
                       "unit_origin": r.unit_s.origin, "memory_bytes": dict(r.memory),
                       "need_bytes": r.need_bytes, "hbm_bytes": r.hbm_bytes, "fits": r.fits}
                      for r in self.ranks],
            "idle_s": self.idle_s, **({self.mode: self.detail} if self.detail else {}),
        }


def refusal_text(rp: RankPlan, mode: str) -> str:
    """Why ``rp`` does not fit under ``mode``: the chip, the rank, the need and the HBM."""
    gib = 2**30
    parts = ", ".join(f"{k} {v / gib:.1f}" for k, v in rp.memory.items())
    return (f"{mode} does not fit: {rp.chip} (rank {rp.rank}) needs "
            f"{rp.need_bytes / gib:.1f} GiB ({parts}) "
            f"> HBM {rp.hbm_bytes / gib / HBM_USABLE:.0f} GiB x {HBM_USABLE:g} usable"
            if rp.hbm_bytes is not None else "")


def _ranks(job: JobSpec, ranks: Sequence[RankSpec], mode: str, units: list[Fig],
           costs: list[StepCost], catalog: dict[str, Chip]) -> list[RankPlan]:
    n, upb = len(ranks), job.units_per_sample
    micro = [r.max_micro_batch or job.max_micro_batch for r in ranks]
    if job.shares is not None:
        if len(job.shares) != n or sum(job.shares) != job.global_batch:
            raise ConfigError(f"pinned shares {list(job.shares)} must be one per rank ({n}) "
                              f"and sum to train.global_batch ({job.global_batch})")
        shares = list(job.shares)
    else:
        caps = [m * job.max_accum if m > 0 else None for m in micro]
        fns = [lambda s, i=i: sum(rank_time(s, micro[i], costs[i], units[i].value, upb)[:2])
               for i in range(n)]
        shares = balanced_shares(fns, job.global_batch, caps)
    n_micro = max(len(split_micro(s, m)) for s, m in zip(shares, micro, strict=True)) \
        if mode == "fsdp" else 0
    out = []
    for i, r in enumerate(ranks):
        comp, fixed, mbs = rank_time(shares[i], micro[i], costs[i], units[i].value, upb,
                                     n_micro)
        mem, _ = memory_parts(job, mode, n, max(mbs))
        hbm = catalog[r.chip].hbm_gib.value
        hbm_b = hbm * 2**30 * HBM_USABLE if hbm is not None else None
        out.append(RankPlan(rank=i, chip=r.chip, share=shares[i], micro_batches=tuple(mbs),
                            compute_s=comp, fixed_s=fixed, unit_s=units[i], memory=mem,
                            hbm_bytes=hbm_b, fits=hbm_b is None or sum(mem.values()) <= hbm_b))
    return out


@dataclasses.dataclass(frozen=True)
class Context:
    """What every mode's predictor gets: the job, its ranks, each rank's seconds per work
    unit and step-cost shape, the link prices and the catalog."""

    job: JobSpec
    ranks: tuple[RankSpec, ...]
    units: tuple[Fig, ...]
    costs: tuple[StepCost, ...]
    prices: LinkPrices
    catalog: dict[str, Chip]


ModeFn = Callable[[str, Context], "ModePlan"]
_COMM = {"dp": dp_comm, "fsdp": fsdp_comm}


def data_parallel(mode: str, ctx: Context) -> ModePlan:
    """``dp`` or ``fsdp``: every rank computes its share; the mode's collectives follow."""
    job, ranks = ctx.job, ctx.ranks
    rps = _ranks(job, ranks, mode, list(ctx.units), list(ctx.costs), ctx.catalog)
    n_micro = max(len(r.micro_batches) for r in rps)
    comm, links = _COMM[mode](job, ranks, n_micro, ctx.prices, ctx.catalog)
    hidden = OVERLAP.get(mode, 0.0)
    comm = {k: v * (1.0 - hidden) for k, v in comm.items()}
    bad = [r for r in rps if not r.fits]
    worst = max(bad, key=lambda r: (r.need_bytes - (r.hbm_bytes or 0), -r.rank)) \
        if bad else None
    _, act_origin = memory_parts(job, mode, len(ranks), 1)
    origins = {"compute": "+".join(sorted({u.origin for u in ctx.units})),
               "fixed": "+".join(sorted({c.origin.split(" ")[0] for c in ctx.costs})),
               "comm": "+".join(sorted({d.rsplit("(", 1)[-1].rstrip(")") for d in links}))
               or "none", "memory": f"catalog HBM; activations {act_origin}"}
    refusal = ""
    if worst is not None:
        refusal = refusal_text(worst, mode) + ("; it fits none of the job's chips"
                                           if len(bad) == len(rps) > 1 else "")
    return ModePlan(mode=mode, ranks=tuple(rps), comm=comm, links=tuple(links),
                    samples_per_step=job.global_batch,
                    units_per_sample=job.model.seq_len or 1, origins=origins, refusal=refusal)


#: The parallel modes the model predicts, by name (the pipeline mode adds itself here:
#: :mod:`mixfleet.train.parallel.pipecost`, through :func:`register_mode`).
MODES: dict[str, ModeFn] = {"dp": data_parallel, "fsdp": data_parallel}


def register_mode(name: str, fn: ModeFn) -> None:
    """Make ``fn`` the predictor of parallel mode ``name`` (a mode that lives above this
    package, as the pipeline does in :mod:`mixfleet.train.parallel`)."""
    MODES[name] = fn


def predict(job: JobSpec, ranks: Sequence[RankSpec], *, modes: Sequence[str] = ("dp", "fsdp"),
            rows: Sequence[ThroughputRow] = (), prices: LinkPrices | None = None,
            profiles: dict[str, EmuProfile] | None = None,
            catalog: dict[str, Chip] | None = None) -> list[ModePlan]:
    """Each mode's predicted step on ``ranks`` (deterministic: same input, same output)."""
    from mixfleet.emulate.speed import relative_speeds

    cat = load_catalog() if catalog is None else catalog
    profs = load_profiles(catalog=cat) if profiles is None else profiles
    if not ranks:
        raise ConfigError("the job has no ranks; give [[ranks]] or --ranks")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ConfigError(f"parallel.mode {unknown[0]!r} has no cost model; use one of "
                          f"{', '.join(MODES)}")
    emu = sorted({r.chip for r in ranks if r.emulated})
    speed = relative_speeds(emu, catalog=cat, profiles=profs) if emu else {}
    units = tuple(_override(unit_seconds(cat[r.chip], job, profs[r.chip], emulated=r.emulated,
                                         speed=r.speed or speed.get(r.chip, 1.0), rows=rows),
                            r) for r in ranks)
    ctx = Context(job, tuple(ranks), units, tuple(profs[r.chip].step_cost(job.unit)
                                                  for r in ranks),
                  LinkPrices() if prices is None else prices, cat)
    return [MODES[mode](mode, ctx) for mode in modes]


def _override(u: Fig, r: RankSpec) -> Fig:
    """A ``[[ranks]] speed`` override slows an absolute pace (roofline, bench row) as the
    emulator does; the ``sample_s`` pace has it already."""
    if r.speed is None or not r.emulated or u.note.startswith("sample_s"):
        return u
    return Fig(u.value / r.speed, u.origin, f"{u.note} / speed {r.speed:g} (config)")


def choose(plans: Sequence[ModePlan]) -> tuple[ModePlan | None, dict[str, str]]:
    """The fastest plan that fits, and one line per other plan saying why it loses."""
    fit = sorted((p for p in plans if p.fits), key=lambda p: (p.step_s, p.mode))
    best = fit[0] if fit else None
    why: dict[str, str] = {}
    for p in plans:
        if p is best:
            continue
        if not p.fits:
            why[p.mode] = p.refusal
            continue
        assert best is not None
        parts = {"compute": p.compute_s - best.compute_s, "fixed costs": p.fixed_s - best.fixed_s,
                 "pipeline bubble": p.idle_s - best.idle_s,
                 **{f"{k} communication": p.comm.get(k, 0.0) - best.comm.get(k, 0.0)
                    for k in sorted(set(p.comm) | set(best.comm))}}
        k, v = max(parts.items(), key=lambda kv: (kv[1], kv[0]))
        if p.step_s <= best.step_s * 1.005:
            why[p.mode] = (f"{p.mode} is no faster than {best.mode} "
                           f"({_ms(p.step_s)} against {_ms(best.step_s)} ms per step)")
            continue
        why[p.mode] = (f"{p.mode} is {p.step_s / best.step_s:.2f}x slower than {best.mode}: "
                       f"{k} +{_ms(v)} ms per step")
    return best, why



def _ms(s: float) -> str:
    return f"{s * 1e3:.1f}"
