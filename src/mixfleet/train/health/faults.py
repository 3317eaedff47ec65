"""Exact, seeded fault injection: ``kind@key=value,...`` specs, each fired once per run.

- ``kill@rank=1,step=40``:
    SIGKILL the rank when it reaches the step
- ``kill-in-startup@rank=1``:
    SIGKILL the rank while it starts (before it resumes), once
- ``kill-in-checkpoint@rank=0,step=200``:
    SIGKILL the rank while it writes that step's checkpoint (after its files, before the commit)
- ``hang@rank=0,step=60,seconds=300``:
    the rank stops making progress for ``seconds``
- ``nan@step=70[,count=3][,rank=0]``:
    the gradient of that step (and the next ``count - 1``) is NaN
- ``slow@rank=1,from=30,factor=3``:
    from that step on the rank computes ``factor`` times slower
- ``overheat@rank=1,step=50[,celsius=5]``:
    the rank's chip heats ``celsius`` degrees above its warning threshold
- ``torn-checkpoint@step=100``:
    the checkpoint of that step is torn after its commit (a file truncated)
- ``disk-full@step=120``:
    writing that step's checkpoint fails with ENOSPC
- ``throttle@rank=0,step=40,steps=30[,clock=50]``:
    emulated clock at ``clock``% for a while

Random mode (chaos runs): ``[faults] mtbf_steps = 60, seed = 7`` draws, per rank,
exponential inter-arrival steps with that mean and a fault kind from ``random_kinds`` —
the same schedule for the same seed. A fired fault leaves a marker under
``RUN_DIR/.faults/`` so a restarted rank does not fire it again.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixfleet import safefs
from mixfleet.config import Section, field
from mixfleet.errors import ConfigError
from mixfleet.runs import Event
from mixfleet.train.clock import Clock, SystemClock

if TYPE_CHECKING:
    from mixfleet.emulate import EmulatedDevice
    from mixfleet.train.health.detectors import ThermalGuard
    from mixfleet.train.parallel.strategy import ReductionStrategy

__all__ = ["FaultsConfig", "Fault", "parse_fault", "FaultPlan", "FaultInjector", "KINDS",
           "random_faults"]

# kind: (required keys, optional keys with defaults)
KINDS: dict[str, tuple[set[str], dict[str, float | None]]] = {
    "kill": ({"step"}, {"rank": None}),
    "kill-in-checkpoint": ({"step"}, {"rank": None}),
    "kill-in-startup": (set(), {"rank": None}),
    "hang": ({"step"}, {"rank": None, "seconds": 3600.0}),
    "nan": ({"step"}, {"rank": None, "count": 1.0}),
    "slow": ({"from", "factor"}, {"rank": None}),
    "overheat": ({"step"}, {"rank": None, "celsius": 5.0}),
    "torn-checkpoint": ({"step"}, {}),
    "disk-full": ({"step"}, {"rank": None}),
    "throttle": ({"step", "steps"}, {"rank": None, "clock": 50.0}),
}
RANDOM_KINDS = ("kill", "hang", "nan", "slow", "overheat")


@dataclasses.dataclass(frozen=True)
class Fault:
    kind: str
    step: int
    rank: int | None  # None: every rank
    spec: str
    args: dict[str, float] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def marker(self) -> str:
        return "".join(c if c.isalnum() or c in "-_=" else "_" for c in self.spec)


def parse_fault(spec: str, where: str = "fault") -> Fault:
    kind, _, rest = spec.partition("@")
    if kind not in KINDS:
        raise ConfigError(f"{where} {spec!r}: unknown fault {kind!r}; use one of "
                          f"{', '.join(KINDS)}, e.g. 'kill@rank=1,step=40'")
    required, optional = KINDS[kind]
    args: dict[str, float] = {}
    for part in filter(None, rest.split(",")):
        k, eq, v = part.partition("=")
        if not eq or k not in required | set(optional):
            raise ConfigError(f"{where} {spec!r}: bad argument {part!r}; {kind} takes "
                              f"{', '.join(sorted(required | set(optional)))} as key=value")
        try:
            args[k] = float(v)
        except ValueError:
            raise ConfigError(f"{where} {spec!r}: {k} must be a number (got {v!r})") from None
        if args[k] < 0 or (k != "factor" and k != "seconds" and k != "celsius"
                           and args[k] != int(args[k])):
            raise ConfigError(f"{where} {spec!r}: {k} must be a non-negative "
                              f"{'number' if k in ('factor', 'seconds', 'celsius') else 'integer'}"
                              f" (got {v})")
    missing = required - set(args)
    if missing:
        raise ConfigError(f"{where} {spec!r}: missing {', '.join(sorted(missing))}; "
                          f"e.g. '{kind}@{','.join(f'{m}=40' for m in sorted(missing))}'")
    if kind == "slow" and args["factor"] < 1:
        raise ConfigError(f"{where} {spec!r}: factor must be >= 1 (got {args['factor']})")
    full = {**{k: v for k, v in optional.items() if v is not None}, **args}
    step = int(args.get("step", args.get("from", 0)))
    rank = int(args["rank"]) if "rank" in args else None
    return Fault(kind=kind, step=step, rank=rank, spec=spec, args=full)


def random_faults(*, mtbf_steps: float, seed: int, ranks: int, steps: int,
                  kinds: tuple[str, ...] = RANDOM_KINDS) -> list[str]:
    """A seeded chaos schedule: per rank, exponential gaps of mean ``mtbf_steps``."""
    rng = random.Random(seed)
    out = []
    for r in range(ranks):
        t = rng.expovariate(1.0 / mtbf_steps)
        while t < steps - 1:
            step = max(1, int(t))
            kind = rng.choice(kinds)
            out.append({
                "kill": f"kill@rank={r},step={step}",
                "hang": f"hang@rank={r},step={step},seconds=600",
                "nan": f"nan@rank={r},step={step}",
                "slow": f"slow@rank={r},from={step},factor=2",
                "overheat": f"overheat@rank={r},step={step}",
            }[kind])
            t += rng.expovariate(1.0 / mtbf_steps)
    return out


class FaultPlan:
    """The faults of one rank; ``due(kind, step)`` fires each one once per run directory."""

    def __init__(self, specs: list[str], rank: int, run_dir: Path) -> None:
        self.faults = [f for f in map(parse_fault, specs) if f.rank in (None, rank)]
        self.dir = run_dir / ".faults"
        self.rank = rank
        self.kinds = {f.kind for f in self.faults}

    def due(self, kind: str, step: int) -> Fault | None:
        """The fault of ``kind`` at ``step`` if it has not fired yet (then it has)."""
        if kind not in self.kinds:
            return None
        for f in self.faults:
            if f.kind == kind and f.step <= step < f.step + int(f.args.get("count", 1)):
                marker = self.dir / f"{f.marker}.{step}.rank{self.rank}"
                if marker.exists():
                    return None
                safefs.make_dir(self.dir)
                safefs.write_atomic(marker, str(os.getpid()).encode())
                return f
        return None

    def slow_factor(self, step: int) -> float:
        """The slow-down in force at ``step`` (1.0: none); not a one-off, no marker."""
        if "slow" not in self.kinds:
            return 1.0
        return max((f.args["factor"] for f in self.faults
                    if f.kind == "slow" and step >= f.step), default=1.0)

    @staticmethod
    def kill_self() -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class FaultInjector:
    """The one place faults fire: named hook points of the step, called by the trainer.

    ``step`` is always the number of steps completed so far (the step about to run is
    ``step + 1``). Hook points: :meth:`step_start` (kill, hang), :meth:`grads_ready` (NaN
    gradients, slow compute), :meth:`after_step` (overheat, throttle), and
    :meth:`checkpoint_write` / :meth:`checkpoint_committed` (disk full, a kill while
    writing, a torn checkpoint). A plan with no faults makes every hook a no-op.
    """

    def __init__(self, plan: FaultPlan, *, rank: int, emit: Callable[..., Any],
                 clock: Clock | None = None) -> None:
        self.plan, self.rank, self.emit = plan, rank, emit
        self.clock = clock or SystemClock()
        self.active = bool(plan.faults)

    def _fired(self, kind: str, step: int, **extra: Any) -> None:
        self.emit(Event.FAULT_INJECTED, kind=kind, rank=self.rank, step=step, **extra)

    def startup(self, attempt: int = 0) -> None:
        """While the rank starts, before it resumes."""
        if self.active and self.plan.due("kill-in-startup", 0) is not None:
            self._fired("kill-in-startup", 0, attempt=attempt)
            self.plan.kill_self()

    def step_start(self, step: int) -> None:
        if not self.active:
            return
        if self.plan.due("kill", step):
            self._fired("kill", step)
            self.plan.kill_self()
        hang = self.plan.due("hang", step)
        if hang is not None:
            self._fired("hang", step)
            self.clock.sleep(hang.args["seconds"])

    def grads_ready(self, step: int, strategy: ReductionStrategy, compute_s: float) -> float:
        """Before the reduction; returns the compute time as the rank would measure it."""
        if not self.active:
            return compute_s
        if self.plan.due("nan", step + 1):
            self._fired("nan", step + 1)
            strategy.poison_grads()
        if self.plan.due("slow", step) is not None:
            self._fired("slow", step)
        factor = self.plan.slow_factor(step)
        if factor > 1:
            self.clock.sleep((factor - 1) * compute_s)
            compute_s *= factor
        return compute_s

    def after_step(self, step: int, *, thermal: ThermalGuard | None = None,
                   emu: EmulatedDevice | None = None) -> None:
        if not self.active:
            return
        hot = self.plan.due("overheat", step)
        if hot is not None and thermal is not None:
            self._fired("overheat", step)
            thermal.inject(hot.args["celsius"])
        f = self.plan.due("throttle", step)
        if f is not None and emu is not None:
            clock = min(1.0, max(0.01, f.args.get("clock", 50) / 100))
            emu.force_throttle(int(f.args["steps"]), clock)
            self._fired("throttle", step, steps=f.args["steps"], clock=clock)

    def checkpoint_write(self, step: int, phase: str) -> None:
        """``phase`` "before" the files are written, "after" them (before the commit)."""
        if not self.active:
            return
        if phase == "before" and self.plan.due("disk-full", step):
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        if phase == "after" and self.plan.due("kill-in-checkpoint", step):
            self.plan.kill_self()

    def checkpoint_committed(self, step: int, tear: Callable[[], None]) -> None:
        if self.active and self.plan.due("torn-checkpoint", step):
            tear()
            self._fired("torn-checkpoint", step)


@dataclasses.dataclass(kw_only=True, frozen=True)
class FaultsConfig(Section, section="faults"):
    """The ``[faults]`` table of a run config: exact faults and the chaos mode."""

    inject: list[str] = field([], help="exact faults, e.g. 'kill@rank=1,step=40', "
                                       "'hang@rank=0,step=60,seconds=300', 'nan@step=70' "
                                       "(see mixfleet.train.health.faults)")
    mtbf_steps: float = field(0.0, help="chaos mode: mean steps between random faults per "
                                        "rank (0: off)", ge=0)
    seed: int = field(0, help="seed of the chaos schedule")
    random_kinds: list[str] = field(["kill", "hang", "nan", "slow", "overheat"],
                                    help="fault kinds the chaos mode draws from",
                                    choices=RANDOM_KINDS)

    def __post_init__(self) -> None:
        for i, spec in enumerate(self.inject):
            parse_fault(spec, f"faults.inject[{i}]")

    def specs(self, ranks: int, steps: int) -> list[str]:
        """The exact faults plus the chaos schedule (if any)."""
        extra = (random_faults(mtbf_steps=self.mtbf_steps, seed=self.seed, ranks=ranks,
                               steps=steps, kinds=tuple(self.random_kinds))
                 if self.mtbf_steps > 0 else [])
        return [*self.inject, *extra]
