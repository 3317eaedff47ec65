"""``make demo``: train digits-cnn on 2 ranks, SIGKILL one mid-run, watch it come back.

Runs ``mixfleet train examples/digits-cnn.toml --nproc 2`` twice: once with rank 1 killed
by SIGKILL from outside mid-run (the launcher restarts the ranks, they resume from the last
committed checkpoint), once uninterrupted. Prints the final accuracy and whether the final
weights of both runs are bit-identical.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path

import torch

from mixfleet.train.rundir import RunDir, read_jsonl

KILL_AT_STEP = 1337


def _example() -> Path:
    local = Path("examples/digits-cnn.toml")
    if local.is_file():
        return local
    return Path(str(resources.files("mixfleet").joinpath("../../examples/digits-cnn.toml")))


def _killer(run: RunDir, at_step: int, stop: threading.Event, out: dict) -> None:
    """SIGKILL rank 1 once metrics.jsonl shows ``at_step``."""
    while not stop.is_set():
        last = 0
        for rec in read_jsonl(run.metrics_path):
            last = rec.get("step", last)
        pid_file = run.pids / "rank1"
        if last >= at_step and pid_file.exists():
            pid = int(pid_file.read_text())
            print(f"\n>>> demo: SIGKILL rank 1 (pid {pid}) at step ~{last}\n", flush=True)
            try:
                os.kill(pid, signal.SIGKILL)
                out["killed_at"] = last
            except ProcessLookupError:
                continue
            return
        time.sleep(0.02)


def _train(config: Path, run_dir: Path, title: str) -> dict:
    print(f"\n=== {title} ===", flush=True)
    cmd = [sys.executable, "-m", "mixfleet", "train", str(config), "--nproc", "2",
           "--run-dir", str(run_dir), "--resume", "never", "--json"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo: training failed ({proc.returncode}); see {run_dir}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> int:
    config = _example()
    root = Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    crash, ref = root / "crash", root / "reference"
    print(f"mixfleet demo: digits-cnn on 2 ranks ({config}); run dirs under {root}")

    stop, info = threading.Event(), dict[str, int]()
    t = threading.Thread(target=_killer, args=(RunDir(crash), KILL_AT_STEP, stop, info),
                         daemon=True)
    t.start()
    s_crash = _train(config, crash, "run 1: rank 1 is killed mid-run")
    stop.set()
    s_ref = _train(config, ref, "run 2: the same config, uninterrupted (reference)")

    a = torch.load(crash / "final" / "model.pt")
    b = torch.load(ref / "final" / "model.pt")
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    m = s_crash["final_metric"]
    print("\n=== result ===")
    print(f"killed rank 1 at step ~{info.get('killed_at', '?')}; restarts: "
          f"{s_crash['restarts']}, steps lost: {s_crash['steps_lost']} "
          f"(checkpoint interval 200)")
    print(f"final {m['name']}: {m['value']:.4f} (target >= 0.95)")
    print(f"wall time: {s_crash['wall_s']:.1f}s with the crash, {s_ref['wall_s']:.1f}s without")
    print(f"final weights bit-identical to the uninterrupted run: {'YES' if same else 'NO'}")
    return 0 if same and m["value"] >= 0.95 and s_crash["restarts"] >= 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
