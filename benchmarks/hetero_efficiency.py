"""Heterogeneous efficiency: one job on three emulated chips against their solo throughputs.

Three emulated chips (``emu:nvidia-h20``, ``emu:kunlun-p800``, ``emu:ascend-910b``) are
paced at exact relative speeds 1.0, 0.6 and 0.35 (``[[ranks]] speed``, with the same
``[emulate] sample_s`` on every rank: a step of ``n`` samples takes ``n x sample_s / speed``
on a chip). digits-cnn, global batch B = 128, through ``mixfleet train`` (torchrun, gloo,
the hierarchical all-reduce: two device kinds, cuda and npu).

- solo: each chip alone trains the same global batches (one rank, same B);
  its throughput is B / step time.
- mixfleet: the three together, shares measured over the first 10 steps and rebalanced
  every 10 steps (``[shares] mode = "measured"``).
- baseline: the three together with equal shares.
- throttle: the H20 runs at 50% clock in steps 20-60 of 70; shares by speed, then
  rebalance on (every 5 steps) against off (the same shares throughout).

Throughput is measured on whole steps: the wall time between consecutive step records
(``metrics.jsonl``, rank 0's clock), so it includes the collectives, the optimizer step and
all post-step work (logging, snapshots, health checks, rebalancing), not only the
compute. After a warm-up (the start-up of the processes is not counted): B / the median
whole-step time for the steady runs (robust to the spikes of a shared machine), wall time
over the steps for the throttle runs (the episode is the point). The pace only holds
while the real CPU compute of a step stays under its budget; on a loaded machine raise
``--sample-ms``. Printed: each figure; the ratios; last line: mixfleet's throughput / the
sum of the solo throughputs (target >= 0.95).

    .venv/bin/python benchmarks/hetero_efficiency.py [--sample-ms 1.0] [--steps 80] \
        [--parallel dp|fsdp]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHIPS = [("emu:nvidia-h20", 1.0), ("emu:kunlun-p800", 0.6), ("emu:ascend-910b", 0.35)]
B = 128


def ranks_value(chips: list[tuple[str, float]]) -> str:
    return "ranks=[" + ", ".join(f'{{device = "{d}", speed = {s}}}' for d, s in chips) + "]"


PARALLEL = ["dp"]  # set from --parallel


def train(run_dir: Path, chips: list[tuple[str, float]], steps: int, sample_s: float,
          *extra: str) -> Path:
    sets = [ranks_value(chips), f"parallel.mode='{PARALLEL[0]}'", f"train.steps={steps}",
            f"train.global_batch={B}",
            f"emulate.sample_s={sample_s}", "checkpoint.interval=100000",
            "train.log_every=100000", "health.straggler_action='report'", "telemetry.hz=0",
            "launch.max_restarts=0", *extra]
    cmd = [sys.executable, "-m", "mixfleet", "train", str(ROOT / "examples" / "digits-cnn.toml"),
           "--run-dir", str(run_dir), "--json", "--resume", "never"]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"training failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return run_dir


def _steps(run_dir: Path) -> dict[int, dict]:
    recs = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return {int(r["step"]): r for r in recs if "loss" in r}


def steady(run_dir: Path, first: int) -> float:
    """Samples/s from the median whole-step wall time after step ``first`` (the time
    between consecutive step records; robust to the spikes a shared machine adds)."""
    t = {s: float(r["t"]) for s, r in _steps(run_dir).items()}
    st = [t[s] - t[s - 1] for s in sorted(t) if s > first and s - 1 in t]
    return B / statistics.median(st)


def overall(run_dir: Path, first: int) -> float:
    """Samples/s from the wall time between step ``first`` and the last step."""
    t = {s: float(r["t"]) for s, r in _steps(run_dir).items()}
    last = max(t)
    return B * (last - first) / (t[last] - t[first])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample-ms", type=float, default=1.0,
                    help="step time per sample at speed 1.0 (ms)")
    ap.add_argument("--steps", type=int, default=50, help="steps of the mixed runs")
    ap.add_argument("--parallel", choices=("dp", "fsdp"), default="dp",
                    help="reduction strategy of every run (fsdp: FSDP2, sharded)")
    args = ap.parse_args()
    PARALLEL[0] = args.parallel
    print(f"parallel mode: {args.parallel}, {args.sample_ms} ms per sample at speed 1.0",
          flush=True)
    sample_s = args.sample_ms / 1000
    warm = 20
    with tempfile.TemporaryDirectory(prefix="hetero-") as tmp:
        root = Path(tmp)
        solo = {}
        for dev, speed in CHIPS:
            d = train(root / f"solo-{dev[4:]}", [(dev, speed)], 25, sample_s)
            solo[dev] = steady(d, 5)
            print(f"solo {dev} (speed {speed}): {solo[dev]:.0f} samples/s", flush=True)
        total = sum(solo.values())
        print(f"sum of solo throughputs: {total:.0f} samples/s", flush=True)

        d_eq = train(root / "equal", CHIPS, args.steps, sample_s)
        eq = steady(d_eq, warm)
        print(f"equal shares (baseline): {eq:.0f} samples/s = {eq / total:.3f} of the sum",
              flush=True)
        d_mx = train(root / "mixfleet", CHIPS, args.steps, sample_s,
                     'shares.mode="measured"', "shares.rebalance_every=10")
        mx = steady(d_mx, warm)
        shares = [e["new"] for e in map(json.loads, (d_mx / "events.jsonl").read_text()
                                        .splitlines()) if e["event"] == "shares_changed"]
        print(f"mixfleet (measured shares {shares[-1] if shares else '?'}, rebalance every "
              f"10): {mx:.0f} samples/s = {mx / total:.3f} of the sum", flush=True)

        throttle = "faults.inject=['throttle@rank=0,step=20,steps=40,clock=50']"
        d_on = train(root / "throttle-on", CHIPS, 70, sample_s, 'shares.mode="speed"',
                     "shares.rebalance_every=5", throttle)
        d_off = train(root / "throttle-off", CHIPS, 70, sample_s, 'shares.mode="speed"',
                      throttle)
        on, off = overall(d_on, 15), overall(d_off, 15)
        print(f"throttle episode (H20 at 50% clock, steps 20-60; throughput over steps "
              f"15-70): rebalance on {on:.0f} "
              f"samples/s, off {off:.0f} samples/s; on/off = {on / off:.3f}", flush=True)
        print(f"mixfleet / equal shares: {mx / eq:.3f}")
        print(f"equal shares / sum of solo throughputs: {eq / total:.3f}")
        print(f"hetero efficiency (mixfleet / sum of solo throughputs, target >= 0.95): "
              f"{mx / total:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
