"""ETTR under the same chaos: mixfleet against plain torchrun restarts from disk.

Both sides train digits-cnn on 2 emulated H20s (``emu:nvidia-h20`` paced to
``--sample-s`` seconds per sample, so a step takes ~30 ms as on a real model rather than
the CPU's 3 ms) with the same seeded chaos schedule (``[faults] mtbf_steps``, ``seed``;
kinds kill and hang) and the same disk checkpoint interval; torchrun restarts both.

- mixfleet: in-memory snapshots every step (a kill loses at most one step) and the hang
  watchdog (``health.hang_floor_s``).
- plain: what torchrun alone gives: restart from the last disk checkpoint (snapshots
  off), and a hang ends only when the collective timeout expires (``--plain-timeout``,
  60 s here; PyTorch's default is 30 minutes). NaN guard and thermal guard off.

ETTR = productive step time / wall time (see ``mixfleet report``). Printed: each side's
summary and, last, both ETTRs and their ratio.

    .venv/bin/python benchmarks/ettr.py [--steps 1500] [--mtbf 500] [--seed 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(run_dir: Path, sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "mixfleet", "train", str(REPO / "examples" / "digits-cnn.toml"),
           "--nproc", "2", "--device", "emu:nvidia-h20", "--run-dir", str(run_dir), "--json"]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"training failed:\n{p.stderr[-3000:]}")
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--interval", type=int, default=200, help="disk checkpoint interval")
    ap.add_argument("--mtbf", type=float, default=500.0, help="mean steps between faults/rank")
    ap.add_argument("--sample-s", type=float, default=0.0005, help="emulated s per sample")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--hang-floor", type=float, default=10.0, help="mixfleet watchdog floor")
    ap.add_argument("--plain-timeout", type=float, default=60.0)
    args = ap.parse_args()
    common = [f"train.steps={args.steps}", f"checkpoint.interval={args.interval}",
              f"faults.mtbf_steps={args.mtbf}", f"faults.seed={args.seed}",
              "faults.random_kinds=['kill', 'hang']", "launch.max_restarts=50",
              "train.log_every=100000", f"emulate.sample_s={args.sample_s}",
              "health.thermal_action='cool'"]
    mixfleet = common + [f"health.hang_floor_s={args.hang_floor}",
                         f"launch.init_timeout_s={args.plain_timeout}"]
    plain = common + ["checkpoint.snapshot_interval=0", "health.hang_floor_s=1000000",
                      f"launch.init_timeout_s={args.plain_timeout}",
                      "health.nan_guard=false", "telemetry.hz=0"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, sets in (("mixfleet", mixfleet), ("plain", plain)):
            s = run(Path(tmp) / name, sets)
            out[name] = s
            print(f"{name:9s} ETTR {s['ettr']:.3f}  wall {s['wall_s']:.1f}s  restarts "
                  f"{s['restarts']}  steps lost {s['steps_lost']}  faults {s['faults_injected']}"
                  f"  failure time {s['failure_time_s']}", flush=True)
    m, p = out["mixfleet"]["ettr"], out["plain"]["ettr"]
    print(f"ettr: mixfleet {m:.3f}, plain torchrun from disk {p:.3f}, ratio "
          f"{m / max(p, 1e-9):.2f}")


if __name__ == "__main__":
    main()
