"""Exact, seeded fault injection: ``kind@key=value,...`` specs, each fired once per run.

- ``kill@rank=1,step=40``:
    SIGKILL the rank when it reaches the step
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
import os
import random
import signal
from pathlib import Path

from mixfleet.errors import ConfigError

__all__ = ["Fault", "parse_fault", "FaultPlan", "KINDS", "random_faults"]

# kind: (required keys, optional keys with defaults)
KINDS: dict[str, tuple[set[str], dict[str, float | None]]] = {
    "kill": ({"step"}, {"rank": None}),
    "kill-in-checkpoint": ({"step"}, {"rank": None}),
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
                self.dir.mkdir(parents=True, exist_ok=True)
                marker.write_text(str(os.getpid()))
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
