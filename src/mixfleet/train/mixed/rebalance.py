"""Online rebalance of the shares on a mixed fleet, and the plan of a mixed-fleet job
(devices, initial shares, its :class:`MixedFleet` of step runner and rebalancer).

Every ``rebalance_every`` steps each rank reports its median *compute* time over the
window - its forward and backward passes over its share (on an emulated chip including
the padding that paces it, placed before the collective as a real chip's slower compute
would be) - and the median of the rest of its step outside the collective (optimizer,
logging, snapshots): step time minus compute minus the time in the collective. The time
spent *waiting* in the collective never counts: a fast rank that waits is not slow. On an
emulated chip the step's fixed costs and its time in priced transfers (emulated links,
``docs/emulation.md``) are not compute either: they go to the share-independent time.

Rank 0 models rank r's step as ``x_r / v_r + o_r`` (``v_r`` its measured samples/s,
``o_r`` its share-independent time), picks the shares that equalize it (integers summing
to B within the memory caps, :func:`~mixfleet.train.mixed.shares.largest_remainder`), and applies
them only when they shorten the predicted step time by more than ``hysteresis``; it
broadcasts the result so every rank applies the same shares from the same step. Each
change is a ``shares_changed`` event. The math is unaffected: any shares summing to B
give the same global batch and the same gradient up to float rounding.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from mixfleet.runs import Event
from mixfleet.train.mixed.collectives import FleetCollectives
from mixfleet.train.mixed.fleetstep import MixedFleetStep
from mixfleet.train.mixed.shares import (
    largest_remainder,
    memory_micro_cap,
    micro_cap,
    share_cap,
    start_speeds,
)
from mixfleet.train.sampler import equal_shares

if TYPE_CHECKING:
    from mixfleet.emulate import EmulatedDevice
    from mixfleet.emulate.asmodel import AsModelPlan
    from mixfleet.train.config import RankConfig, RunConfig
    from mixfleet.train.mixed.placement import RankDevice

__all__ = ["Decision", "decide", "Rebalancer", "MixedFleet", "rank_devices", "initial_plan",
           "plan_fleet", "hetero_enabled"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    """Rank 0's rebalance decision (``shares`` is None when the current ones stay)."""

    shares: list[int] | None
    speeds: list[float]
    overhead_s: list[float]
    step_s_now: float
    step_s_new: float

    @property
    def gain(self) -> float:
        """Predicted fraction of step time saved by the new shares."""
        return 1.0 - self.step_s_new / self.step_s_now if self.step_s_now > 0 else 0.0


def _predicted(shares: Sequence[int], speeds: Sequence[float], over: Sequence[float]) -> float:
    return max(s / max(v, 1e-12) + o for s, v, o in zip(shares, speeds, over, strict=True))


def _refine(shares: list[int], speeds: Sequence[float], over: Sequence[float],
            caps: Sequence[int | None] | None) -> list[int]:
    """Move single samples off the slowest rank while that lowers the predicted step
    time (rounding to integers by remainders alone can leave one rank a sample too many)."""
    out = list(shares)
    cap = [c if c else 1 << 30 for c in (caps or [None] * len(out))]

    def t(r: int, x: int) -> float:
        return x / max(speeds[r], 1e-12) + over[r]

    for _ in range(len(out) * 4):
        slow = max(range(len(out)), key=lambda r: t(r, out[r]))
        if out[slow] <= 1:
            break
        dest = min((r for r in range(len(out)) if r != slow and out[r] < cap[r]),
                   key=lambda r: t(r, out[r] + 1), default=None)
        if dest is None or t(dest, out[dest] + 1) >= t(slow, out[slow]):
            break
        out[slow] -= 1
        out[dest] += 1
    return out


def decide(shares: Sequence[int], compute_s: Sequence[float], overhead_s: Sequence[float], *,
           global_batch: int, caps: Sequence[int | None] | None = None,
           hysteresis: float = 0.05) -> Decision:
    """New shares from each rank's median compute time (of its share) and other time."""
    speeds = [s / max(c, 1e-9) for s, c in zip(shares, compute_s, strict=True)]
    over = [max(0.0, o) for o in overhead_s]
    # Equal finish time T: sum_r v_r (T - o_r) = B.
    t_eq = (global_batch + sum(v * o for v, o in zip(speeds, over, strict=True))) / sum(speeds)
    weights = [max(v * (t_eq - o), 1e-9) for v, o in zip(speeds, over, strict=True)]
    new = _refine(largest_remainder(weights, global_batch, caps=caps), speeds, over, caps)
    now_t, new_t = _predicted(shares, speeds, over), _predicted(new, speeds, over)
    keep = list(new) == list(shares) or now_t <= 0 or (1.0 - new_t / now_t) <= hysteresis
    return Decision(shares=None if keep else new, speeds=speeds, overhead_s=over,
                    step_s_now=now_t, step_s_new=new_t)


