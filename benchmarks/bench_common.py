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


PHILLY = "philly_jobs_sep_oct_2017.csv"


def named_trace(spec: str = "philly", seed: int = 0):  # type: ignore[no-untyped-def]
    """(jobs, info, name) of the trace a benchmark names: ``philly`` (the Sep-Oct 2017 file
    under the data directory, $MIXFLEET_DATA or ../shared/data), ``synthetic:N`` or a path.
    A named trace that is missing exits 2 with the fix, never a synthetic stand-in."""
    from mixfleet.errors import ConfigError
    from mixfleet.sim.traces import read_trace

    path = data_dir() / "traces" / "philly" / PHILLY if spec == "philly" else spec
    if spec == "philly" and not Path(path).is_file():
        print(f"error: trace philly: {path} not found; set MIXFLEET_DATA to the directory "
              f"holding traces/philly/{PHILLY}, or pass --trace synthetic:52849 (a synthetic "
              f"trace, labelled so)", file=sys.stderr)
        raise SystemExit(2)
    try:
        jobs, info = read_trace(path, seed=seed)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    name = "philly-sep-oct-2017" if spec == "philly" else (
        spec if info.format == "synthetic" else Path(spec).name)
    return jobs, info, f"{name} ({info.format}, {len(jobs)} jobs)"


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


def two_rank_rounds(script: str, argv: list[str]) -> list[dict]:
    """Run ``script`` as 2 gloo ranks on loopback (RANK, WORLD_SIZE, MASTER_* set; ``-P``)
    and return the rounds rank 0 prints as JSON on its last line: ``[{"mixfleet": s,
    "plain": s, "same": bool}, ...]``."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-P", script, *argv], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                   "GLOO_SOCKET_IFNAME": "lo"})
             for r in range(2)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("a rank failed")
    return list(json.loads(outs[0].strip().splitlines()[-1]))


def print_rounds(rows: list[dict], mine: str, plain: str) -> list[float]:
    """One line per round and the spread of the per-round ratios; the sorted ratios."""
    for i, r in enumerate(rows):
        print(f"round {i + 1}: {mine} {r['mixfleet']:.3f} s, {plain} {r['plain']:.3f} s, "
              f"ratio {r['mixfleet'] / r['plain']:.3f}, final weights equal: {r['same']}")
    ratios = sorted(r["mixfleet"] / r["plain"] for r in rows)
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    print(f"per-round ratios: min {ratios[0]:.3f}, quartiles {q[0]:.3f} / {q[1]:.3f} / "
          f"{q[2]:.3f}, max {ratios[-1]:.3f}; final weights bit-identical in every round: "
          f"{all(r['same'] for r in rows)}")
    return ratios
