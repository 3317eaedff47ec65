"""Pipeline overhead: mixfleet's pipeline stages against a plain torch.distributed.pipelining
loop with the same schedule.

Both sides run on the same 2 ranks (gloo, CPU, one intra-op thread each), in the same
processes, alternating (the order flips every round, so a load change hits both): char-gpt
cut into 2 stages (embeddings + the first half of the blocks; the rest + final norm, head
and loss), 1F1B with 8 micro-batches, the same global batches
(:class:`~mixfleet.train.sampler.GlobalBatchSampler`, 32 samples), AdamW.

- mixfleet: a :class:`~mixfleet.train.trainer.Trainer` with ``[parallel] mode =
  "pipeline"`` (its ``fit()``: stages under the model's own names, the step manager and
  its health checks, the control sum over every rank, in-memory snapshots at the paced
  interval, metrics), no disk checkpoint inside the timed steps.
- plain: two hand-written stage modules, ``PipelineStage`` + ``Schedule1F1B`` with
  ``scale_grads=False`` and the same loss written out, the same optimizer and LR schedule
  (``build_optimizer``), ``opt.step()``.

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
import tempfile
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


def _config(steps: int) -> Any:
    from mixfleet.train.launch import resolve_config

    opts = ", ".join(f"{k}={v}" for k, v in GPT.items())
    half = GPT["layers"] // 2
    return resolve_config(ROOT / "examples" / "digits-cnn.toml", [
        "workload.name='char-gpt'", f"workload.options={{{opts}}}", f"train.steps={steps}",
        f"train.global_batch={B}", "train.optimizer='adamw'", f"train.lr={LR}",
        f"checkpoint.interval={steps + 1}", "telemetry.hz=0", "launch.nproc=2",
        "parallel.mode='pipeline'", f"parallel.microbatches={MICRO}",
        f"parallel.stages=[{{chip='cpu', ranks=1, blocks={half}}}, "
        f"{{chip='cpu', ranks=1, blocks={GPT['layers'] - half}}}]"])


def run_mixfleet(cfg: Any, wl: Any, tmp: Path, rank: int, group: Any
                 ) -> tuple[float, dict[str, torch.Tensor]]:
    from mixfleet.train.parallel.pipeplan import job_pipeline
    from mixfleet.train.rundir import RunDir
    from mixfleet.train.trainer import Trainer

    t = Trainer(cfg, wl, run=RunDir(tmp), device=torch.device("cpu"), rank=rank, world=2,
                ckpt_group=group, pipeline=job_pipeline(cfg, ["cpu", "cpu"], wl))
    out = t.fit()
    t.state.snapshots.discard()
    return float(out["elapsed_s"]), {k: p.detach().clone()
                                     for k, p in t.strategy.model.named_parameters()}


def run_plain(cfg: Any, wl: Any, rank: int) -> tuple[float, dict[str, torch.Tensor]]:
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B

    from mixfleet.train.optim import build_optimizer
    from mixfleet.train.sampler import GlobalBatchSampler

    t = cfg.train
    torch.manual_seed(t.seed)
    model = wl.build_model()
    mod = _Plain(model, first=rank == 0)
    sched = Schedule1F1B(PipelineStage(mod, rank, 2, torch.device("cpu")), MICRO,
                         loss_fn=_plain_loss, scale_grads=False)
    params = list(mod.parameters())
    opt, lrs = build_optimizer(params, t)  # the same optimizer and schedule as mixfleet's
    sampler = GlobalBatchSampler(len(wl.train_set), B, seed=t.seed)
    dist.barrier()
    t0 = time.perf_counter()
    for s in range(t.steps):
        x, y = wl.train_set.take(sampler.global_batch_at(s))
        losses: list[torch.Tensor] = []
        if rank == 0:
            sched.step(x)
        else:
            sched.step(target=y, losses=losses, return_outputs=False)
            float(torch.stack(losses).detach().sum())  # the loss, as a loop logs it
        opt.step()
        lrs.step()
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
    group = dist.new_group(backend="gloo")
    wl = get_workload("char-gpt", **GPT)
    cfg, warm = _config(args.steps), _config(2)
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"pipeline-overhead-{rank}-") as tmp:
        run_plain(warm, wl, rank)  # warm-up
        run_mixfleet(warm, wl, Path(tmp) / "warm", rank, group)
        for r in range(args.rounds):
            order = ("mixfleet", "plain") if r % 2 == 0 else ("plain", "mixfleet")
            res = {}
            for side in order:
                dist.barrier()
                res[side] = (run_mixfleet(cfg, wl, Path(tmp) / f"r{r}", rank, group)
                             if side == "mixfleet" else run_plain(cfg, wl, rank))
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
          f"per side, AdamW, fp32; mixfleet = Trainer.fit() with mode = 'pipeline'")
    ratios = print_rounds(rows, "mixfleet pipeline trainer", "plain pipelining")
    print(f"pipeline overhead: mixfleet/plain pipelining step time = "
          f"{statistics.median(ratios):.3f} (target <= 1.05)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
