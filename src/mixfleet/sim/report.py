"""results.json: one record per policy with every metric, under stable keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixfleet.fleet.model import Fleet
from mixfleet.sim.engine import SimConfig
from mixfleet.sim.metrics import SimResult

__all__ = ["results_doc", "write_results", "RESULTS_SCHEMA"]

RESULTS_SCHEMA = 1


def results_doc(results: list[SimResult], fleet: Fleet, trace: str, config: SimConfig
                ) -> dict[str, Any]:
    """The results.json document."""
    return {
        "schema": RESULTS_SCHEMA,
        "fleet": {"name": fleet.name, "reference_chip": fleet.reference_chip.id,
                  "pools": [{"id": p.id, "chip": p.chip.id, "devices": p.capacity,
                             "nvidia": p.is_nvidia} for p in fleet.pools]},
        "trace": trace,
        "seed": config.seed,
        "failures": config.failures,
        "throttles": config.throttles,
        "migration_s": config.migration_s,
        "policies": [{"policy": r.policy, **r.metrics,
                      "unplaceable": [{"job": j, "reason": why} for j, why in r.unplaceable]}
                     for r in results],
    }


def write_results(doc: dict[str, Any], out: str | Path) -> Path:
    """Write ``doc`` to ``out/results.json`` (atomically); returns the path."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    p = d / "results.json"
    tmp = d / ".results.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    tmp.replace(p)
    return p
