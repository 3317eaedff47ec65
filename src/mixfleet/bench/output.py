"""Write a bench run: ``throughput.json``, ``throughput.csv``, ``throughput.png`` and
``trend.json`` (the telemetry samples of each row, emulated ones marked)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from mixfleet.bench.chart import write_chart
from mixfleet.bench.runner import BenchResult
from mixfleet.bench.table import write_table

__all__ = ["save_results"]


def save_results(results: Sequence[BenchResult], out_dir: str | Path) -> dict[str, Path]:
    """Write every output of a bench run into ``out_dir``; returns their paths."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    rows = [r.row for r in results]
    paths = {"json": d / "throughput.json", "csv": d / "throughput.csv",
             "png": d / "throughput.png", "trend": d / "trend.json"}
    write_table(rows, paths["json"])
    write_table(rows, paths["csv"])
    write_chart(rows, paths["png"])
    trend = [{"workload": r.row.workload, "chip": r.row.chip, "batch": r.row.batch,
              "device": r.device, "emulated": r.row.emulated, "samples": r.trend}
             for r in results]
    paths["trend"].write_text(json.dumps(trend, indent=1) + "\n")
    return paths
