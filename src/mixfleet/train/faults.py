"""Exact fault injection: ``kind@key=value,...`` specs, fired once per run directory.

Kinds here: ``kill`` (SIGKILL the rank when it reaches the step), ``kill-in-checkpoint``
(SIGKILL the rank while it writes the checkpoint of that step, after its data files and
before the commit), ``disk-full`` (the checkpoint of that step fails with ENOSPC).
A fired fault leaves a marker under ``RUN_DIR/.faults/`` so a restarted rank does not fire
it again.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

from mixfleet.errors import ConfigError

__all__ = ["Fault", "parse_fault", "FaultPlan", "KINDS"]

KINDS = {
    "kill": ({"step"}, {"rank"}),
    "kill-in-checkpoint": ({"step"}, {"rank"}),
    "disk-full": ({"step"}, {"rank"}),
}


@dataclasses.dataclass(frozen=True)
class Fault:
    kind: str
    step: int
    rank: int | None  # None: every rank
    spec: str

    @property
    def marker(self) -> str:
        return "".join(c if c.isalnum() or c in "-_=" else "_" for c in self.spec)


def parse_fault(spec: str, where: str = "fault") -> Fault:
    kind, _, rest = spec.partition("@")
    if kind not in KINDS:
        raise ConfigError(f"{where} {spec!r}: unknown fault {kind!r}; use one of "
                          f"{', '.join(KINDS)}, e.g. 'kill@rank=1,step=40'")
    required, optional = KINDS[kind]
    args: dict[str, int] = {}
    for part in filter(None, rest.split(",")):
        k, eq, v = part.partition("=")
        if not eq or k not in required | optional:
            raise ConfigError(f"{where} {spec!r}: bad argument {part!r}; {kind} takes "
                              f"{', '.join(sorted(required | optional))} as key=value")
        try:
            args[k] = int(v)
        except ValueError:
            raise ConfigError(f"{where} {spec!r}: {k} must be an integer (got {v!r})") from None
        if args[k] < 0:
            raise ConfigError(f"{where} {spec!r}: {k} must be >= 0 (got {v})")
    missing = required - set(args)
    if missing:
        raise ConfigError(f"{where} {spec!r}: missing {', '.join(sorted(missing))}; "
                          f"e.g. '{kind}@step=40'")
    return Fault(kind=kind, step=args["step"], rank=args.get("rank"), spec=spec)


class FaultPlan:
    """The faults of one rank; ``due(kind, step)`` fires each one once per run directory."""

    def __init__(self, specs: list[str], rank: int, run_dir: Path) -> None:
        self.faults = [f for f in map(parse_fault, specs) if f.rank in (None, rank)]
        self.dir = run_dir / ".faults"
        self.rank = rank

    def due(self, kind: str, step: int) -> Fault | None:
        for f in self.faults:
            if f.kind == kind and f.step == step:
                marker = self.dir / f"{f.marker}.rank{self.rank}"
                if marker.exists():
                    return None
                self.dir.mkdir(parents=True, exist_ok=True)
                marker.write_text(str(os.getpid()))
                return f
        return None

    @staticmethod
    def kill_self() -> None:
        os.kill(os.getpid(), signal.SIGKILL)
