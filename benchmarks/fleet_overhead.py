"""Wall time of a job submitted through the live fleet (submit to done) over the same
`mixfleet train` run directly: the median of `--pairs` alternating pairs (5 by default) with
its spread. Target <= 1.10.

Both sides run digits-cnn on one **unpaced** device for the same number of steps (3000 by
default; `--steps 60` for a quick check, where the fleet's fixed cost per job dominates):
the pool is declared real (`emulated=False`), so its job runs with `--device auto` and
the pool's visible-devices variable, as on a fleet of real chips; on a machine without
them that is the CPU, unpadded. The direct side runs the very command and environment the
scheduler gives its attempt (`build_bundles`), without Ray and the scheduler. An emulated
device would pad every step to a calibrated budget that absorbs the fleet's own CPU use
(`--emulated` runs that variant, labelled so).

The fleet side is a local Ray head on 127.0.0.1 (started before the first pair, stopped
after the last; it idles during the direct runs). The pairs alternate their order (direct
then fleet, fleet then direct, ...) so a drifting load does not favour one side; each pair
gives fleet / direct, and the median of those ratios is on the last line (the first fleet
job also starts Ray's first worker process, a one-off cost the median leaves out).

    python benchmarks/fleet_overhead.py [--steps 3000] [--pairs 5] [--backend ray|local]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--backend", default="ray", choices=["ray", "local"])
    ap.add_argument("--emulated", action="store_true",
                    help="run on the padded emulated chip (emu:nvidia-h20) instead")
    args = ap.parse_args()
    if args.pairs < 1:
        raise SystemExit(f"--pairs is {args.pairs}; use 1 or more (5 for the figure)")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from mixfleet.live.control import down, up
    from mixfleet.live.scheduler import build_bundles
    from mixfleet.live.spec import load_fleet_spec, load_job
    from mixfleet.live.store import Store

    fleet = load_fleet_spec(ROOT / "examples" / "fleet-live.toml", emulated=args.emulated)
    pool = next(p for p in fleet.pools if p.id == "h20")
    what = (f"emulated {pool.chip} (padded)" if args.emulated
            else f"device {pool.device} (the machine's accelerator, else the CPU), unpaced")
    sets = [f"train.steps={args.steps}", "launch.max_restarts=0", "train.log_every=100"]
    with tempfile.TemporaryDirectory(prefix="mixfleet-bench-") as tmp:
        t = Path(tmp)
        job = t / "job.toml"
        job.write_text(f'[job]\nconfig = "{ROOT / "examples" / "digits-cnn.toml"}"\n'
                       f"set = {json.dumps(sets)}\ndevices = 1\npool = \"{pool.id}\"\n")
        spec = load_job(job, fleet)
        cfg = t / "direct.toml"
        cfg.write_text(spec.config_toml)

        def direct(k: int) -> float:
            # the command and environment the scheduler gives an attempt on device 0
            (b,) = build_bundles(spec, pool, [("local", 0)], cfg, t / f"direct{k}", k)
            t0 = time.perf_counter()
            env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # as Ray's
            subprocess.run([sys.executable, "-P", *b.argv], check=True, capture_output=True,
                           env={**env, **b.env})
            return time.perf_counter() - t0

        def through_fleet(store: Store) -> float:
            t0 = time.perf_counter()
            jid = store.submit(spec)
            # read every 10 ms (a read of SQLite is ~0.1 ms): the end is timed as the
            # scheduler records it, not up to a coarse poll later
            while (j := store.job(jid)) is None or j.state not in ("done", "failed"):
                time.sleep(0.01)
            s = time.perf_counter() - t0
            if j.state != "done":
                raise SystemExit(f"the fleet job {jid} ended {j.state}; see {t / 'fleet'}")
            return s

        d = t / "fleet"
        up(fleet, d, backend=args.backend, num_cpus=1)
        pairs: list[tuple[float, float]] = []
        try:
            store = Store(d)
            for k in range(args.pairs):
                if k % 2 == 0:
                    dk = direct(k)
                    fk = through_fleet(store)
                else:
                    fk = through_fleet(store)
                    dk = direct(k)
                pairs.append((fk, dk))
                print(f"pair {k + 1} ({'direct, fleet' if k % 2 == 0 else 'fleet, direct'}): "
                      f"fleet {fk:.1f} s, direct {dk:.1f} s, ratio {fk / dk:.3f}", flush=True)
        finally:
            down(d)
    ratios = sorted(f / d_ for f, d_ in pairs)
    med = statistics.median(ratios)
    print(f"{args.steps} steps of digits-cnn, {what}, backend {args.backend}; median fleet "
          f"{statistics.median(f for f, _ in pairs):.1f} s, direct "
          f"{statistics.median(d_ for _, d_ in pairs):.1f} s")
    label = ", emulated" if args.emulated else ""
    print(f"fleet_overhead: fleet / direct, median of {len(pairs)} alternating pairs = "
          f"{med:.3f} (spread {ratios[0]:.3f}-{ratios[-1]:.3f}{label}) (target <= 1.10)")


if __name__ == "__main__":
    main()
