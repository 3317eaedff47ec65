"""``make demo-fleet``: the 3-pool emulated fleet end to end on a local Ray head.

fleet up (127.0.0.1 only) -> an elastic llama job (fsdp, 1-2 devices, on pool h20, so
that waiting for 2 devices there is waiting for its drained chip) and 6 digits-cnn jobs
(on the two other pools) submitted -> the Ray worker of one running digits job killed
with SIGKILL (the job is placed again and resumes) -> critical heat drains a chip under
the llama job, which goes on with 1 rank; the chip, cooled, is put back (`fleet unblock`)
and the llama job grows back to 2 (docs/fleet-elastic.md) -> all jobs done -> the live
report (with the Nvidia device-hours replaced) -> fleet down -> a check that no process of
the fleet is left. Uses the CLI commands a user would type, from the repository root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOBS = ((1, 300), (2, 200), (1, 400), (2, 300), (1, 200), (1, 300))
LLAMA = ("train.steps=120", "train.warmup_steps=5", "parallel.mode='fsdp'",
         "launch.max_restarts=2", "checkpoint.interval=10", "train.log_every=40",
         'health.thermal_action="drain"', "faults.inject=['overheat@rank=1,step=30']")


def _mixfleet(*args: str) -> str:
    r = subprocess.run([sys.executable, "-P", "-m", "mixfleet", *args], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SystemExit(f"mixfleet {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def main() -> int:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from mixfleet.live.control import load_state
    from mixfleet.live.head import head_pids
    from mixfleet.live.store import Store

    root = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="mixfleet-demo-fleet-") as tmp:
        d = Path(tmp) / "fleet"
        print(_mixfleet("fleet", "up", "--fleet", str(root / "examples" / "fleet-live.toml"),
                        "--dir", str(d), "--emulate", "always", "--num-cpus", "1"), end="")
        mark = load_state(d)["mark"]
        try:
            llama = Path(tmp) / "llama.toml"
            llama.write_text(f'[job]\nname = "llama-elastic"\nconfig = '
                             f'"{root / "examples" / "llama-debug.toml"}"\n'
                             f"set = {json.dumps(list(LLAMA))}\nmin_devices = 1\n"
                             f'max_devices = 2\npriority = 1\npool = "h20"\n')
            lid = _mixfleet("submit", str(llama), "--dir", str(d)).strip()
            ids = [lid]
            for i, (n, steps) in enumerate(JOBS):
                job = Path(tmp) / f"demo{i}.toml"
                sets = [f"train.steps={steps}", f"train.seed={i}", "train.log_every=50",
                        "checkpoint.interval=50"]
                job.write_text(f'[job]\nname = "demo{i}"\nconfig = '
                               f'"{root / "examples" / "digits-cnn.toml"}"\n'
                               f"set = {json.dumps(sets)}\ndevices = {n}\n"
                               f'chips = ["kunlun-p800", "ascend-910b"]\n')
                ids.append(_mixfleet("submit", str(job), "--dir", str(d)).strip())
            print(f"submitted {len(ids)} jobs: {', '.join(ids)}")
            store = Store(d)
            victim = None
            while victim is None:
                for a in store.attempts(states=("running",)):
                    if a.handle.get("worker_pids") and a.job_id != lid:  # a digits job
                        log = d / "jobs" / a.job_id / "run" / "metrics.jsonl"
                        if log.exists() and log.stat().st_size > 0:
                            victim = a
                            break
                time.sleep(0.5)
            os.kill(victim.handle["worker_pids"][0], signal.SIGKILL)
            print(f"killed the Ray worker (pid {victim.handle['worker_pids'][0]}) of "
                  f"{victim.job_id} on pool {victim.pool} (emulated) with SIGKILL")
            t0 = time.time()
            shrunk = unblocked = False
            while any(store.job(j).state in ("queued", "running")  # type: ignore[union-attr]
                      for j in ids):
                time.sleep(1)
                if not unblocked and (rs := store.resizes(lid)):
                    if not shrunk:
                        shrunk = True
                        print(f"{lid} (llama, fsdp): {rs[0].action} {rs[0].old}->"
                              f"{rs[0].new}: {rs[0].reason}")
                    for b in store.blocklist():
                        if b["job_id"] == lid and time.time() - b["t"] > 20:  # cooled
                            print(_mixfleet("fleet", "unblock", f"{b['pool']}:{b['node']}:"
                                            f"{b['device']}", "--dir", str(d)), end="")
                            unblocked = True
                if time.time() - t0 > 900:
                    raise SystemExit("jobs still running after 15 minutes")
            print(_mixfleet("status", "--dir", str(d)), end="")
            print(_mixfleet("fleet", "report", "--dir", str(d)), end="")
            for r in store.resizes(lid):
                print(f"{lid} (llama, fsdp) {r.action} {r.old}->{r.new} ({r.state}): "
                      f"{r.reason}")
            again = store.attempts(victim.job_id)
            print(f"{victim.job_id}: {len(again)} attempts ({', '.join(a.state for a in again)})"
                  f", final state {store.job(victim.job_id).state}")  # type: ignore[union-attr]
        finally:
            print(_mixfleet("fleet", "down", "--dir", str(d)), end="")
        left = head_pids(mark)
        print(f"Ray processes of the fleet left after down: {len(left)}")
        return 0 if not left else 1


if __name__ == "__main__":
    raise SystemExit(main())
