"""Pipeline overhead: mixfleet's pipeline stages against a plain torch.distributed.pipelining
loop with the same schedule.

Both sides run on the same 2 ranks (gloo, CPU, one intra-op thread each), in the same
processes, alternating (the order flips every round, so a load change hits both): char-gpt
cut into 2 stages (embeddings + the first half of the blocks; the rest + final norm, head
and loss), 1F1B with 8 micro-batches, the same global batches
(:class:`~mixfleet.train.sampler.GlobalBatchSampler`, 32 samples), AdamW.

- mixfleet: :class:`~mixfleet.train.parallel.pipeline.PipelineRank` (stages under the
  model's own names, the workload's loss / B, lanes, gradient sums) and ``opt.step()``.
  The trainer does not run pipelines yet (docs/pipeline.md); once it does, this side
  should become a ``Trainer`` with ``[parallel] mode = "pipeline"``.
- plain: two hand-written stage modules, ``PipelineStage`` + ``Schedule1F1B`` with
  ``scale_grads=False`` and the same loss written out, ``opt.step()``.

Final weights of both sides are compared (same computation). Printed per round: both
times and their ratio; last line: the median of the per-round ratios mixfleet/plain
(target <= 1.05).

    .venv/bin/python benchmarks/pipeline_overhead.py [--rounds 5] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_common import print_rounds, two_rank_rounds  # noqa: E402

from mixfleet.train.exchange import all_gather_json  # noqa: E402

GPT = {"layers": 4, "d_model": 128, "heads": 4, "block": 64, "corpus_chars": 400_000}
B, MICRO, LR = 32, 8, 1e-3


class _Plain(nn.Module):
    """A hand-cut stage of CharGPT (the plain side)."""

    def __init__(self, model: Any, first: bool) -> None:
        super().__init__()
        half = len(model.blocks) // 2
        self.first = first
        self.tok, self.pos = (model.tok, model.pos) if first else (None, None)
        self.blocks = nn.Sequential(*(list(model.blocks)[:half] if first
                                      else list(model.blocks)[half:]))
        self.ln, self.head = (None, None) if first else (model.ln, model.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            assert self.tok is not None and self.pos is not None
            x = self.tok(x) + self.pos(torch.arange(x.shape[1]))
        x = self.blocks(x)
        if self.first:
            return x
        assert self.ln is not None and self.head is not None
        return self.head(self.ln(x))  # type: ignore[no-any-return]


def _plain_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum") / y.shape[1] / B


def run(side: str, wl: Any, rank: int, steps: int) -> tuple[float, dict[str, torch.Tensor]]:
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B

    from mixfleet.train.parallel.pipeline import Layout, PipelineRank
    from mixfleet.train.sampler import GlobalBatchSampler

    torch.manual_seed(0)
    model = wl.build_model()
    half = len(model.blocks) // 2
    if side == "mixfleet":
        pr = PipelineRank(model, Layout((1, 1), (half, len(model.blocks) - half)), rank=rank,
                          loss=wl.loss, global_batch=B, microbatches=MICRO)
        params = pr.parameters()

        def step(batch: tuple[torch.Tensor, ...]) -> None:
            pr.forward_backward(batch)
    else:
        mod = _Plain(model, first=rank == 0)
        sched = Schedule1F1B(PipelineStage(mod, rank, 2, torch.device("cpu")), MICRO,
                             loss_fn=_plain_loss, scale_grads=False)
        params = list(mod.parameters())

        def step(batch: tuple[torch.Tensor, ...]) -> None:
            x, y = batch
            if rank == 0:
                sched.step(x)
            else:
                sched.step(target=y, losses=[], return_outputs=False)
    opt = torch.optim.AdamW(params, lr=LR)
    sampler = GlobalBatchSampler(len(wl.train_set), B, seed=0)
    dist.barrier()
    t0 = time.perf_counter()
    for s in range(steps):
        step(wl.train_set.take(sampler.global_batch_at(s)))
        opt.step()
        opt.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - t0
    named = dict(model.named_parameters())
    ours = {id(p) for p in params}
    return elapsed, {k: p.detach().clone() for k, p in named.items() if id(p) in ours}


def rank_main(args: argparse.Namespace) -> None:
    from mixfleet.workloads import get_workload

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    wl = get_workload("char-gpt", **GPT)
    run("plain", wl, rank, 2)  # warm-up
    run("mixfleet", wl, rank, 2)
    rows = []
    for r in range(args.rounds):
        order = ("mixfleet", "plain") if r % 2 == 0 else ("plain", "mixfleet")
        res = {side: run(side, wl, rank, args.steps) for side in order}
        (tm, wm), (tp, wp) = res["mixfleet"], res["plain"]
        same = wm.keys() == wp.keys() and all(torch.equal(wm[k], wp[k]) for k in wm)
        rows.append({"mixfleet": tm, "plain": tp, "same": same})
    got = all_gather_json(rows)  # JSON in tensors: nothing unpickled
    if rank == 0:  # a round counts as equal only if both stages' weights are
        for i, row in enumerate(rows):
            row["same"] = all(g[i]["same"] for g in got)
            row["mixfleet"] = max(g[i]["mixfleet"] for g in got)
            row["plain"] = max(g[i]["plain"] for g in got)
        print(json.dumps(rows), flush=True)
    dist.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    if "RANK" in os.environ:
        rank_main(args)
        return 0
    rows = two_rank_rounds(__file__, ["--rounds", str(args.rounds), "--steps", str(args.steps)])
    print(f"char-gpt {GPT}, 2 pipeline stages x 1 rank (gloo, CPU, 1 thread each), 1F1B, "
          f"{MICRO} micro-batches of {B // MICRO}, {args.steps} steps x {args.rounds} rounds "
          f"per side, AdamW, fp32")
    ratios = print_rounds(rows, "mixfleet pipeline", "plain pipelining")
    print(f"pipeline overhead: mixfleet/plain pipelining step time = "
          f"{statistics.median(ratios):.3f} (target <= 1.05)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
