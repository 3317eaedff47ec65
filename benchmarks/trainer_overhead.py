"""Trainer overhead: mixfleet's training loop against a plain PyTorch loop, same work.

Both sides train ``digits-cnn`` (examples/digits-cnn.toml) on the CPU, single rank, in this
process, from the same initial weights, on the same global batches (the indices of
:class:`~mixfleet.train.sampler.GlobalBatchSampler`), with the same optimizer (SGD with
momentum) and LR schedule (:func:`~mixfleet.train.trainer.lr_factor` through LambdaLR), for
the same number of steps and with the same intra-op thread count.

- mixfleet: a fresh :class:`~mixfleet.train.trainer.Trainer` per round with mixfleet's
  default settings (in-memory snapshots, from every step to the interval that keeps one
  under ``checkpoint.snapshot_max_cost`` = 0.5% of the steps it covers; health checks; a
  metrics record every step, written in batches; the step marker) in a temporary run
  directory with a single-rank gloo group, ``fit()``, timed by the ``elapsed_s`` it returns
  (the step loop only: the final checkpoint and evaluation come after it). The checkpoint
  interval is larger than the steps, so no checkpoint lands in the loop; ``metrics.jsonl``
  is written as in a real run.
- plain: ``loss.backward()``, the optimizer step, ``sched.step()`` and zeroing the
  gradients on the same batches, reading the loss with ``.item()`` as any loop that logs it
  does.

mixfleet's ``dp`` steps SGD over its flat weight, gradient and momentum buffers
(:class:`~mixfleet.train.parallel.flatopt.FlatSGD`); the plain loop gets the same step (its
parameters and gradients moved into flat buffers, as a user who wants that speed without
mixfleet can do), so the ratio is what mixfleet's guarantees cost, not an optimizer
difference. The flat step's own speed-up over ``torch.optim.SGD`` is printed on a separate
line. ``--no-flat-sgd`` makes both sides step with ``opt.step()``; ``--optimizer adamw``
trains both with AdamW (FlatSGD does not apply).

The two sides take turns every ``--chunk`` steps (default 25) within a round: the plain
loop runs its next 25 steps from the trainer's ``on_step`` after every 25th step, and that
time (with the two clock reads around it) is taken out of the trainer's. On a shared VM
the step time drifts by up to 10% over seconds; whole rounds of one side then the other
gave per-round ratios of 0.88-1.13, turns of 25 steps give a spread of a few percent.
Each turn starts with cold caches for both sides alike, and the side that goes first flips
every round. ``--chunk 0`` runs each side's whole round at once. Garbage is collected
before each round; the final weights of both sides are compared as a check that they did
the same computation. Printed: each round (wall and this thread's CPU time of each side),
the spread of the per-round ratios, the median wall time of each side and the median
CPU-time ratio. Last line: the median of the per-round wall-time ratios mixfleet/plain
(target <= 1.03).

    .venv/bin/python benchmarks/trainer_overhead.py [--rounds 11] [--steps 500] [--chunk 25] \\
        [--threads 1] [--no-flat-sgd] [--optimizer adamw] [--set ...]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mixfleet.train.config import RunConfig
from mixfleet.train.launch import resolve_config
from mixfleet.train.optim import build_optimizer
from mixfleet.train.parallel.flatopt import FlatSGD
from mixfleet.train.rundir import RunDir
from mixfleet.train.sampler import GlobalBatchSampler
from mixfleet.train.trainer import Trainer
from mixfleet.workloads import Workload, get_workload

ROOT = Path(__file__).resolve().parents[1]


def flatten(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Put the parameters and their gradients into one flat buffer each (views), as a user
    who wants FlatSGD's speed without mixfleet would: (weights, grads)."""
    params = [p for p in model.parameters() if p.requires_grad]
    n = sum(p.numel() for p in params)
    weights, grads = torch.zeros(n), torch.zeros(n)
    off = 0
    with torch.no_grad():
        for p in params:
            w = weights[off: off + p.numel()].view_as(p)
            w.copy_(p)
            p.data = w
            p.grad = grads[off: off + p.numel()].view_as(p)
            off += p.numel()
    return weights, grads


