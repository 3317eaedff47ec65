"""Time to the first step: seconds from starting ``mixfleet train --nproc 2`` to the first
step's metrics record, with the rendezvous of the code this runs from.

Each repeat runs, in a subprocess and a fresh run directory (a temp dir)::

    python -m mixfleet train examples/digits-cnn.toml --nproc 2 --run-dir TMP --json \\
        --set train.steps=STEPS --set train.log_every=1 --set telemetry.hz=0

and reads from ``TMP/events.jsonl`` and ``TMP/metrics.jsonl`` (times ``t`` since the start
taken just before the subprocess starts): ``launch`` (config checked, run directory
written), ``worker_start`` (the last rank's: rendezvous and process group done),
``run_start`` (rank 0 resumed or started fresh), and the first step record. The rendezvous
is whatever the checked-out code does. To compare two checkouts (e.g. main and a branch),
name both with ``--root``: each repeat runs one after the other, alternating, each with its
own ``ROOT/.venv/bin/python`` and ``ROOT/examples/digits-cnn.toml``:

    .venv/bin/python benchmarks/time_to_first_step.py [--repeats 5] [--steps 5] \
        [--root /work/main --root .]

Last line per checkout: JSON with the median, min and max of each figure over the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("launch", "worker_start", "run_start", "first_step")


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line
    return out


def one_run(steps: int, root: Path) -> dict[str, float]:
    """Seconds from start to each phase of one 2-rank run of the checkout ``root``."""
    python = root / ".venv" / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="ttfs-") as tmp:
        run = Path(tmp) / "run"
        cmd = [str(python) if python.exists() else sys.executable, "-m", "mixfleet", "train",
               str(root / "examples" / "digits-cnn.toml"), "--nproc", "2",
               "--run-dir", str(run), "--json", "--set", f"train.steps={steps}",
               "--set", "train.log_every=1", "--set", "telemetry.hz=0"]
        t0 = time.time()
        p = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"mixfleet train failed ({p.returncode}):\n{p.stderr[-3000:]}")
        events = _records(run / "events.jsonl")
        first = {}
        for e in events:
            if e["event"] == "worker_start":
                first["worker_start"] = e["t"]  # the last rank to start
            elif e["event"] in ("launch", "run_start"):
                first.setdefault(e["event"], e["t"])
        steps_done = [r["t"] for r in _records(run / "metrics.jsonl") if "loss" in r]
        first["first_step"] = min(steps_done)
        return {k: round(first[k] - t0, 3) for k in PHASES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--root", action="append", type=Path, default=[],
                    help="a checkout to time (repeatable: alternated); default this one")
    args = ap.parse_args()
    roots = [r.resolve() for r in args.root] or [ROOT]
    rows: dict[Path, list[dict[str, float]]] = {r: [] for r in roots}
    for i in range(args.repeats):
        for root in roots:
            r = one_run(args.steps, root)
            rows[root].append(r)
            print(f"repeat {i + 1} {root}: "
                  + "  ".join(f"{k} {v:.2f} s" for k, v in r.items()), flush=True)
    for root, rs in rows.items():
        summary = {k: {"median_s": round(statistics.median(r[k] for r in rs), 3),
                       "min_s": min(r[k] for r in rs), "max_s": max(r[k] for r in rs)}
                   for k in PHASES}
        print(json.dumps({"benchmark": "time_to_first_step", "root": str(root),
                          "repeats": args.repeats, "nproc": 2, **summary}))


if __name__ == "__main__":
    main()
