"""Recovery: seconds from a SIGKILL of one rank to the next completed step, and steps lost.

Each repeat runs, in a subprocess and a fresh run directory (a temp dir, or under --keep)::

    python -m mixfleet train examples/digits-cnn.toml --nproc 2 --run-dir TMP --json \\
        --set train.steps=1500 --set checkpoint.interval=100

watches ``TMP/metrics.jsonl`` and, once it shows the kill step, SIGKILLs rank 1 from outside
(its pid is in ``TMP/pids/rank1``), as ``make demo`` does. The kill steps are spread over a
checkpoint interval (``--kill-at`` plus ``--kill-stride`` per repeat), so the steps lost
cover the range a crash at a random step gives. After the run:

- recovery seconds: from the kill (wall clock, taken when ``os.kill`` returned) to the
  first ``metrics.jsonl`` record of the restarted attempt (its ``t``; the first record
  written after the first ``run_start`` event after the kill), with the breakdown from
  ``events.jsonl``: the surviving rank noticing (``peer_lost``), the new ranks starting
  (``worker_start``), the checkpoint loaded (``run_start``), the first step done;
- steps lost: ``steps_lost`` of ``summary.json`` (last logged step before the resume minus
  the step resumed from: a disk checkpoint, or an in-memory snapshot where the trainer
  keeps them; ``run_start``'s ``source`` says which, and is printed per repeat).

Last line: the medians over the repeats.

    .venv/bin/python benchmarks/recovery.py [--repeats 3] [--steps 1500] [--interval 100]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mixfleet.runs import Event
from mixfleet.train.rundir import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "digits-cnn.toml"


class Tail:
    """New complete JSON lines of a growing file (a torn last line waits for its end)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.last_step = path, 0, 0

    def poll(self) -> int:
        if not self.path.exists():
            return self.last_step
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            try:
                self.last_step = max(self.last_step, int(json.loads(line)["step"]))
            except (ValueError, KeyError):
                continue
        return self.last_step


def _remove_snapshots(run_dir: Path) -> int:
    """Delete the in-memory snapshot files (/dev/shm) of a run, where the trainer keeps
    them; a finished run should have removed its own. The number found."""
    try:
        from mixfleet.train.checkpoint.snapshot import recorded_snapshot_dirs
    except ImportError:
        return 0
    found = 0
    for d in recorded_snapshot_dirs(run_dir):  # the run's own private directories
        for p in d.glob("*-w2-r*.snap"):
            found += 1
            p.unlink(missing_ok=True)
        try:
            d.rmdir()
        except OSError:
            pass
    return found


