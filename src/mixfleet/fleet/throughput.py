"""Throughput per (workload class, chip): measured where `mixfleet bench` measured it,
else estimated with a roofline model of the catalog's figures.

Roofline: seconds per sample = max(FLOPs / (peak FLOP/s x COMPUTE_EFF),
bytes / (bandwidth x MEMORY_EFF)). A chip whose peak or bandwidth is unknown gets no
estimate (the entry is missing, with the reason in :attr:`ThroughputTable.missing`):
the planner then cannot run a job of that class there, unless a measurement exists or
the fleet file states an assumption for the chip (:class:`Assumption`): either a speed
relative to a named chip, or the unknown catalog figures. Entries derived from an
assumption have origin ``assumed`` and carry its source; they are never presented as
measured.

Precedence per (workload, chip): measured > measured-scaled (``mixfleet bench --class
--scale F``: a smaller model measured, extrapolated to full size by FLOPs) > emulated >
assumed > estimated.

A speed is a ratio to the fleet's reference chip, so given ``reference``, a row of another
chip is used only where the rows hold a figure of the reference chip for the same class;
else it is left out with its one-line reason in :attr:`ThroughputTable.unused`, and the
chip keeps the figure it would have had without it. ``reference_from="catalog"`` bridges
instead: the reference chip's figure is its roofline estimate (origin of the speed then
``measured/estimated``), listed in :attr:`ThroughputTable.bridged`. Emulated rows are
never bridged: their samples/s are the host CPU paced to a relative speed, comparable
only with emulated rows (see docs/fleet.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from mixfleet.catalog.base import Chip
from mixfleet.catalog.table import ThroughputRow
from mixfleet.errors import ConfigError
from mixfleet.fleet.costterms import roofline_s
from mixfleet.fleet.workloads import WORKLOAD_CLASSES, WorkloadClass

__all__ = ["Entry", "Assumption", "ThroughputTable", "roofline", "COMPUTE_EFF",
           "MEMORY_EFF", "ORIGINS", "REFERENCE_FROM"]

COMPUTE_EFF = 0.45  # share of peak FLOP/s a training step reaches (typical MFU)
MEMORY_EFF = 0.70  # share of peak memory bandwidth a training step reaches
_RANK = {"measured": 0, "measured-scaled": 1, "emulated": 2, "assumed": 3, "estimated": 4}
ORIGINS = tuple(_RANK)
#: Where the reference chip's figure for a row of another chip may come from.
REFERENCE_FROM = ("rows", "catalog")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Assumption:
    """A user-stated throughput assumption for one chip (a fleet file's
    ``[pool.assumption]``): ``relative_speed`` x the throughput of ``relative_to`` on every
    workload class, or a roofline estimate with the catalog's unknown figures filled in by
    ``bf16_tflops`` / ``hbm_tbps``. ``source`` says where the assumption comes from."""

    source: str
    relative_speed: float | None = None
    relative_to: str | None = None
    bf16_tflops: float | None = None
    hbm_tbps: float | None = None
    where: str = ""
    """The fleet file and pool that stated it."""

    def describe(self) -> str:
        """A one-line statement of the assumption, e.g. ``0.8 x nvidia-h20``."""
        if self.relative_speed is not None:
            return f"{self.relative_speed:g} x {self.relative_to}"
        parts = []
        if self.bf16_tflops is not None:
            parts.append(f"BF16 peak {self.bf16_tflops:g} TFLOP/s")
        if self.hbm_tbps is not None:
            parts.append(f"HBM {self.hbm_tbps:g} TB/s")
        return "roofline with assumed " + ", ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {"relative_speed": self.relative_speed, "relative_to": self.relative_to,
                "bf16_tflops": self.bf16_tflops, "hbm_tbps": self.hbm_tbps,
                "source": self.source, "stated_in": self.where}

    def same_as(self, other: Assumption) -> bool:
        """Whether both state the same figures and source (wherever they were stated)."""
        return dataclasses.replace(self, where="") == dataclasses.replace(other, where="")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry:
    """Samples per second of one device of ``chip`` on ``workload``, and its origin."""

    workload: str
    chip: str
    samples_per_s: float
    origin: str  # measured | measured-scaled | emulated | assumed | estimated
    note: str = ""
    """For ``assumed``: the assumption and its source; for bench rows, the row's note."""


def roofline(w: WorkloadClass, chip: Chip, peak_tflops: float | None = None,
             bw_tbps: float | None = None) -> float | None:
    """Roofline samples/s of one device, or None when a catalog figure is unknown.
    ``peak_tflops`` / ``bw_tbps`` stand in for the catalog's figures when it has none.
    The seconds come from the cost model's one roofline (:func:`~mixfleet.fleet.costterms.
    roofline_s`), the same one ``plan-job`` uses for a chip without a bench row."""
    t = roofline_s(w.flops_per_sample, chip, COMPUTE_EFF, nbytes=w.bytes_per_sample,
                   memory_efficiency=MEMORY_EFF, peak_tflops=peak_tflops, bw_tbps=bw_tbps)
    return None if t is None else 1.0 / t


