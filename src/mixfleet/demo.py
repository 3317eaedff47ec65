"""``make demo``: train digits-cnn on 2 ranks, SIGKILL one mid-run, watch it come back;
then train one model on a mixed, emulated fleet of three chips.

Runs ``mixfleet train examples/digits-cnn.toml --nproc 2`` twice: once with rank 1 killed
by SIGKILL from outside mid-run (the launcher restarts the ranks, they resume from the last
committed checkpoint), once uninterrupted. Prints the final accuracy and whether the final
weights of both runs are bit-identical. Then three emulated chips (H20, Kunlun P800, Ascend
910B at relative speeds 1.0, 0.6, 0.35) train one model with measured, rebalanced shares;
printed: its throughput against the sum of the chips' solo throughputs and against equal
shares. Before it: an emulated chip that overheats; after it: an LLM stage (Shakespeare
tokenized with ``mixfleet data prepare``, a small Llama-style decoder sharded with FSDP2 on
2 ranks, a rank killed and resumed bit-identically).
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

from mixfleet.runs import Event
from mixfleet.train.rundir import RunDir, read_jsonl
from mixfleet.train.worker import load_run_config

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


def _train(config: Path, run_dir: Path, title: str, *extra: str) -> dict:
    print(f"\n=== {title} ===", flush=True)
    cmd = [sys.executable, "-P", "-m", "mixfleet", "train", str(config), "--nproc", "2",
           "--run-dir", str(run_dir), "--resume", "never", "--json", *extra]
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

    a = torch.load(crash / "final" / "model.pt", weights_only=True)
    b = torch.load(ref / "final" / "model.pt", weights_only=True)
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    m = s_crash["final_metric"]
    print("\n=== result ===")
    paced = [e["interval"] for e in RunDir(crash).read_events()
             if e["event"] == Event.SNAPSHOT_INTERVAL]
    cost = 100 * load_run_config(RunDir(crash)).checkpoint.snapshot_max_cost
    snaps = (f"every {paced[-1]} steps, paced from 1 to cost under {cost:g}% of the steps"
             if paced else "every step")
    print(f"killed rank 1 at step ~{info.get('killed_at', '?')}; restarts: "
          f"{s_crash['restarts']}, steps lost: {s_crash['steps_lost']} (in-memory snapshots "
          f"{snaps}; disk checkpoint every 200)")
    print(f"final {m['name']}: {m['value']:.4f} (target >= 0.95)")
    print(f"wall time: {s_crash['wall_s']:.1f}s with the crash, {s_ref['wall_s']:.1f}s without")
    print(f"final weights bit-identical to the uninterrupted run: {'YES' if same else 'NO'}")
    ok = same and m["value"] >= 0.95 and s_crash["restarts"] >= 1
    ok = _overheat_stage(config, root) and ok
    ok = _mixed_fleet(config, root / "mixed") and ok
    return 0 if _llm_stage(root / "llm") and ok else 1


LLM_SETS = ("workload.name='llama'", "train.steps=80", "train.global_batch=8",
            "train.optimizer='adamw'", "train.lr=0.003", "train.warmup_steps=10",
            "checkpoint.interval=40", "train.log_every=20", "parallel.mode='fsdp'",
            "telemetry.hz=0")


def _llm_stage(root: Path) -> bool:
    """Tokenize the shipped Shakespeare text, then a small Llama-style decoder sharded with
    FSDP2 on 2 ranks: rank 1 killed at step 50 and resumed, against an uninterrupted run."""
    print("\n=== run 5: an LLM, sharded (FSDP2): tokenize Shakespeare, train a small "
          "Llama-style decoder on 2 ranks, kill rank 1 at step 50 ===", flush=True)
    data = root / "data"
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-P", "-m", "mixfleet", "data", "prepare", "--shakespeare",
                    "--out", str(data), "--vocab", "2048"], check=True)
    opts = (f"workload.options={{preset='debug', data='{data}', dim=128, layers=2, heads=4, "
            f"kv_heads=2, ffn_dim=384, seq_len=64, eval_samples=32}}")
    sets = [x for v in (*LLM_SETS, opts) for x in ("--set", v)]
    crash = _train(_example(), root / "crash", "llama, fsdp, rank 1 killed at step 50", *sets,
                   "--inject", "kill@rank=1,step=50")
    _train(_example(), root / "reference", "llama, fsdp, uninterrupted", *sets)
    a = torch.load(root / "crash" / "final" / "model.pt", weights_only=True)
    b = torch.load(root / "reference" / "final" / "model.pt", weights_only=True)
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    m = crash["final_metric"]
    print("\n=== LLM result ===")
    print(f"{sum(v.numel() for v in a.values()) / 1e6:.2f}M parameters, 2 ranks, fsdp; "
          f"restarts {crash['restarts']}, steps lost {crash['steps_lost']}")
    print(f"final {m['name']}: {m['value']:.3f}; final weights bit-identical to the "
          f"uninterrupted run: {'YES' if same else 'NO'}")
    return same and crash["restarts"] >= 1


def _overheat_stage(config: Path, root: Path) -> bool:
    """Two emulated H20s: rank 1 overheats (the guard checkpoints and cools it), then
    rank 0 is killed; the run recovers and reaches its accuracy."""
    s = _train(config, root / "overheat", "run 3: emulated chips (emu:nvidia-h20): rank 1 "
               "overheats at step 500, rank 0 is killed at step 1000",
               "--device", "emu:nvidia-h20", "--set", "train.steps=1500",
               "--set", "faults.inject=['overheat@rank=1,step=500','kill@rank=0,step=1000']")
    for e in RunDir(root / "overheat").read_events():
        if e["event"] in (Event.THERMAL_WARNING, Event.THERMAL_RESUMED):
            what = (f"{e['temp_c']:.1f} C >= warning {e['warn_c']:.0f} C: checkpoint, "
                    f"{e['action']}" if e["event"] == Event.THERMAL_WARNING else
                    f"cooled to {e['temp_c']:.1f} C after {e['paused_s']:.2f}s, resumed")
            print(f"thermal guard, rank {e['rank']} at step {e['step']}: {what}")
    m = s["final_metric"]
    print(f"\n=== result (emulated) ===\nrestarts {s['restarts']}, steps lost "
          f"{s['steps_lost']}, ETTR {s['ettr']:.3f}, time lost by cause "
          f"{s['failure_time_s']}\nfinal {m['name']}: {m['value']:.4f}; timeline: "
          f"mixfleet report {root / 'overheat'}")
    return bool(m["value"] >= 0.95 and s["restarts"] >= 1)


MIXED = [("emu:nvidia-h20", 1.0), ("emu:kunlun-p800", 0.6), ("emu:ascend-910b", 0.35)]
MIXED_B, SAMPLE_S = 128, 0.0015


def _emu_train(config: Path, run_dir: Path, chips: list[tuple[str, float]], steps: int,
               *extra: str) -> float:
    """Train on emulated ``chips`` (exact relative speeds); B / the median step time."""
    ranks = ", ".join(f'{{device = "{d}", speed = {v}}}' for d, v in chips)
    sets = [f"ranks=[{ranks}]", f"train.steps={steps}", f"train.global_batch={MIXED_B}",
            f"emulate.sample_s={SAMPLE_S}", "checkpoint.interval=100000", "telemetry.hz=0",
            "health.straggler_action='report'", "launch.max_restarts=0", *extra]
    cmd = [sys.executable, "-P", "-m", "mixfleet", "train", str(config), "--run-dir", str(run_dir),
           "--resume", "never", "--json"]
    for x in sets:
        cmd += ["--set", x]
    if subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).returncode:
        raise SystemExit(f"demo: mixed-fleet training failed; see {run_dir}")
    times = sorted(r["step_s"] for r in read_jsonl(run_dir / "metrics.jsonl")
                   if "loss" in r and r["step"] > steps // 3)
    return MIXED_B / times[len(times) // 2]


def _mixed_fleet(config: Path, root: Path) -> bool:
    """Three emulated chips (speeds 1.0, 0.6, 0.35) train one model: throughput against
    the sum of their solo throughputs, and against equal shares."""
    print("\n=== run 4: one model on a mixed, emulated fleet: H20 + Kunlun P800 + "
          "Ascend 910B (speeds 1.0 / 0.6 / 0.35) ===", flush=True)
    # Solo throughput of a chip: measured the same way as the mixed run (one rank, the same
    # global batch, the chip's step cost with its fixed costs), not its analytic pace.
    solo = {dev: _emu_train(config, root / f"solo-{dev[4:]}", [(dev, v)], 12)
            for dev, v in MIXED}
    for dev, sps in solo.items():
        print(f"solo {dev}: {sps:.0f} samples/s (measured, emulated)")
    total = sum(solo.values())
    mixed = _emu_train(config, root / "mixfleet", MIXED, 30, 'shares.mode="measured"',
                       "shares.rebalance_every=10")
    equal = _emu_train(config, root / "equal", MIXED, 16)
    changes = [e for e in read_jsonl(root / "mixfleet" / "events.jsonl")
               if e.get("event") == Event.SHARES_CHANGED]
    print("\n=== mixed fleet result ===")
    if changes:
        print(f"shares of the {MIXED_B} samples: {changes[0]['old']} (equal) -> "
              f"{changes[-1]['new']} (measured, rebalanced every 10 steps)")
    print(f"mixed fleet (emulated): {mixed:.0f} samples/s = {mixed / total:.3f} of the sum of "
          f"the measured solo throughputs ({total:.0f} samples/s)")
    print(f"equal shares: {equal:.0f} samples/s = {equal / total:.3f} of the sum; "
          f"mixfleet's shares are {mixed / equal:.2f}x faster")
    return mixed > equal


if __name__ == "__main__":
    raise SystemExit(main())
