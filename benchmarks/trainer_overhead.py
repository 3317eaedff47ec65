"""Trainer overhead: mixfleet's training loop against a plain PyTorch loop, same work.

Both sides train ``digits-cnn`` (examples/digits-cnn.toml) on the CPU, single rank, in this
process, from the same initial weights, on the same global batches (the indices of
:class:`~mixfleet.train.sampler.GlobalBatchSampler`), with the same optimizer (SGD with
momentum) and LR schedule (:func:`~mixfleet.train.trainer.lr_factor` through LambdaLR), for
the same number of steps and with the same intra-op thread count.

- mixfleet: a fresh :class:`~mixfleet.train.trainer.Trainer` per round (a temporary run
  directory, a single-rank gloo group), ``fit()``, timed by the ``elapsed_s`` it returns
  (the step loop only: the final checkpoint and evaluation come after it). The checkpoint
  interval is larger than the steps, so no checkpoint lands in the loop; ``metrics.jsonl``
  is written every step, as in a real run.
- plain: ``loss.backward(); opt.step(); sched.step(); opt.zero_grad()`` on the same batches,
  reading the loss with ``.item()`` as any loop that logs it does.

The two alternate (the order flips every round) so drifting load on a shared machine hits
both alike. The final weights of both sides are compared as a check that they did the same
computation. Last line: median mixfleet wall time / median plain wall time (target <= 1.03).

    .venv/bin/python benchmarks/trainer_overhead.py [--rounds 5] [--steps 500] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from mixfleet.train.launch import resolve_config
from mixfleet.train.rundir import RunDir
from mixfleet.train.sampler import GlobalBatchSampler
from mixfleet.train.trainer import Trainer, lr_factor
from mixfleet.workloads import Workload, get_workload

ROOT = Path(__file__).resolve().parents[1]


def run_mixfleet(cfg, wl: Workload, ckpt_group, tmp: Path) -> tuple[float, dict]:  # type: ignore[no-untyped-def]
    trainer = Trainer(cfg, wl, run=RunDir(tmp), device=torch.device("cpu"),
                      ckpt_group=ckpt_group)
    out = trainer.fit()
    trainer.run.events.close()
    if trainer.metrics is not None:
        trainer.metrics.close()
    return float(out["elapsed_s"]), trainer.final_state_dict()


def run_plain(cfg, wl: Workload) -> tuple[float, dict]:  # type: ignore[no-untyped-def]
    t = cfg.train
    sampler = GlobalBatchSampler(len(wl.train_set), t.global_batch, t.seed)
    torch.manual_seed(t.seed)
    model = wl.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                          weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, t.steps, t.warmup_steps, t.schedule))
    x_all, y_all = wl.train_set.tensors  # type: ignore[misc]
    B = t.global_batch
    t0 = time.perf_counter()
    for step in range(t.steps):
        idx = sampler.global_batch_at(step)
        x, y = x_all[idx], y_all[idx]
        loss = wl.loss(model, (x, y)) / B
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    elapsed = time.perf_counter() - t0
    return elapsed, {k: v.detach().clone() for k, v in model.state_dict().items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    ap.add_argument("--steps", type=int, default=500, help="steps per side per round")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads, both sides")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)  # what a run does with train.deterministic
    cfg = resolve_config(ROOT / "examples" / "digits-cnn.toml", [
        f"train.steps={args.steps}", f"checkpoint.interval={args.steps + 1}",
        "launch.nproc=1", "launch.max_restarts=0", "launch.device=cpu"])
    wl = get_workload(cfg.workload.name, **cfg.workload.options)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    ckpt_group = dist.new_group(backend="gloo")
    print(f"digits-cnn, {args.steps} steps x {args.rounds} rounds per side, "
          f"global batch {cfg.train.global_batch}, {args.threads} thread(s)", flush=True)

    mix, plain, same = [], [], True
    with tempfile.TemporaryDirectory(prefix="mixfleet-overhead-") as tmp:
        run_plain(cfg, wl)  # warm-up (allocator, kernels, imports)
        run_mixfleet(cfg, wl, ckpt_group, Path(tmp) / "warmup")
        for r in range(args.rounds):
            order = ("mixfleet", "plain") if r % 2 == 0 else ("plain", "mixfleet")
            res = {}
            for side in order:
                if side == "mixfleet":
                    res[side] = run_mixfleet(cfg, wl, ckpt_group, Path(tmp) / f"r{r}")
                else:
                    res[side] = run_plain(cfg, wl)
            (tm, wm), (tp, wp) = res["mixfleet"], res["plain"]
            mix.append(tm)
            plain.append(tp)
            eq = wm.keys() == wp.keys() and all(torch.equal(wm[k], wp[k]) for k in wm)
            same = same and eq
            print(f"round {r + 1}: mixfleet {tm:.3f} s ({args.steps / tm:.0f} steps/s), "
                  f"plain {tp:.3f} s ({args.steps / tp:.0f} steps/s), ratio {tm / tp:.3f}, "
                  f"final weights equal: {eq}", flush=True)
    dist.destroy_process_group()

    per_round = statistics.median(m / p for m, p in zip(mix, plain, strict=True))
    mm, mp = statistics.median(mix), statistics.median(plain)
    print(f"median wall: mixfleet {mm:.3f} s, plain {mp:.3f} s; median of per-round ratios "
          f"{per_round:.3f}; final weights bit-identical in every round: {same}")
    if not same:
        print("warning: the two loops did not compute the same weights", file=sys.stderr)
    print(f"trainer overhead: mixfleet/plain wall time = {mm / mp:.3f} (target <= 1.03)")


if __name__ == "__main__":
    main()
