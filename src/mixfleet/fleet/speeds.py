"""Speeds of each pool relative to the fleet's reference chip, and where each figure comes
from (measured, emulated, estimated, assumed): what the simulator, the planner and their
reports read off a fleet and a throughput table."""

from __future__ import annotations

from mixfleet.fleet.model import Fleet
from mixfleet.fleet.throughput import ThroughputTable

__all__ = ["speed_matrix", "origin_matrix", "assumed_pools"]


def speed_matrix(fleet: Fleet, table: ThroughputTable) -> dict[str, tuple[float | None, ...]]:
    """workload -> per pool, one device's throughput relative to the reference chip."""
    workloads = sorted({e.workload for e in table.entries()} |
                       {w for w, _ in table.missing})
    ref = fleet.reference_chip.id
    return {w: tuple(table.speed(w, p.chip.id, ref) for p in fleet.pools) for w in workloads}


def origin_matrix(fleet: Fleet, table: ThroughputTable
                  ) -> dict[str, tuple[str | None, ...]]:
    """workload -> per pool, the origin of its speed figure (measured, emulated, assumed,
    estimated; None without a figure). A speed is ``assumed`` when either the pool's entry
    or the reference chip's is; ``measured/estimated`` (or ``measured-scaled/estimated``)
    when a row is bridged to the reference chip's roofline (``--reference-from catalog``)."""
    ref = fleet.reference_chip.id
    out: dict[str, tuple[str | None, ...]] = {}
    for w in speed_matrix(fleet, table):
        r = table.get(w, ref)
        row: list[str | None] = []
        for p in fleet.pools:
            e = table.get(w, p.chip.id)
            if e is None or r is None:
                row.append(None)
            elif "assumed" in (e.origin, r.origin):
                row.append("assumed")
            elif r.origin == "estimated" and e.origin in _ROW_ORIGINS:
                row.append(f"{e.origin}/estimated")  # a row over the reference's roofline
            else:
                row.append(max((e.origin, r.origin), key=_ORIGIN_ORDER.index))
        out[w] = tuple(row)
    return out


_ORIGIN_ORDER = ("measured", "measured-scaled", "emulated", "estimated", "assumed")
_ROW_ORIGINS = ("measured", "measured-scaled", "emulated")


def assumed_pools(fleet: Fleet, table: ThroughputTable) -> list[int]:
    """Indices of the pools with at least one speed figure derived from an assumption."""
    om = origin_matrix(fleet, table)
    return [i for i in range(len(fleet.pools)) if any(o[i] == "assumed" for o in om.values())]
