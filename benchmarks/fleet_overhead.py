"""Wall time of a job submitted through the live fleet (submit to completion) over the
same `mixfleet train` run directly. Target <= 1.10.

Both sides run digits-cnn on one emulated device of the same chip for the same number of
steps (3000 by default: a ~50-60 s job on 2 quiet cores, the issue's size; `--steps 60` for
a quick check, where the fleet's fixed ~1.2 s per job dominates); the fleet side is a local
Ray head on 127.0.0.1 (started before the clock starts, stopped after). Direct, fleet,
direct: the fleet run is compared with the mean of the two direct runs. Ratio on the last
line.

    python benchmarks/fleet_overhead.py [--steps 3000] [--backend ray|local]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--backend", default="ray", choices=["ray", "local"])
    args = ap.parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from mixfleet.live.control import down, up
    from mixfleet.live.spec import load_fleet_spec, load_job
    from mixfleet.live.store import Store

    sets = [f"train.steps={args.steps}", "launch.max_restarts=0", "train.log_every=100"]
    with tempfile.TemporaryDirectory(prefix="mixfleet-bench-") as tmp:
        t = Path(tmp)
        job = t / "job.toml"
        job.write_text(f'[job]\nconfig = "{ROOT / "examples" / "digits-cnn.toml"}"\n'
                       f"set = {json.dumps(sets)}\ndevices = 1\npool = \"h20\"\n")
        fleet = load_fleet_spec(ROOT / "examples" / "fleet-live.toml", emulated=True)
        spec = load_job(job, fleet)
        cfg = t / "direct.toml"
        cfg.write_text(spec.config_toml)

        def direct(k: int) -> float:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mixfleet", "train", str(cfg), "--nproc",
                            "1", "--device", "emu:nvidia-h20", "--run-dir",
                            str(t / f"direct{k}")], check=True, capture_output=True)
            s = time.perf_counter() - t0
            print(f"direct mixfleet train #{k}: {s:.1f} s ({args.steps} steps)", flush=True)
            return s

        # direct, fleet, direct: the load of a shared machine drifts; the fleet run is
        # compared with the mean of the direct runs on either side of it
        d = t / "fleet"
        up(fleet, d, backend=args.backend, num_cpus=1)
        try:
            first = direct(1)
            store = Store(d)
            t0 = time.perf_counter()
            jid = store.submit(spec)
            while store.job(jid).state not in ("done", "failed"):  # type: ignore[union-attr]
                time.sleep(0.2)
            fleet_s = time.perf_counter() - t0
            state = store.job(jid).state  # type: ignore[union-attr]
            print(f"through the fleet ({args.backend}, emulated pool h20): {fleet_s:.1f} s "
                  f"(submit to done)", flush=True)
            second = direct(2)
        finally:
            down(d)
        if state != "done":
            raise SystemExit(f"the fleet job ended {state}; see {d}")
        direct_s = (first + second) / 2
    print(f"fleet_overhead: fleet {fleet_s:.1f} s / direct {direct_s:.1f} s (mean of 2) = "
          f"{fleet_s / direct_s:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
