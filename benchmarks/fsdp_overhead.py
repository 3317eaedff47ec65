"""FSDP overhead: mixfleet's ``[parallel] mode = "fsdp"`` loop against a plain FSDP2 loop.

Both sides run on the same 2 ranks (gloo, CPU, one intra-op thread each), in the same
processes, alternating (the order flips every round, so a load change hits both): the same
model (char-gpt, per-block ``fully_shard`` + root, fp32 on the CPU), the same global
batches (:class:`~mixfleet.train.sampler.GlobalBatchSampler`, 32 samples per rank), the
same optimizer (AdamW) and LR schedule.

- mixfleet: a fresh :class:`~mixfleet.train.trainer.Trainer` per round with mixfleet's
  **default** settings — an in-memory snapshot every step, health checks, the control
  all-reduce, metrics written every step — timed by ``fit()``'s ``elapsed_s`` (the step
  loop; no disk checkpoint lands in it).
- plain: ``fully_shard`` per block and at the root, ``set_gradient_divide_factor(1)``,
  ``loss.backward(); opt.step(); sched.step(); opt.zero_grad()`` and ``loss.item()``.

Final weights of both sides are compared (same computation). Printed per round: both
times and their ratio; then the spread of the per-round ratios (min, quartiles, max);
last line: the median of the per-round ratios mixfleet/plain (target <= 1.03).

    .venv/bin/python benchmarks/fsdp_overhead.py [--rounds 5] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_common import print_rounds, two_rank_rounds  # noqa: E402

GPT = {"layers": 4, "d_model": 128, "heads": 4, "block": 64, "corpus_chars": 400_000}


def _config(steps: int) -> Any:
    from mixfleet.train.launch import resolve_config

    opts = ", ".join(f"{k}={v}" for k, v in GPT.items())
    return resolve_config(ROOT / "examples" / "digits-cnn.toml", [
        "workload.name='char-gpt'", f"workload.options={{{opts}}}", f"train.steps={steps}",
        "train.optimizer='adamw'", "train.lr=0.001", f"checkpoint.interval={steps + 1}",
        "parallel.mode='fsdp'", "telemetry.hz=0"])


def run_mixfleet(cfg: Any, wl: Any, tmp: Path, rank: int, world: int,
                 group: Any) -> tuple[float, dict[str, torch.Tensor]]:
    from mixfleet.train.rundir import RunDir
    from mixfleet.train.trainer import Trainer

    t = Trainer(cfg, wl, run=RunDir(tmp), device=torch.device("cpu"), rank=rank, world=world,
                ckpt_group=group)
    out = t.fit()
    w = t.final_state_dict()
    t.state.snapshots.discard()
    return float(out["elapsed_s"]), w


def run_plain(cfg: Any, wl: Any, rank: int, world: int) -> tuple[float, dict[str, torch.Tensor]]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule, fully_shard

    from mixfleet.train.optim import build_optimizer
    from mixfleet.train.parallel.strategy import shard_units
    from mixfleet.train.sampler import GlobalBatchSampler, equal_shares

    t = cfg.train
    torch.manual_seed(t.seed)
    model = wl.build_model()
    for block in shard_units(model):
        fully_shard(block)
    fully_shard(model)
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)
    opt, sched = build_optimizer(model.parameters(), t, foreach=True)  # as mixfleet's fsdp
    sampler = GlobalBatchSampler(len(wl.train_set), t.global_batch, t.seed)
    shares = equal_shares(t.global_batch, world)
    dist.barrier()
    t0 = time.perf_counter()
    for step in range(t.steps):
        batch = wl.train_set.take(sampler.rank_batch(step, shares, rank))
        loss = wl.loss(model, batch) / t.global_batch
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    elapsed = time.perf_counter() - t0
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                              cpu_offload=True))
    return elapsed, {k: v.detach().cpu() for k, v in sd.items()}


def rank_main(args: argparse.Namespace) -> None:
    from mixfleet.workloads import get_workload

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    group = dist.new_group(backend="gloo")
    cfg = _config(args.steps)
    wl = get_workload("char-gpt", **GPT)
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"fsdp-overhead-{rank}-") as tmp:
        run_plain(cfg, wl, rank, world)  # warm-up
        run_mixfleet(cfg, wl, Path(tmp) / "warm", rank, world, group)
        for r in range(args.rounds):
            order = ("mixfleet", "plain") if r % 2 == 0 else ("plain", "mixfleet")
            res = {}
            for side in order:
                dist.barrier()
                res[side] = (run_mixfleet(cfg, wl, Path(tmp) / f"r{r}", rank, world, group)
                             if side == "mixfleet" else run_plain(cfg, wl, rank, world))
            (tm, wm), (tp, wp) = res["mixfleet"], res["plain"]
            same = wm.keys() == wp.keys() and all(torch.equal(wm[k], wp[k]) for k in wm)
            rows.append({"mixfleet": tm, "plain": tp, "same": same})
    if rank == 0:
        print(json.dumps(rows), flush=True)
    dist.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    if "RANK" in os.environ:
        rank_main(args)
        return 0
    rows = two_rank_rounds(__file__, ["--rounds", str(args.rounds), "--steps", str(args.steps)])
    print(f"char-gpt {GPT}, 2 ranks (gloo, CPU, 1 thread each), {args.steps} steps x "
          f"{args.rounds} rounds per side, AdamW, fp32")
    ratios = print_rounds(rows, "mixfleet fsdp", "plain FSDP2")
    print(f"fsdp overhead: mixfleet/plain FSDP2 step time = {statistics.median(ratios):.3f} "
          f"(target <= 1.03)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
