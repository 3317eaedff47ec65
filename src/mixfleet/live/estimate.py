"""Throughput estimates of the live fleet: what a job of a workload does per device on each
pool, learnt from the attempts that ran (their ``metrics.jsonl``), never known in advance.

Before a (workload, pool) pair has run, its figure comes from another pool's measurement
scaled by the chips' relative speeds (emulated pools all run at the host's speed, so they
scale by 1), else a nominal 1 sample/s per device. The origin of each figure is kept
(``measured``, ``emulated`` for measurements on emulated chips, or ``estimated``) and shown
by the report, like ``mixfleet plan`` does.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from mixfleet.live.spec import FleetSpec

__all__ = ["Estimates", "attempt_rate", "last_step"]

NOMINAL = 1.0


def _chip_speed(fleet: FleetSpec) -> list[float]:
    """Relative speed of each pool's chip (1 for emulated pools: they run at CPU speed)."""
    if all(p.emulated for p in fleet.pools):
        return [1.0] * len(fleet.pools)
    from mixfleet.emulate.speed import relative_speeds

    try:
        rel = relative_speeds([p.chip for p in fleet.pools])
    except Exception:  # a chip without any speed figure: no scaling
        return [1.0] * len(fleet.pools)
    return [rel[p.chip] for p in fleet.pools]


class Estimates:
    """Per-device samples/s by (workload, pool index)."""

    def __init__(self, fleet: FleetSpec) -> None:
        self.fleet = fleet
        self.chip = _chip_speed(fleet)
        self.obs: dict[tuple[str, int], list[float]] = {}

    def observe(self, workload: str, pool: int, per_device_sps: float) -> None:
        if per_device_sps > 0:
            self.obs.setdefault((workload, pool), []).append(per_device_sps)

    def per_device(self, workload: str, pool: int) -> tuple[float, str]:
        """Samples/s of one device, and the figure's origin."""
        got = self.obs.get((workload, pool))
        if got:
            return statistics.fmean(got), ("emulated" if self.fleet.pools[pool].emulated
                                           else "measured")
        known = [(q, statistics.fmean(v)) for (w, q), v in self.obs.items() if w == workload]
        if known:
            q, v = max(known, key=lambda x: x[1])
            return v * self.chip[pool] / self.chip[q], "estimated"
        return NOMINAL * self.chip[pool], "estimated"

    def speeds(self, workload: str) -> tuple[tuple[float, ...], float]:
        """Per pool, speed relative to the fastest pool, and that pool's samples/s."""
        per = [self.per_device(workload, i)[0] for i in range(len(self.fleet.pools))]
        ref = max(per)
        return tuple(v / ref for v in per), ref


def last_step(run_dir: Path) -> int:
    """The newest step in ``metrics.jsonl`` (0 before the first)."""
    p = run_dir / "metrics.jsonl"
    try:
        with p.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 8192))
            tail = f.read().decode(errors="replace").splitlines()
    except OSError:
        return 0
    for line in reversed(tail):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "step" in rec and rec.get("kind") is None:
            return int(rec["step"])
    return 0


def attempt_rate(run_dir: Path, since: float, until: float | None) -> float | None:
    """Median samples/s of the steps logged between ``since`` and ``until``."""
    p = run_dir / "metrics.jsonl"
    if not p.exists():
        return None
    rates = []
    with p.open() as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            t = rec.get("t")
            if rec.get("kind") is not None or "samples_per_s" not in rec or t is None:
                continue
            if t >= since and (until is None or t <= until):
                rates.append(float(rec["samples_per_s"]))
    return statistics.median(rates) if rates else None
