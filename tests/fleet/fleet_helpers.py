"""Small chips, fleets and snapshots for the fleet tests (hand-computable numbers)."""

from __future__ import annotations

from mixfleet.catalog.base import Chip, Figure
from mixfleet.fleet.model import parse_fleet


def fig(v: float | None) -> Figure:
    return Figure(value=v, source="test", confidence="reported" if v is not None else "unknown")


def chip(cid: str, tflops: float | None = 100, gib: float | None = 80,
         tbps: float | None = 2.0, vendor: str = "nvidia") -> Chip:
    return Chip(id=cid, vendor=vendor, name=cid, torch_device="cuda", bf16_tflops=fig(tflops),
                hbm_gib=fig(gib), hbm_tbps=fig(tbps), link_gbps=fig(None), tdp_w=fig(None))


def catalog(*chips: Chip) -> dict[str, Chip]:
    return {c.id: c for c in chips}


def fleet(pools: list[tuple[str, int]], cat: dict[str, Chip], ref: str | None = None):
    """A fleet with one single-node pool per (chip id, devices)."""
    data = {"reference_chip": ref or pools[0][0],
            "pool": [{"id": f"p{i}", "chip": c, "nodes": 1, "per_node": n}
                     for i, (c, n) in enumerate(pools)]}
    return parse_fleet(data, "test.toml", cat)