def rank_devices(cfg: RunConfig, world: int) -> list[str]:
    """Each rank's device string: ``[[ranks]]`` by RANK, else launch.device for all."""
    if cfg.ranks:
        if len(cfg.ranks) != world:
            from mixfleet.errors import ConfigError

            raise ConfigError(f"the job has {world} ranks but the config lists "
                              f"{len(cfg.ranks)} [[ranks]]; list one entry per rank")
        return [r.device for r in cfg.ranks]
    return [cfg.launch.device] * world


def initial_plan(cfg: RunConfig, devices: Sequence[str], workload: str
                 ) -> tuple[list[int], list[int], list[int | None]]:
    """(shares, micro-batch limit per rank, share cap per rank) before any measurement."""
    from mixfleet.catalog.base import get_chip
    from mixfleet.emulate import is_emulated, parse_emu_device

    sc, B = cfg.shares, cfg.train.global_batch
    n = len(devices)
    ranks: list[RankConfig | None] = list(cfg.ranks) or [None] * n
    micros = []
    for d, rc in zip(devices, ranks, strict=True):
        hbm = get_chip(parse_emu_device(d)).hbm_gib.value if is_emulated(d) else None
        micros.append(micro_cap(rc.max_micro_batch if rc is not None else 0,
                                sc.max_micro_batch, memory_micro_cap(hbm, sc.sample_mib)))
    caps = [share_cap(m, sc.max_accum) for m in micros]
    speeds = start_speeds(sc, devices, overrides=[rc.speed if rc else None for rc in ranks],
                          workload=workload)
    return largest_remainder(speeds, B, caps=caps), micros, caps


class Rebalancer:
    """A mixed fleet's online rebalance: each step's times recorded, every ``every`` steps
    new shares agreed on (see the module docstring). It never changes the trainer: it
    returns new shares, which the trainer adopts (``set_shares``)."""

    def __init__(self, coll: FleetCollectives, *, rank: int, world: int, global_batch: int,
                 caps: Sequence[int | None], every: int, hysteresis: float,
                 emu: EmulatedDevice | None = None) -> None:
        self.coll, self.rank, self.world, self.B = coll, rank, world, global_batch
        self.caps = list(caps)
        self.every, self.hysteresis = every, hysteresis
        self.emu = emu
        self._prev: float | None = None
        self._window: list[tuple[float, float]] = []
        self.last_details: dict[str, Any] = {}

    # -- per step (called by RebalanceCheck) ---------------------------------------------
    def after_step(self, step: int, shares: list[int], total_steps: int,
                   compute_s: float) -> list[int] | None:
        """After a step is done and logged (``compute_s``: this rank's compute time,
        pacing included): record its times; rebalance when due (a collective on every
        rank). The new shares, or None."""
        now = time.perf_counter()
        wait, self.coll.wait_s = self.coll.wait_s, 0.0
        rep = self.emu.last_report if self.emu is not None else None
        if rep is not None and compute_s > 0:  # fixed costs and priced transfers
            compute_s = max(1e-9, compute_s - rep.fixed_s - rep.comm_in_compute_s)
        if self._prev is not None:
            other = max(0.0, (now - self._prev) - wait - compute_s)
            self._window.append((compute_s, other))
        self._prev = now
        if not (self.every and step % self.every == 0 and step < total_steps):
            return None
        new = self.rebalance(step, shares)
        self._prev = time.perf_counter()  # the decision's collectives are not a step
        return new

    def fits(self, shares: Any) -> bool:
        """Whether ``shares`` (e.g. from a checkpoint) can be used by this job."""
        return (isinstance(shares, list) and len(shares) == self.world
                and sum(shares) == self.B and all(isinstance(s, int) and s >= 1 for s in shares)
                and all(c is None or s <= c for s, c in zip(shares, self.caps, strict=True)))

    # -- the decision ------------------------------------------------------------------
    def rebalance(self, step: int, shares: list[int]) -> list[int] | None:
        """Agree on new shares (a collective on every rank); the new shares or None."""
        w = self.world
        vec = torch.zeros(2 * w + 1, dtype=torch.float64)
        if self._window:
            vec[self.rank] = statistics.median(c for c, _ in self._window)
            vec[w + self.rank] = statistics.median(o for _, o in self._window)
        vec[2 * w] = 1.0 if not self._window else 0.0  # a rank without measurements
        if w > 1:
            dist.all_reduce(vec, group=self.coll.control)
        self._window = []
        old = list(shares)
        out = torch.tensor(old, dtype=torch.int64)
        decision = None
        if self.rank == 0 and vec[2 * w] == 0:
            decision = decide(old, vec[:w].tolist(), vec[w:2 * w].tolist(), global_batch=self.B,
                              caps=self.caps, hysteresis=self.hysteresis)
            if decision.shares is not None:
                out = torch.tensor(decision.shares, dtype=torch.int64)
        if w > 1:
            dist.broadcast(out, src=0, group=self.coll.control)
        new = [int(x) for x in out.tolist()]
        if new == old:
            return None
        self.last_details = {} if decision is None else {
            "samples_per_s": [round(v, 2) for v in decision.speeds],
            "overhead_s": [round(o, 5) for o in decision.overhead_s],
            "predicted_step_s": [round(decision.step_s_now, 5), round(decision.step_s_new, 5)],
            "predicted_gain": round(decision.gain, 4)}
        return new


