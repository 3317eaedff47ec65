"""The placement-policy interface: a pure function from a snapshot of the cluster to an
allocation (job id -> pool index).

The simulator and ``mixfleet plan`` build a :class:`Snapshot` and call
:meth:`Policy.allocate`; a policy reads it and returns which active jobs run where now.
Jobs missing from the allocation wait (or are preempted, for a preemptive policy). Memory
fit is a hard constraint: a job may only go to a pool in its ``options``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from mixfleet.errors import ConfigError
from mixfleet.fleet.reliability import ReliabilityProfile, availability, default_profile

__all__ = ["JobView", "PoolView", "Snapshot", "Policy", "Allocation", "register", "first_fit",
           "pool_views", "STOP",
           "make_policy", "POLICY_NAMES", "fit_options"]

Allocation = dict[str, int]
#: Where a non-preemptive policy that moves jobs (``moves = True``) sends a running job it
#: stops: the job saves its state and waits (to make room for a shorter one).
STOP = -1


class JobView(Protocol):
    """What a policy sees of one active job (read only)."""

    @property
    def id(self) -> str: ...
    @property
    def workload(self) -> str: ...
    @property
    def devices(self) -> int: ...
    @property
    def mem_gib(self) -> float: ...
    @property
    def priority(self) -> int: ...
    @property
    def arrival_s(self) -> float: ...
    @property
    def remaining(self) -> float:
        """Work left, reference device-seconds, *as estimated* (the simulator's estimator,
        :mod:`mixfleet.fleet.estimates`; the truth only under ``--estimates oracle``)."""
        ...
    @property
    def pool(self) -> int | None:
        """Index of the pool it runs on now, None while waiting."""
        ...
    @property
    def eta(self) -> float:
        """When it completes at its current rate if nothing fails, by the estimate of
        :attr:`remaining` (inf while waiting)."""
        ...
    @property
    def options(self) -> tuple[int, ...]:
        """Pools it fits (memory, device count, a throughput figure), by index."""
        ...
    @property
    def run_s(self) -> list[float]:
        """Seconds it has been placed on each pool."""
        ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolView:
    """One pool as a policy sees it."""

    index: int
    id: str
    chip: str
    is_nvidia: bool
    capacity: int
    mem_gib: float | None
    reliability: ReliabilityProfile
    """As the fleet knows it: the profile, in a simulation estimated from the failures and
    throttles seen so far (:mod:`mixfleet.sim.knowledge`)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Snapshot:
    """The cluster at ``time``: pools, active jobs in arrival order, relative speeds.

    ``waiting``, ``running`` and ``free`` are derived from ``jobs`` when not given (the
    simulator passes its own incrementally kept views; a policy must not change them)."""

    time: float
    pools: tuple[PoolView, ...]
    jobs: Collection[JobView]
    speed: dict[str, tuple[float | None, ...]]
    """workload -> per pool, throughput of one device relative to the reference chip, as
    the fleet's throughput table says (never the simulator's truth; docs/fleet.md)."""
    failures: bool = True
    """Whether failures and throttling are in play (goodput counts them only then)."""
    waiting: Collection[JobView] = ()
    """Jobs not running now, in arrival order."""
    running: tuple[Collection[JobView], ...] = ()
    """Per pool, the jobs running there."""
    free: tuple[int, ...] = ()
    """Per pool, devices not held by running jobs."""
    migration_s: float = 60.0
    """Stall a job pays when it starts again after a move or preemption, seconds."""

    def __post_init__(self) -> None:
        if not self.free:
            run: list[list[JobView]] = [[] for _ in self.pools]
            wait = []
            for j in self.jobs:
                if j.pool is None:
                    wait.append(j)
                else:
                    run[j.pool].append(j)
            free = tuple(p.capacity - sum(j.devices for j in r)
                         for p, r in zip(self.pools, run, strict=True))
            object.__setattr__(self, "waiting", wait)
            object.__setattr__(self, "running", tuple(run))
            object.__setattr__(self, "free", free)

    def goodput_factor(self, pool: int, devices: int) -> float:
        """Expected share of throughput kept on ``pool`` under its failures and throttling
        (Young/Daly checkpointing), for a job on ``devices`` devices."""
        if not self.failures:
            return 1.0
        return _factor(self.pools[pool].reliability, devices)


_factor_cache: dict[tuple[float, ...], float] = {}


def _factor(rel: ReliabilityProfile, devices: int) -> float:
    key = (rel.mtbf_h, rel.throttle_per_h, rel.throttle_s, rel.throttle_slowdown,
           rel.restart_s, rel.checkpoint_s, float(devices))
    v = _factor_cache.get(key)
    if v is None:
        v = availability(rel, devices) * rel.throttle_factor(devices)
        if len(_factor_cache) > 100_000:
            _factor_cache.clear()
        _factor_cache[key] = v
    return v