class ThroughputTable:
    """Per-device throughput of each workload class on each chip of a catalog."""

    def __init__(self, entries: Iterable[Entry], missing: dict[tuple[str, str], str],
                 unused: Mapping[tuple[str, str], str] | None = None,
                 bridged: Mapping[tuple[str, str], str] | None = None):
        self._e = {(e.workload, e.chip): e for e in entries}
        self.missing = dict(missing)
        """(workload, chip) -> why there is no figure."""
        self.unused = dict(unused or {})
        """(workload, chip) -> one line saying why that chip's row was not used."""
        self.bridged = dict(bridged or {})
        """(workload, chip) -> one line saying its row is compared with the reference
        chip's roofline estimate (``reference_from="catalog"``)."""

    @classmethod
    def build(cls, chips: Iterable[Chip], rows: Iterable[ThroughputRow] = (),
              workloads: dict[str, WorkloadClass] | None = None,
              assumptions: Mapping[str, Assumption] | None = None,
              reference: str | None = None, reference_from: str = "rows") -> ThroughputTable:
        """Measured/emulated ``rows`` first (best batch per pair), then the fleet's stated
        ``assumptions`` (chip id -> :class:`Assumption`), roofline elsewhere. Rows of
        workloads that are not planner classes are ignored. With ``reference`` (the fleet's
        reference chip), a row without a row of the reference chip beside it is left out
        or bridged (``reference_from``; see the module docstring)."""
        wl = WORKLOAD_CLASSES if workloads is None else workloads
        chips = list(chips)
        assumed = dict(assumptions or {})
        best: dict[tuple[str, str], Entry] = {}
        for r in rows:
            if r.workload not in wl or r.samples_per_s <= 0:
                continue
            e = Entry(workload=r.workload, chip=r.chip, samples_per_s=float(r.samples_per_s),
                      origin=r.origin, note=r.note)
            old = best.get((r.workload, r.chip))
            if old is None or (_RANK[e.origin], -e.samples_per_s) < \
                    (_RANK[old.origin], -old.samples_per_s):
                best[(r.workload, r.chip)] = e
        unused, bridged = _pair_with_reference(best, chips, wl, reference, reference_from)
        missing: dict[tuple[str, str], str] = {}
        relative: list[tuple[Chip, Assumption]] = []
        for chip in chips:
            a = assumed.get(chip.id)
            if a is not None and a.relative_speed is not None:
                relative.append((chip, a))
                continue
            for w in wl.values():
                key = (w.name, chip.id)
                if key in best:
                    continue
                if a is not None:
                    est = roofline(w, chip, a.bf16_tflops, a.hbm_tbps)
                    origin, note = "assumed", f"{a.describe()}; source: {a.source}"
                else:
                    est, origin, note = roofline(w, chip), "estimated", ""
                if est is None:
                    unknown = [n for n, f in (("bf16_tflops", chip.bf16_tflops),
                                              ("hbm_tbps", chip.hbm_tbps)) if f.value is None]
                    missing[key] = (f"no measurement and no roofline estimate: the catalog's "
                                    f"{' and '.join(unknown)} of {chip.id} is unknown")
                else:
                    best[key] = Entry(workload=w.name, chip=chip.id, samples_per_s=est,
                                      origin=origin, note=note)
        for chip, a in relative:  # after the others: they are what it is relative to
            for w in wl.values():
                key = (w.name, chip.id)
                if key in best:
                    continue
                base = best.get((w.name, a.relative_to or ""))
                if base is None:
                    missing[key] = (f"assumed {a.describe()}, but {a.relative_to} has no "
                                    f"throughput figure for {w.name}")
                    continue
                best[key] = Entry(workload=w.name, chip=chip.id,
                                  samples_per_s=base.samples_per_s * (a.relative_speed or 0.0),
                                  origin="assumed",
                                  note=f"{a.describe()} ({base.origin} for {a.relative_to}); "
                                       f"source: {a.source}")
        return cls(best.values(), missing, unused, bridged)

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


def _pair_with_reference(best: dict[tuple[str, str], Entry], chips: list[Chip],
                         wl: Mapping[str, WorkloadClass], reference: str | None,
                         reference_from: str
                         ) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    """Drop from ``best`` (the rows' entries) each row with no row of ``reference`` for its
    class, or keep it as bridged; returns (unused, bridged) reasons."""
    if reference_from not in REFERENCE_FROM:
        raise ConfigError(f"reference_from {reference_from!r} is not one of "
                          f"{', '.join(REFERENCE_FROM)}; e.g. --reference-from catalog")
    unused: dict[tuple[str, str], str] = {}
    bridged: dict[tuple[str, str], str] = {}
    if reference is None:
        return unused, bridged
    ref_chip = next((c for c in chips if c.id == reference), None)
    for (w, c), e in sorted(best.items()):
        if c == reference or (w, reference) in best:
            continue
        head = f"{c} {w} row ({e.origin}) not used: no {w} row for the reference chip {reference}"
        if e.origin == "emulated":
            unused[(w, c)] = (f"{head}; bench emu:{reference} in the same run (an emulated "
                              f"figure is the host CPU paced to a relative speed, comparable "
                              f"only with emulated rows, not with the catalog roofline)")
        elif reference_from == "rows":
            unused[(w, c)] = f"{head}; bench it too, or pass --reference-from catalog"
        elif ref_chip is None or roofline(wl[w], ref_chip) is None:
            unused[(w, c)] = (f"{head}, and the catalog has no roofline for {reference} "
                              f"(a figure is unknown); bench {reference} too")
        else:
            bridged[(w, c)] = (f"{c} {w}: {e.origin} row over the reference chip {reference}'s "
                               f"roofline ESTIMATE (--reference-from catalog): speed origin "
                               f"{e.origin}/estimated")
            continue
        del best[(w, c)]
    return unused, bridged