def one_run(run_dir: Path, steps: int, interval: int, kill_at: int,
            timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "mixfleet", "train", str(CONFIG), "--nproc", "2",
           "--run-dir", str(run_dir), "--json", "--set", f"train.steps={steps}",
           "--set", f"checkpoint.interval={interval}"]
    log = run_dir.parent / f"{run_dir.name}.log"
    t_kill = None
    with log.open("w") as err:
        # Own process group, so a run that hangs is stopped with its torchrun and ranks.
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True)
        tail, pid_file = Tail(run_dir / "metrics.jsonl"), run_dir / "pids" / "rank1"
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            if t_kill is None and tail.poll() >= kill_at and pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
                    t_kill = time.time()
                except (ProcessLookupError, ValueError):  # stale or half-written pid file
                    pass
            time.sleep(0.005)
        try:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            _remove_snapshots(run_dir)
            raise SystemExit(f"recovery: the run did not end within {timeout_s:.0f} s; "
                             f"see {log}") from None
    if proc.returncode != 0:
        _remove_snapshots(run_dir)
        end = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"recovery: training failed (exit {proc.returncode}); the end of "
                         f"its stderr:\n{end}")
    if t_kill is None:
        raise SystemExit(f"recovery: the run ended before step {kill_at}; raise --steps")
    summary = json.loads(out.strip().splitlines()[-1])
    leaked = _remove_snapshots(run_dir)

    events = list(read_jsonl(run_dir / "events.jsonl"))
    metrics = list(read_jsonl(run_dir / "metrics.jsonl"))

    def first(name: str, **match: Any) -> dict[str, Any] | None:
        return next((e for e in events if e["event"] == name and e["t"] >= t_kill
                     and all(e.get(k) == v for k, v in match.items())), None)

    start = first(Event.RUN_START)  # the attempt that resumed after the kill
    if start is None:
        raise SystemExit(f"recovery: no resume after the kill in {run_dir / 'events.jsonl'}")
    nxt = next((m for m in metrics if m["t"] > start["t"]), None)
    if nxt is None:
        raise SystemExit("recovery: no step completed after the resume")
    killed_at = max((m["step"] for m in metrics if m["t"] <= t_kill), default=0)
    errors = [ln.strip() for ln in log.read_text(errors="replace").splitlines()
              if "Error:" in ln and "Traceback" not in ln]
    lost, worker = (first(Event.PEER_LOST),
                    first(Event.WORKER_START, attempt=start.get("attempt")))
    return {
        "killed_at": killed_at,
        "resumed_from": start.get("resumed_from"),
        "source": start.get("source") or "disk",
        "next_step": nxt["step"],
        "recovery_s": nxt["t"] - t_kill,
        "peer_lost_s": (lost["t"] - t_kill) if lost else float("nan"),
        "worker_start_s": (worker["t"] - t_kill) if worker else float("nan"),
        "resumed_s": start["t"] - t_kill,
        "steps_lost": int(summary["steps_lost"]),
        "restarts": int(summary["restarts"]),
        "final_metric": summary.get("final_metric"),
        "wall_s": summary.get("wall_s"),
        "restarts_after_kill": sum(e["event"] == Event.RUN_START for e in events
                                   if e["t"] >= t_kill),
        "errors": errors,
        "leaked_snapshots": leaked,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs, one kill each (default 3)")
    ap.add_argument("--steps", type=int, default=1500, help="train.steps (default 1500)")
    ap.add_argument("--interval", type=int, default=100,
                    help="checkpoint.interval (default 100)")
    ap.add_argument("--kill-at", type=int, default=737,
                    help="step of the first kill (default 737)")
    ap.add_argument("--kill-stride", type=int, default=31,
                    help="steps added to the kill step per repeat (default 31)")
    ap.add_argument("--timeout", type=float, default=150.0, help="seconds per run at most")
    ap.add_argument("--keep", metavar="DIR", default=None,
                    help="put the run directories (and the ranks' stderr logs) under DIR "
                         "and keep them (default: a temp dir, deleted)")
    args = ap.parse_args()

    secs, lost = [], []
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    with (contextlib.nullcontext(args.keep) if args.keep
          else tempfile.TemporaryDirectory(prefix="mixfleet-recovery-")) as tmp:
        for i in range(args.repeats):
            kill_at = args.kill_at + i * args.kill_stride
            r = one_run(Path(tmp) / f"run{i}", args.steps, args.interval, kill_at,
                        args.timeout)
            secs.append(r["recovery_s"])
            lost.append(r["steps_lost"])
            m = r["final_metric"] or {}
            print(f"repeat {i + 1}: SIGKILL rank 1 at step {r['killed_at']}; "
                  f"peer lost +{r['peer_lost_s']:.2f} s, new ranks +{r['worker_start_s']:.2f} s, "
                  f"resumed from {r['resumed_from']} ({r['source']}) +{r['resumed_s']:.2f} s, step "
                  f"{r['next_step']} done +{r['recovery_s']:.2f} s; steps lost "
                  f"{r['steps_lost']}, restarts {r['restarts']}, "
                  f"{m.get('name', 'metric')} {m.get('value', float('nan')):.4f}, "
                  f"run {r['wall_s']:.1f} s", flush=True)
            if r["restarts"] != 1 or r["restarts_after_kill"] != 1:
                print(f"  note: {r['restarts']} restarts in all, {r['restarts_after_kill']} "
                      f"after the kill; errors in the ranks' stderr: "
                      f"{sorted(set(r['errors']))[:3]}", flush=True)
            if r["leaked_snapshots"]:
                print(f"  note: the finished run left {r['leaked_snapshots']} in-memory "
                      f"snapshot file(s) in /dev/shm (removed)", flush=True)
    print(f"recovery: median {statistics.median(secs):.2f} s from SIGKILL to the next "
          f"completed step, steps lost median {statistics.median(lost):g} "
          f"(checkpoint interval {args.interval})")


if __name__ == "__main__":
    main()