@dataclasses.dataclass(frozen=True)
class MixedFleet:
    """A mixed-fleet job's parts on this rank: how a step runs, and how shares change."""

    steps: MixedFleetStep
    rebalancer: Rebalancer


def hetero_enabled(cfg: RunConfig) -> bool:
    """Whether the job uses the mixed-fleet path (else the trainer's plain one)."""
    from mixfleet.emulate.pricing import EmulateConfig
    from mixfleet.train.mixed.shares import SharesConfig

    if cfg.parallel.mode == "pipeline":  # stages, not shares: every rank runs the schedule
        return False
    return bool(cfg.ranks) or cfg.shares != SharesConfig() or cfg.emulate != EmulateConfig()


def configure_emulated(emu: EmulatedDevice, cfg: RunConfig, rank: int,
                       as_model: AsModelPlan | None = None) -> None:
    """Apply a rank's speed override and the fixed per-sample pace to its emulated chip;
    under ``as_model`` the named model's absolute pace (the chip's own figures: the
    relative speed is 1 unless overridden)."""
    override = cfg.ranks[rank].speed if cfg.ranks else None
    if as_model is not None:
        c = emu.chip_id
        emu.speed = 1.0 if override is None else float(override)
        emu.pace_absolute(as_model.token_s[c] * as_model.time_scale, as_model.costs[c],
                          per_sample=as_model.shape.seq_len, labels=as_model.fields())
        return
    if override is not None:
        emu.speed = float(override)
    if cfg.emulate.sample_s is not None:
        # budget = base x work x headroom / speed: fix base so that it is sample_s / speed.
        emu.calibrate(cfg.emulate.sample_s / emu.config.resolved_headroom())


def plan_fleet(cfg: RunConfig, devices: Sequence[str], *, rank: int, world: int, group: Any,
               workload: str, emit: Callable[..., Any], emu: EmulatedDevice | None = None,
               placements: Sequence[RankDevice] | None = None,
               as_model: AsModelPlan | None = None
               ) -> tuple[MixedFleet | None, list[int] | None, list[dict[str, Any]]]:
    """A mixed fleet's step runner and rebalancer, initial shares and the job's group table
    (every rank calls this at the same point: it creates process groups); no fleet and no
    shares when the job is not a mixed one."""
    if not hetero_enabled(cfg):
        table = FleetCollectives(devices, rank, group=group, placements=placements,
                                 backend=cfg.launch.backend).group_table()
        return None, None, table
    if emu is not None:
        configure_emulated(emu, cfg, rank, as_model)
    shares, micros, caps = initial_plan(cfg, devices, workload)
    coll = FleetCollectives.create(devices, rank, group=group, placements=placements,
                                   backend=cfg.launch.backend)
    fleet = MixedFleet(
        MixedFleetStep(coll, world=world, micro=micros[rank], emu=emu, micros=micros),
        Rebalancer(coll, rank=rank, world=world, global_batch=cfg.train.global_batch, caps=caps,
                   every=cfg.shares.rebalance_every, hysteresis=cfg.shares.hysteresis, emu=emu))
    if rank == 0:
        equal = equal_shares(cfg.train.global_batch, world)
        if shares != equal:
            emit(Event.SHARES_CHANGED, step=0, old=equal, new=shares,
                 reason=f"initial ({cfg.shares.mode})")
        emit(Event.FLEET, devices=list(devices), kinds=coll.kinds, hierarchical=coll.hierarchical,
             shares=shares, micro_batch=micros, groups=coll.group_table())
    return fleet, shares, coll.group_table()
