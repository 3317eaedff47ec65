"""One rank of an in-test FSDP job (started by tests/train/test_fsdp.py with RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT set): trains char-gpt with ``[parallel] mode =
"fsdp"`` on a schedule of shares, then writes the final weights (rank 0) and this rank's
parameter + optimizer-state bytes.

    python -m tests.train.fsdp_worker OUT_DIR MODE SCHEDULE_JSON
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from mixfleet.train.launch import resolve_config
from mixfleet.train.mixed.collectives import FleetCollectives
from mixfleet.train.mixed.fleetstep import MixedFleetStep
from mixfleet.train.mixed.rebalance import MixedFleet, Rebalancer
from mixfleet.train.rundir import RunDir
from mixfleet.train.trainer import Trainer
from mixfleet.workloads import get_workload
from tests.train.helpers import DIGITS

GPT = {"layers": 2, "d_model": 64, "heads": 2, "block": 32, "corpus_chars": 200_000}


def config(mode: str, steps: int) -> object:
    return resolve_config(DIGITS, [
        "workload.name='char-gpt'", f"workload.options={json.dumps(GPT).replace(':', '=')}",
        f"train.steps={steps}",
        "train.schedule='constant'", "checkpoint.interval=100000",
        "checkpoint.snapshot_interval=0", f"parallel.mode='{mode}'"])


def local_bytes(t: Trainer) -> int:
    """Bytes of this rank's parameters and optimizer state (its shards under fsdp)."""
    def size(x: torch.Tensor) -> int:
        x = x.to_local() if isinstance(x, DTensor) else x
        return x.numel() * x.element_size()
    n = sum(size(p) for p in t.model.parameters())
    for st in t.opt.state.values():
        n += sum(size(v) for v in st.values() if isinstance(v, torch.Tensor) and v.dim())
    return n


def main() -> None:
    out, mode, schedule = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = config(mode, len(schedule))
    run = RunDir(out / f"rank{rank}")
    coll = FleetCollectives.create(["cpu"] * world, rank)
    micros = [5] + [0] * (world - 1)  # rank 0 in micro-batches of 5: more of them
    fleet = MixedFleet(MixedFleetStep(coll, world=world, micro=micros[rank], micros=micros),
                       Rebalancer(coll, rank=rank, world=world, global_batch=64,
                                  caps=[None] * world, every=0, hysteresis=0.05))
    t = Trainer(cfg, get_workload("char-gpt", **GPT), run=run, device=torch.device("cpu"),
                rank=rank, world=world, shares=schedule[0], fleet=fleet)
    for shares in schedule:
        t.set_shares(shares, "test schedule")
        out_ = t.train_step()
        assert out_.committed, out_.reason
    weights = t.final_state_dict()
    (out / f"bytes{rank}.json").write_text(json.dumps(local_bytes(t)))
    if rank == 0:
        torch.save(weights, out / "model.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
