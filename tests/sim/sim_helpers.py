"""Small chips and fleets for the simulator tests."""

from __future__ import annotations

import os
from pathlib import Path

from mixfleet.catalog.base import Chip, Figure
from mixfleet.fleet.model import parse_fleet


def fig(v: float | None) -> Figure:
    return Figure(value=v, source="test", confidence="reported" if v is not None else "unknown")


def chip(cid: str, gib: float = 80, vendor: str = "nvidia") -> Chip:
    return Chip(id=cid, vendor=vendor, name=cid, torch_device="cuda", bf16_tflops=fig(100),
                hbm_gib=fig(gib), hbm_tbps=fig(2.0), link_gbps=fig(None), tdp_w=fig(None))


def fleet(pools, reliability=None):
    """pools: list of (devices, mem GiB, is_nvidia); one chip per pool."""
    cat = {f"c{i}": chip(f"c{i}", mem, "nvidia" if nv else "other")
           for i, (_, mem, nv) in enumerate(pools)}
    data = {"reference_chip": "c0",
            "pool": [{"id": f"p{i}", "chip": f"c{i}", "nodes": 1, "per_node": n,
                      "reliability": dict(reliability or {})}
                     for i, (n, _, _) in enumerate(pools)]}
    return parse_fleet(data, "test.toml", cat)


def data_dir() -> Path:
    """../shared/data relative to the repository, or $MIXFLEET_DATA."""
    env = os.environ.get("MIXFLEET_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