class PlainLoop:
    """The plain side: ``loss.backward(); opt.step(); sched.step(); opt.zero_grad()`` on
    the global batches in order, run ``n`` steps at a time, adding up its own wall and
    thread CPU time. ``flat``: the same flat-buffer SGD step mixfleet's dp takes
    (:class:`FlatSGD` over flat weights and gradients; gradients zeroed in place)."""

    def __init__(self, cfg: RunConfig, wl: Workload, *, flat: bool = True) -> None:
        t = self.t = cfg.train
        self.wl = wl
        self.sampler = GlobalBatchSampler(len(wl.train_set), t.global_batch, t.seed)
        torch.manual_seed(t.seed)
        self.model = wl.build_model()
        self.opt, self.sched = build_optimizer(self.model.parameters(), t)
        self.flat: FlatSGD | None = None
        self.grads: torch.Tensor | None = None
        if flat and t.optimizer == "sgd":
            weights, self.grads = flatten(self.model)
            self.flat = FlatSGD(list(self.model.parameters()), weights, self.grads)
        assert wl.train_set.tensors is not None
        self.x_all, self.y_all = wl.train_set.tensors
        self.step, self.wall, self.cpu = 0, 0.0, 0.0

    def run(self, n: int) -> None:
        model, opt, sched, loss_fn = self.model, self.opt, self.sched, self.wl.loss
        flat, grads = self.flat, self.grads
        x_all, y_all, B = self.x_all, self.y_all, self.t.global_batch
        t0, cpu0 = time.perf_counter(), time.thread_time()
        for step in range(self.step, min(self.step + n, self.t.steps)):
            idx = self.sampler.global_batch_at(step)
            x, y = x_all[idx], y_all[idx]
            loss = loss_fn(model, (x, y)) / B
            loss.backward()
            if flat is not None:
                flat.step(opt)
                sched.step()
                grads.zero_()  # type: ignore[union-attr]
            else:
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            loss.item()
            self.step = step + 1
        self.wall += time.perf_counter() - t0
        self.cpu += time.thread_time() - cpu0

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


Side = tuple[float, float, dict[str, torch.Tensor]]  # wall s, thread CPU s, final weights


def run_round(cfg: RunConfig, wl: Workload, ckpt_group: Any, tmp: Path, chunk: int,
              plain_first: bool, flat_sgd: bool = True) -> tuple[Side, Side]:
    """One round: (wall s, thread CPU s, final weights) of mixfleet's ``Trainer.fit()``
    loop and of the plain loop over the same steps. ``chunk`` > 0: the plain loop runs
    ``chunk`` steps after every ``chunk`` steps of mixfleet's loop (from its ``on_step``;
    its time is taken out of mixfleet's); 0: each side runs all its steps at once.
    ``flat_sgd`` False: both sides step with ``opt.step()``."""
    plain = PlainLoop(cfg, wl, flat=flat_sgd)
    mine = [0.0, 0.0]  # the plain side's time run from inside mixfleet's loop
    last = cfg.train.steps
    cpu_last = [0.0]

    def on_step(rec: dict[str, Any]) -> None:  # the last call ends mixfleet's last step
        step = rec["step"]
        if chunk and step % chunk == 0:
            now, cpu = time.perf_counter(), time.thread_time()
            cpu_last[0] = cpu - mine[1]
            plain.run(chunk)
            mine[0] += time.perf_counter() - now  # the plain steps and the clock reads
            mine[1] += time.thread_time() - cpu
        elif step == last:
            cpu_last[0] = time.thread_time() - mine[1]

    if plain_first:  # the plain side's first turn (or its whole round) comes first
        gc.collect()
        plain.run(chunk or cfg.train.steps)
    gc.collect()  # neither side pays for the other's garbage
    trainer = Trainer(cfg, wl, run=RunDir(tmp), device=torch.device("cpu"),
                      ckpt_group=ckpt_group, on_step=on_step)
    if not flat_sgd:
        trainer.strategy.flat_sgd = None  # type: ignore[attr-defined]
    cpu0 = time.thread_time()
    out = trainer.fit()
    trainer.run.events.close()
    if trainer.metrics is not None:
        trainer.metrics.close()
    if plain.step < cfg.train.steps:  # the whole loop (chunk 0), or the steps left
        gc.collect()
        plain.run(cfg.train.steps - plain.step)
    mix = (float(out["elapsed_s"]) - mine[0], cpu_last[0] - cpu0, trainer.final_state_dict())
    return mix, (plain.wall, plain.cpu, plain.weights())