def fit_options(pools: Sequence[PoolView], speed: tuple[float | None, ...], devices: int,
                mem_gib: float) -> tuple[tuple[int, ...], str]:
    """The pools a job fits, and when none, why (for the report)."""
    opts = tuple(p.index for p in pools
                 if speed[p.index] is not None and (speed[p.index] or 0) > 0
                 and p.mem_gib is not None and mem_gib <= p.mem_gib
                 and devices <= p.capacity)
    if opts:
        return opts, ""
    mems = [p.mem_gib for p in pools if p.mem_gib is not None]
    if not mems or mem_gib > max(mems):
        why = (f"needs {mem_gib:g} GiB per device; the largest device memory in the fleet is "
               f"{max(mems) if mems else 'unknown'} GiB")
    elif devices > max(p.capacity for p in pools):
        why = (f"needs {devices} devices; the largest pool has "
               f"{max(p.capacity for p in pools)}")
    else:
        why = "no pool that fits its memory and size has a throughput figure for its workload"
    return (), why


class Policy(Protocol):
    """A placement policy."""

    name: str
    round_s: float | None
    """Length of a scheduling round (None: decide at arrivals and completions)."""
    preemptive: bool
    """Whether it may stop running jobs (then it is asked even when no device is free)."""

    def allocate(self, snap: Snapshot) -> Allocation:
        """Job id -> pool index. A preemptive policy lists every job that runs now (a
        running job left out is preempted); a non-preemptive one lists only the waiting jobs
        it starts now (running jobs keep running) and, if its class sets ``moves = True``,
        running jobs it moves to another pool (they save their state and restart there,
        paying ``Snapshot.migration_s``) or stops (``STOP``: it saves its state and waits);
        such a policy is asked at every arrival and completion. The live fleet carries out
        starts, and such a policy's stops and moves (:mod:`mixfleet.live.preempt`), not a
        preemptive policy's leaving a running job out."""
        ...


_REGISTRY: dict[str, type] = {}
POLICY_NAMES: list[str] = []


def register(name: str) -> Any:
    """Class decorator: make a policy available by ``name``."""
    def deco(cls: type) -> type:
        _REGISTRY[name] = cls
        POLICY_NAMES.append(name)
        return cls
    return deco


def make_policy(name: str, **options: float) -> Policy:
    """A policy by name; an unknown one raises ConfigError listing the known ones."""
    from mixfleet.fleet import policies  # noqa: F401  (registers the built-ins)

    if name not in _REGISTRY:
        raise ConfigError(f"unknown policy {name!r}; use one of {', '.join(POLICY_NAMES)}")
    obj: Policy = _REGISTRY[name](**options)
    return obj


def best(options: tuple[int, ...], speeds: tuple[float | None, ...]) -> float:
    """The highest relative speed among ``options`` (0 when none)."""
    return max((speeds[p] or 0.0 for p in options), default=0.0)


INF = math.inf


def first_fit(snap: Snapshot, pools_for: Callable[[Any], Sequence[int]]) -> Allocation:
    """Waiting jobs in order, each on the first pool of ``pools_for(job)`` with room;
    never preempts. A job too big for any pool right now does not block the rest."""
    free = list(snap.free)
    alloc: Allocation = {}
    most = max(free)
    for j in snap.waiting:
        if most <= 0:
            break
        if j.devices > most:
            continue
        for p in pools_for(j):
            if free[p] >= j.devices:
                alloc[j.id] = p
                free[p] -= j.devices
                most = max(free)
                break
    return alloc


def pool_views(fleet: Any, capacity: Mapping[str, int] | None = None) -> tuple[PoolView, ...]:
    """The policies' view of a fleet's pools (shared by the simulator, the planner and the
    live scheduler). ``capacity``: devices usable now per pool id (the live fleet's
    inventory), else each pool's configured capacity. A pool without a reliability profile
    (the live fleet's) gets its chip family's documented default."""
    out = []
    for i, p in enumerate(fleet.pools):
        rel = getattr(p, "reliability", None) or default_profile(p.is_nvidia)
        cap = p.capacity if capacity is None else capacity[p.id]
        out.append(PoolView(index=i, id=p.id, chip=getattr(p.chip, "id", p.chip),
                            is_nvidia=p.is_nvidia, capacity=cap, mem_gib=p.mem_gib,
                            reliability=rel))
    return tuple(out)
