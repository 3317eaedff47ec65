"""Shared set-up of the fleet benchmarks: the example fleet, the Philly trace, speeds."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    env = os.environ.get("MIXFLEET_DATA")
    return Path(env) if env else ROOT / ".." / "shared" / "data"


def philly_or_synthetic(seed: int = 0):  # type: ignore[no-untyped-def]
    """The Philly Sep-Oct 2017 trace, or (with a note) a synthetic one of the same size."""
    from mixfleet.sim.traces import read_trace

    p = data_dir() / "traces" / "philly" / "philly_jobs_sep_oct_2017.csv"
    if p.is_file():
        return read_trace(p, seed=seed)
    print(f"note: {p} not found; using synthetic:52849", file=sys.stderr)
    return read_trace("synthetic:52849", seed=seed)


def mixed_fleet():  # type: ignore[no-untyped-def]
    from mixfleet.catalog.base import load_catalog
    from mixfleet.fleet.model import load_fleet
    from mixfleet.fleet.speeds import speed_matrix
    from mixfleet.fleet.throughput import ThroughputTable

    cat = load_catalog()
    fleet = load_fleet(ROOT / "examples" / "fleet-mixed.toml", cat)
    table = ThroughputTable.build(cat.values(), assumptions=fleet.assumptions())
    for p in fleet.pools:
        if p.assumption is not None:
            print(f"note: pool {p.id} ({p.chip.id}) runs on ASSUMED throughput "
                  f"({p.assumption.describe()}; stated in the fleet file), not measured")
    return fleet, speed_matrix(fleet, table)


def train_cli(config: Path, run_dir: Path, overrides: list[str]) -> Path:
    """``mixfleet train CONFIG`` in a subprocess (fresh run, ``--set`` each override); exits
    with the run's stderr when it fails."""
    cmd = [sys.executable, "-P", "-m", "mixfleet", "train", str(config), "--run-dir",
           str(run_dir), "--json", "--resume", "never"]
    for s in overrides:
        cmd += ["--set", s]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"training failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return run_dir


def mean_step_s(run_dir: Path, warmup: int) -> float:
    """Mean wall time of whole steps after ``warmup`` (between consecutive step records)."""
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    t = {int(r["step"]): float(r["t"]) for r in recs if "loss" in r}
    return statistics.fmean(t[s] - t[s - 1] for s in sorted(t) if s > warmup and s - 1 in t)
