"""The Simulation page: a ``results.json`` written by ``mixfleet simulate --out DIR``.

``results.json`` holds per policy the JCT average, median and 99th percentile and the
utilization of each pool (no per-job list). The page draws a JCT CDF from a per-policy
``jct_s`` list or ``jct_cdf`` points when a results file carries them, else from the
quantiles it has (labeled so), and shows the PNG plots that ``simulate`` wrote beside it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_results", "PNG_NAME"]

PNG_NAME = re.compile(r"^(jct_cdf|utilization_[A-Za-z0-9_.-]+)\.png$")
"""The plots ``mixfleet simulate`` writes next to results.json; only these are served."""


def _cdf(rec: dict[str, Any]) -> dict[str, Any]:
    if isinstance(rec.get("jct_s"), list) and rec["jct_s"]:
        xs = np.sort(np.asarray([v for v in rec["jct_s"] if isinstance(v, (int, float))],
                                dtype=float))
        idx = np.unique(np.linspace(0, xs.size - 1, min(xs.size, 400)).astype(int))
        return {"kind": "jobs", "x": [float(xs[i]) / 3600 for i in idx],
                "y": [(i + 1) / xs.size for i in idx]}
    if isinstance(rec.get("jct_cdf"), list):
        pts = [p for p in rec["jct_cdf"] if isinstance(p, list) and len(p) == 2]
        return {"kind": "points", "x": [p[0] / 3600 for p in pts], "y": [p[1] for p in pts]}
    qs = [(0.5, rec.get("jct_p50_s")), (0.99, rec.get("jct_p99_s"))]
    qpts = [(float(v) / 3600, q) for q, v in qs if isinstance(v, (int, float))]
    return {"kind": "quantiles", "x": [p[0] for p in qpts], "y": [p[1] for p in qpts]}


def load_results(path: Path) -> dict[str, Any]:
    """The page's view of one results.json, or ``error`` saying what is wrong."""
    base: dict[str, Any] = {"path": str(path), "error": None}
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {**base, "error": f"{path} is missing; write it with `mixfleet simulate "
                                 f"--out DIR`"}
    except (OSError, ValueError) as e:
        return {**base, "error": f"{path} is not valid JSON ({e})"}
    if not isinstance(doc, dict) or not isinstance(doc.get("policies"), list):
        return {**base, "error": f"{path} has no \"policies\" list; it is not a results.json "
                                 f"of `mixfleet simulate`"}
    pools = (doc.get("fleet") or {}).get("pools") or []
    policies = [p for p in doc["policies"] if isinstance(p, dict)]
    assumptions = []
    for pool in pools:
        origins = pool.get("throughput_origin") or {}
        marked = sorted({o for o in origins.values()
                         if o == "assumed" or str(o).endswith("estimated")})
        if pool.get("assumption") or marked:
            assumptions.append({"pool": pool.get("id"), "chip": pool.get("chip"),
                                "origins": marked, "assumption": pool.get("assumption")})
    pngs = sorted(p.name for p in path.parent.glob("*.png") if PNG_NAME.match(p.name))
    return {
        **base,
        "fleet": doc.get("fleet"),
        "trace": doc.get("trace"),
        "seed": doc.get("seed"),
        "failures": doc.get("failures"),
        "throttles": doc.get("throttles"),
        "policies": [{k: v for k, v in p.items() if k not in ("jct_s", "unplaceable")}
                     | {"unplaceable": len(p.get("unplaceable") or [])} for p in policies],
        "cdf": {str(p.get("policy")): _cdf(p) for p in policies},
        "utilization": {str(p.get("policy")): p.get("utilization") or {} for p in policies},
        "assumptions": assumptions,
        "pngs": pngs,
    }
