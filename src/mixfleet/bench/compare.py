"""``bench compare``: each chip's throughput relative to a baseline chip, per workload."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mixfleet.bench.table import ThroughputRow
from mixfleet.errors import ConfigError

__all__ = ["Ratio", "compare"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ratio:
    """Best samples/s of one chip on one workload, and its ratio to the baseline's best."""

    workload: str
    chip: str
    batch: int
    samples_per_s: float
    ratio: float | None  # None when the baseline has no row for this workload
    emulated: bool
    origin: str


def _best(rows: Sequence[ThroughputRow]) -> dict[tuple[str, str, bool], ThroughputRow]:
    best: dict[tuple[str, str, bool], ThroughputRow] = {}
    for r in rows:
        key = (r.workload, r.chip, r.emulated)
        if key not in best or r.samples_per_s > best[key].samples_per_s:
            best[key] = r
    return best


def compare(rows: Sequence[ThroughputRow], baseline: str) -> list[Ratio]:
    """Ratios to ``baseline`` (measured rows preferred over emulated ones for the baseline).

    Emulated rows are compared only with an emulated baseline and measured rows only with a
    measured one, so a ratio never mixes the two.
    """
    chips = sorted({r.chip for r in rows})
    if baseline not in chips:
        raise ConfigError(f"baseline chip {baseline!r} has no row in the table; use one of "
                          f"{', '.join(chips) or '(empty table)'} with --baseline")
    best = _best(rows)
    out = []
    for (wl, chip, emu), r in sorted(best.items()):
        base = best.get((wl, baseline, emu))
        out.append(Ratio(workload=wl, chip=chip, batch=r.batch, samples_per_s=r.samples_per_s,
                         ratio=None if base is None else r.samples_per_s / base.samples_per_s,
                         emulated=emu, origin=r.origin))
    return out
