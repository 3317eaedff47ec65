"""Checkpoint stall: how long the step loop is blocked per checkpoint, async against sync.

The state is ~100 MB of float32 tensors shaped like a model and its optimizer (a
``{"model": ..., "optim": {"state": ...}}`` dict of 4 MB tensors), held in this process.

- async: mixfleet's :class:`~mixfleet.train.checkpoint.dcp.Checkpointer` with
  ``asynchronous=True`` (single rank, its own gloo group). The blocked time is the duration
  of ``save(...)``: staging the tensors into its reusable host buffers and handing the write
  (DCP, fsynced files, commit marker, LATEST) to its background thread. The time until the
  checkpoint is committed (``wait()`` returns, which includes hashing every file with
  sha256 for the manifest) is reported separately; the benchmark waits
  for it outside the timed region before the next save, so only the stall is timed.
- sync: ``torch.save`` of the same dict to a file in the same directory, timed to its return
  (page cache, no fsync: the cheapest synchronous baseline); ``torch.save`` + fsync is
  reported separately.

One untimed warm-up save per side (the Checkpointer allocates its buffers on the first one,
as at a run's first checkpoint), then ``--repeats`` timed saves per side, alternating; the
medians are compared. Last line: median async blocked time / median sync ``torch.save`` time
(target <= 0.2).

    .venv/bin/python benchmarks/checkpoint_stall.py [--repeats 7] [--mb 100] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mixfleet.runs import Event
from mixfleet.train.checkpoint.dcp import Checkpointer, committed_steps, verify

TENSOR_MB = 4


def make_state(total_mb: int) -> dict[str, Any]:
    """~``total_mb`` MB of float32: half "model" parameters, half "optimizer" momenta."""
    n = max(2, total_mb // TENSOR_MB)
    numel = TENSOR_MB * 2**20 // 4
    g = torch.Generator().manual_seed(0)
    model = {f"layers.{i}.weight": torch.randn(numel, generator=g) for i in range(n // 2)}
    optim = {f"layers.{i}.weight": {"momentum_buffer": torch.randn(numel, generator=g)}
             for i in range(n - n // 2)}
    return {"model": model, "optim": {"state": optim, "param_groups": [{"lr": 0.05}]}}


def tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in tensors(v)]
    if isinstance(obj, list):
        return [t for v in obj for t in tensors(v)]
    return []


def sync_save(state: dict[str, Any], path: Path, fsync: bool) -> float:
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        torch.save(state, f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed saves per side (default 7)")
    ap.add_argument("--mb", type=int, default=100, help="state size in MB (default 100)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1, as each of 2 ranks on 2 cores)")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    state = make_state(args.mb)
    ts = tensors(state)
    size_mb = sum(t.numel() * t.element_size() for t in ts) / 2**20
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    group = dist.new_group(backend="gloo")
    events: list[dict[str, Any]] = []

    def emit(event: str, **fields: Any) -> dict[str, Any]:
        rec = {"event": event, **fields}
        events.append(rec)
        return rec

    blocked, committed, plain, plain_fsync = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="mixfleet-stall-", dir=args.dir) as tmp:
        root = Path(tmp)
        ckpt = Checkpointer(root / "checkpoints", rank=0, group=group, keep=2,
                            asynchronous=True, emit=emit)
        print(f"state: {size_mb:.1f} MB float32 in {len(ts)} tensors; "
              f"writing under {root}; {args.threads} thread(s)", flush=True)

        def async_save(step: int) -> tuple[float, float]:
            t0 = time.perf_counter()
            ckpt.save(step, state, {"step": step})
            t1 = time.perf_counter()
            ckpt.wait()
            return t1 - t0, time.perf_counter() - t0

        async_save(1)  # warm-up: allocates the staging buffers
        sync_save(state, root / "warmup.pt", fsync=False)
        for i in range(args.repeats):
            b, c = async_save(i + 2)
            p = sync_save(state, root / "state.pt", fsync=False)
            pf = sync_save(state, root / "state.pt", fsync=True)
            blocked.append(b)
            committed.append(c)
            plain.append(p)
            plain_fsync.append(pf)
            print(f"repeat {i + 1}: async blocked {b * 1e3:.1f} ms (committed after "
                  f"{c * 1e3:.0f} ms); torch.save {p * 1e3:.0f} ms, with fsync "
                  f"{pf * 1e3:.0f} ms", flush=True)
        ckpt.close()
        valid, torn = committed_steps(root / "checkpoints")
        hashing = []  # sha256 of every file: in the background commit, and again at load
        for _ in range(3 if valid else 0):
            t0 = time.perf_counter()
            verify(valid[0][1])
            hashing.append(time.perf_counter() - t0)
    dist.destroy_process_group()

    failed = [e for e in events if e["event"] == Event.CHECKPOINT_FAILED]
    if failed or torn or not valid:
        print(f"error: checkpoints failed or torn: {failed or torn}", file=sys.stderr)
        raise SystemExit(1)
    mb, mc = statistics.median(blocked), statistics.median(committed)
    mp, mpf = statistics.median(plain), statistics.median(plain_fsync)
    print(f"median over {args.repeats}: async blocked {mb * 1e3:.1f} ms "
          f"({size_mb / mb / 1024:.1f} GB/s staging), async committed {mc * 1e3:.0f} ms; "
          f"torch.save {mp * 1e3:.0f} ms, torch.save+fsync {mpf * 1e3:.0f} ms "
          f"(async/sync+fsync blocked = {mb / mpf:.3f})")
    mh = statistics.median(hashing)
    print(f"sha256 of a checkpoint's files (part of async committed, not of the stall; the "
          f"same check before a load): {mh * 1e3:.0f} ms ({size_mb / mh / 1024:.2f} GB/s)")
    print(f"checkpoint stall: async/sync blocked time = {mb / mp:.3f} (target <= 0.2)")


if __name__ == "__main__":
    main()