def flat_speedup(cfg: RunConfig, wl: Workload, reps: int = 7, n: int = 300) -> str:
    """The flat SGD step's own speed-up: torch.optim.SGD's step / FlatSGD's step on the same
    model and gradients, ``reps`` alternating runs of ``n`` steps each (medians)."""
    torch.manual_seed(0)
    m_t, m_f = wl.build_model(), wl.build_model()
    opt_t, _ = build_optimizer(m_t.parameters(), cfg.train)
    opt_f, _ = build_optimizer(m_f.parameters(), cfg.train)
    weights, grads = flatten(m_f)
    flat = FlatSGD(list(m_f.parameters()), weights, grads)
    for p in m_t.parameters():
        p.grad = torch.full_like(p, 1e-3)
    grads.fill_(1e-3)
    times: dict[str, list[float]] = {"torch": [], "flat": []}
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            opt_t.step()
        times["torch"].append((time.perf_counter() - t0) / n)
        t0 = time.perf_counter()
        for _ in range(n):
            flat.step(opt_f)
        times["flat"].append((time.perf_counter() - t0) / n)
    tt, tf = statistics.median(times["torch"]), statistics.median(times["flat"])
    return (f"flat SGD step alone: torch.optim.SGD {tt * 1e6:.1f} us, FlatSGD {tf * 1e6:.1f} us "
            f"a step (speed-up {tt / tf:.2f}x; not part of the overhead ratio: both sides "
            f"use it)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=11, help="rounds (default 11)")
    ap.add_argument("--steps", type=int, default=500, help="steps per side per round")
    ap.add_argument("--chunk", type=int, default=25,
                    help="steps each side runs before the other takes over (default 25; "
                         "0: each side runs a whole round at once)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads, both sides")
    ap.add_argument("--no-flat-sgd", action="store_true",
                    help="both sides step with opt.step() instead of the flat SGD step")
    ap.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd",
                    help="the optimizer of both sides (default sgd, as examples/digits-cnn.toml)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a field of examples/digits-cnn.toml for the mixfleet "
                         "side (repeatable), e.g. checkpoint.snapshot_interval=0")
    args = ap.parse_args()
    for name, value, least in (("--rounds", args.rounds, 1), ("--steps", args.steps, 1),
                               ("--chunk", args.chunk, 0), ("--threads", args.threads, 1)):
        if value < least:
            ap.error(f"{name} {value}: must be >= {least}")

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)  # what a run does with train.deterministic
    cfg = resolve_config(ROOT / "examples" / "digits-cnn.toml", [
        f"train.steps={args.steps}", f"checkpoint.interval={args.steps + 1}",
        "launch.nproc=1", "launch.max_restarts=0", "launch.device=cpu",
        f"train.optimizer={args.optimizer!r}", *args.set])
    wl = get_workload(cfg.workload.name, **cfg.workload.options)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    ckpt_group = dist.new_group(backend="gloo")
    print(f"digits-cnn, {args.steps} steps x {args.rounds} rounds per side, "
          f"global batch {cfg.train.global_batch}, {args.threads} thread(s), "
          + (f"alternating every {args.chunk} steps" if args.chunk else
             "each side a whole round at once")
          + f", {args.optimizer}" + (", --no-flat-sgd" if args.no_flat_sgd else "")
          + (f", --set {' '.join(args.set)}" if args.set else ""), flush=True)

    mix, plain, cpu_ratios, same = [], [], [], True
    with tempfile.TemporaryDirectory(prefix="mixfleet-overhead-") as tmp:
        flat = not args.no_flat_sgd
        run_round(cfg, wl, ckpt_group, Path(tmp) / "warmup", args.chunk, False, flat)  # warm-up
        for r in range(args.rounds):
            (tm, cm, wm), (tp, cp, wp) = run_round(cfg, wl, ckpt_group, Path(tmp) / f"r{r}",
                                                   args.chunk, plain_first=r % 2 == 1,
                                                   flat_sgd=flat)
            mix.append(tm)
            plain.append(tp)
            cpu_ratios.append(cm / cp)
            eq = wm.keys() == wp.keys() and all(torch.equal(wm[k], wp[k]) for k in wm)
            same = same and eq
            print(f"round {r + 1}: mixfleet {tm:.3f} s ({args.steps / tm:.0f} steps/s), "
                  f"plain {tp:.3f} s ({args.steps / tp:.0f} steps/s), ratio {tm / tp:.3f} "
                  f"(CPU time ratio {cm / cp:.3f}), final weights equal: {eq}", flush=True)
    dist.destroy_process_group()

    ratios = [m / p for m, p in zip(mix, plain, strict=True)]
    per_round = statistics.median(ratios)
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    print(f"spread of the per-round ratios: min {min(ratios):.3f}, quartiles {q[0]:.3f} / "
          f"{q[1]:.3f} / {q[2]:.3f}, max {max(ratios):.3f}")
    mm, mp = statistics.median(mix), statistics.median(plain)
    print(f"median wall: mixfleet {mm:.3f} s, plain {mp:.3f} s (ratio of medians "
          f"{mm / mp:.3f}); per-round wall ratios {min(ratios):.3f}..{max(ratios):.3f}; "
          f"median CPU time ratio {statistics.median(cpu_ratios):.3f} (less sensitive to "
          f"other load); final weights bit-identical in every round: {same}")
    if not same:
        print("warning: the two loops did not compute the same weights", file=sys.stderr)
    if args.optimizer == "sgd":
        print(flat_speedup(cfg, wl))
    print(f"trainer overhead: mixfleet/plain wall time = {per_round:.3f} (target <= 1.03; "
          f"median of {len(ratios)} alternating pairs, spread {min(ratios):.3f}.."
          f"{max(ratios):.3f}; both sides step {args.optimizer}"
          f"{' over flat buffers' if flat and args.optimizer == 'sgd' else ''})")


if __name__ == "__main__":
    main()
