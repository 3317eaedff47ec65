"""Throughput per (workload class, chip): measured where `mixfleet bench` measured it,
else estimated with a roofline model of the catalog's figures.

Roofline: seconds per sample = max(FLOPs / (peak FLOP/s x COMPUTE_EFF),
bytes / (bandwidth x MEMORY_EFF)). A chip whose peak or bandwidth is unknown gets no
estimate (the entry is missing, with the reason in :attr:`ThroughputTable.missing`):
the planner then cannot run a job of that class there, unless a measurement exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from mixfleet.bench.table import ThroughputRow
from mixfleet.catalog.base import Chip
from mixfleet.fleet.workloads import WORKLOAD_CLASSES, WorkloadClass

__all__ = ["Entry", "ThroughputTable", "roofline", "COMPUTE_EFF", "MEMORY_EFF"]

COMPUTE_EFF = 0.45  # share of peak FLOP/s a training step reaches (typical MFU)
MEMORY_EFF = 0.70  # share of peak memory bandwidth a training step reaches
_RANK = {"measured": 0, "emulated": 1, "estimated": 2}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry:
    """Samples per second of one device of ``chip`` on ``workload``, and its origin."""

    workload: str
    chip: str
    samples_per_s: float
    origin: str  # measured | emulated | estimated


def roofline(w: WorkloadClass, chip: Chip) -> float | None:
    """Roofline samples/s of one device, or None when a catalog figure is unknown."""
    peak = chip.peak_flops()
    bw = chip.hbm_tbps.value
    if peak is None or bw is None:
        return None
    t = max(w.flops_per_sample / (peak * COMPUTE_EFF),
            w.bytes_per_sample / (bw * 1e12 * MEMORY_EFF))
    return 1.0 / t


class ThroughputTable:
    """Per-device throughput of each workload class on each chip of a catalog."""

    def __init__(self, entries: Iterable[Entry], missing: dict[tuple[str, str], str]):
        self._e = {(e.workload, e.chip): e for e in entries}
        self.missing = dict(missing)
        """(workload, chip) -> why there is no figure."""

    @classmethod
    def build(cls, chips: Iterable[Chip], rows: Iterable[ThroughputRow] = (),
              workloads: dict[str, WorkloadClass] | None = None) -> ThroughputTable:
        """Measured/emulated ``rows`` first (best batch per pair), roofline elsewhere.
        Rows of workloads that are not planner classes are ignored."""
        wl = WORKLOAD_CLASSES if workloads is None else workloads
        chips = list(chips)
        best: dict[tuple[str, str], Entry] = {}
        for r in rows:
            if r.workload not in wl or r.samples_per_s <= 0:
                continue
            e = Entry(workload=r.workload, chip=r.chip, samples_per_s=float(r.samples_per_s),
                      origin=r.origin)
            old = best.get((r.workload, r.chip))
            if old is None or (_RANK[e.origin], -e.samples_per_s) < \
                    (_RANK[old.origin], -old.samples_per_s):
                best[(r.workload, r.chip)] = e
        missing: dict[tuple[str, str], str] = {}
        for chip in chips:
            for w in wl.values():
                key = (w.name, chip.id)
                if key in best:
                    continue
                est = roofline(w, chip)
                if est is None:
                    unknown = [n for n, f in (("bf16_tflops", chip.bf16_tflops),
                                              ("hbm_tbps", chip.hbm_tbps)) if f.value is None]
                    missing[key] = (f"no measurement and no roofline estimate: the catalog's "
                                    f"{' and '.join(unknown)} of {chip.id} is unknown")
                else:
                    best[key] = Entry(workload=w.name, chip=chip.id, samples_per_s=est,
                                      origin="estimated")
        return cls(best.values(), missing)

    def get(self, workload: str, chip: str) -> Entry | None:
        """The entry for (workload, chip), or None when there is no figure."""
        return self._e.get((workload, chip))

    def speed(self, workload: str, chip: str, reference: str) -> float | None:
        """Throughput on ``chip`` relative to ``reference`` (1.0 = as fast), or None."""
        a, b = self.get(workload, chip), self.get(workload, reference)
        if a is None or b is None:
            return None
        return a.samples_per_s / b.samples_per_s

    def entries(self) -> list[Entry]:
        return sorted(self._e.values(), key=lambda e: (e.workload, e.chip))
