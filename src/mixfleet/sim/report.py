"""results.json: one record per policy with every metric, under stable keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixfleet.fleet.model import Fleet
from mixfleet.fleet.speeds import assumed_pools, origin_matrix, speed_matrix
from mixfleet.fleet.throughput import ThroughputTable
from mixfleet.sim.engine import SimConfig
from mixfleet.sim.metrics import SimResult

__all__ = ["results_doc", "write_results", "assumed_work_share", "comparison_table",
           "RESULTS_SCHEMA"]

RESULTS_SCHEMA = 1
RELIABILITY_FIGURES = ("mtbf_h", "throttle_per_h", "throttle_s", "throttle_slowdown",
                       "restart_s", "checkpoint_s")


def assumed_work_share(result: SimResult, pools: list[int]) -> float:
    """Share of the completed work (reference device-seconds) done on ``pools`` (those
    whose throughput is assumed)."""
    total = sum(j.work for j in result.jobs)
    if total <= 0:
        return 0.0
    return sum(j.work_by_pool[i] for j in result.jobs for i in pools) / total


def _err(m: dict[str, Any]) -> str:
    a, b = m.get("estimate_error_p50"), m.get("estimate_error_p90")
    return "-" if a is None or b is None else f"{a:.0%}/{b:.0%}"


def comparison_table(results: list[SimResult], walls: list[float], assumed: list[int]
                     ) -> tuple[list[str], list[list[str]]]:
    """The policies side by side, as printed by ``mixfleet simulate``: (header, rows)."""
    header = ["policy", "avg JCT h", "p50 h", "p99 h", "queue h", "makespan d",
              "Nvidia dev-h", "non-Nvidia work", "lost dev-h", "est. err p50/p90",
              *(["assumed work"] if assumed else []), "wall s"]
    rows = []
    for r, w in zip(results, walls, strict=True):
        m = r.metrics
        rows.append([r.policy, f"{m['jct_avg_s'] / 3600:.2f}", f"{m['jct_p50_s'] / 3600:.2f}",
                     f"{m['jct_p99_s'] / 3600:.1f}", f"{m['queue_delay_avg_s'] / 3600:.2f}",
                     f"{m['makespan_s'] / 86400:.1f}", f"{m['nvidia_device_hours']:,.0f}",
                     f"{m['non_nvidia_work_share']:.1%}",
                     f"{m['goodput_lost_device_hours']:,.0f}", _err(m),
                     *([f"{assumed_work_share(r, assumed):.1%}"] if assumed else []),
                     f"{w:.1f}"])
    return header, rows


def results_doc(results: list[SimResult], fleet: Fleet, trace: str, config: SimConfig,
                table: ThroughputTable | None = None) -> dict[str, Any]:
    """The results.json document. With ``table``, each pool lists the origin of its speed
    per workload class and any assumption it rests on, and each policy record has
    ``assumed_work_share``."""
    origins = origin_matrix(fleet, table) if table is not None else {}
    speeds = speed_matrix(fleet, table) if table is not None else {}
    assumed = assumed_pools(fleet, table) if table is not None else []
    pools = []
    for i, p in enumerate(fleet.pools):
        rel = p.reliability
        rec: dict[str, Any] = {"id": p.id, "chip": p.chip.id, "devices": p.capacity,
                               "nvidia": p.is_nvidia,
                               "reliability": {f: getattr(rel, f) for f in RELIABILITY_FIGURES}
                               | {"sources": dict(rel.sources)}}
        if table is not None:
            rec["throughput_origin"] = {w: o[i] for w, o in origins.items()}
            rec["speed"] = {w: sp[i] for w, sp in speeds.items()}
            rec["assumption"] = None if p.assumption is None else p.assumption.as_dict()
        pools.append(rec)
    return {
        "schema": RESULTS_SCHEMA,
        "fleet": {"name": fleet.name, "reference_chip": fleet.reference_chip.id,
                  "pools": pools},
        "trace": trace,
        "seed": config.seed,
        "failures": config.failures,
        "throttles": config.throttles,
        "migration_s": config.migration_s,
        "estimates": config.estimates,
        "policies": [{"policy": r.policy, **r.metrics,
                      **({"assumed_work_share": assumed_work_share(r, assumed)}
                         if table is not None else {}),
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
