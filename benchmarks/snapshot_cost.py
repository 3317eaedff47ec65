"""Snapshot cost: step time with an in-memory snapshot after every step against none.

One :class:`~mixfleet.train.trainer.Trainer` (digits-cnn, single rank, CPU, one thread)
runs rounds of steps, alternating: plain ``train_step()`` rounds and rounds where each
step is followed by ``state.snapshot()`` — the copy of model, optimizer state, RNG and LR into
host shared memory that a restarted rank resumes from. The ratio of the median per-step
times of the two kinds of rounds is printed last (target <= 1.05).

    .venv/bin/python benchmarks/snapshot_cost.py [--rounds 9] [--steps 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from mixfleet.train.launch import resolve_config
from mixfleet.train.rundir import RunDir
from mixfleet.train.trainer import Trainer
from mixfleet.workloads import get_workload

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    total = 2 * args.rounds * args.steps + 10
    cfg = resolve_config(REPO / "examples" / "digits-cnn.toml",
                         [f"train.steps={total}", "checkpoint.interval=1000000",
                          "checkpoint.snapshot_interval=0", "launch.nproc=1"])
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, get_workload("digits-cnn"), run=RunDir(tmp),
                     device=torch.device("cpu"), ckpt_group=dist.new_group(backend="gloo"))
        for _ in range(10):  # warm up (optimizer state exists from here on)
            tr.train_step()
        per_step: dict[bool, list[float]] = {False: [], True: []}
        costs: list[float] = []  # what each snapshot held the step loop up
        for r in range(2 * args.rounds):
            snap = bool(r % 2)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                tr.train_step()
                if snap:
                    costs.append(tr.state.snapshot(tr.step))
            per_step[snap].append((time.perf_counter() - t0) / args.steps)
        cost = statistics.median(costs)
        nbytes = sum(t.numel() * t.element_size()
                     for _, t in tr.strategy.snapshot_tensors(tr.opt))
        tr.state.snapshots.discard()
        tr.state.close()
    plain, with_snap = statistics.median(per_step[False]), statistics.median(per_step[True])
    print(f"step time: {plain * 1e3:.3f} ms without snapshots, {with_snap * 1e3:.3f} ms with "
          f"one every step; a snapshot alone takes {cost * 1e6:.0f} us "
          f"({nbytes / 1e3:.0f} kB)")
    print(f"snapshot cost: step time with a snapshot every step / without = "
          f"{with_snap / plain:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
