"""One rank of a training run: ``python -m mixfleet.train.worker RUN_DIR``.

Started by torchrun (``mixfleet train --nproc N``) or in-process for a single rank. Reads
the resolved ``RUN_DIR/config.toml``, joins the process group, resumes from the newest
committed checkpoint, trains, and (rank 0) writes ``final/model.pt`` and ``summary.json``.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from typing import Any

import torch
import torch.distributed as dist

from mixfleet.config import from_dict, load_toml
from mixfleet.report.progress import TrainProgress
from mixfleet.train.config import RunConfig
from mixfleet.train.device import backend_for, cpu_threads, resolve_device
from mixfleet.train.rundir import RunDir, read_jsonl
from mixfleet.train.trainer import Trainer
from mixfleet.workloads import get_workload

__all__ = ["run_worker", "load_run_config", "build_summary"]


def load_run_config(run: RunDir) -> RunConfig:
    return from_dict(RunConfig, load_toml(run.config))


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _init_group(backend: str, rank: int, world: int, timeout_s: float) -> None:
    timeout = datetime.timedelta(seconds=timeout_s)
    if "MASTER_ADDR" in os.environ:
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout)
    else:  # a single in-process rank
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                                timeout=timeout)


def build_summary(run: RunDir, cfg: RunConfig, final_metric: tuple[str, float] | None,
                  world: int, device: str) -> dict[str, Any]:
    """summary.json, from the run's events (so restarts of earlier attempts count)."""
    events = run.read_events()
    starts = [e for e in events if e["event"] == "run_start"]
    launches = [e for e in events if e["event"] == "launch"]
    t0 = launches[0]["t"] if launches else (starts[0]["t"] if starts else time.time())
    wall = max(1e-9, time.time() - t0)
    steps = cfg.train.steps
    return {
        "steps": steps,
        "global_batch": cfg.train.global_batch,
        "wall_s": round(wall, 3),
        "samples_per_s": round(steps * cfg.train.global_batch / wall, 2),
        "restarts": max(0, len(starts) - 1),
        "steps_lost": sum(int(e.get("steps_lost", 0)) for e in starts),
        "final_metric": ({"name": final_metric[0], "value": final_metric[1]}
                         if final_metric else None),
        "checkpoints_committed": sum(e["event"] == "checkpoint_committed" for e in events),
        "checkpoint_failures": sum(e["event"] == "checkpoint_failed" for e in events),
        "workload": cfg.workload.name,
        "world_size": world,
        "device": device,
        "emulated": False,
        "run_dir": str(run.root),
    }


def _last_step(run: RunDir) -> int:
    last = 0
    for rec in read_jsonl(run.metrics_path):
        last = int(rec.get("step", last))
    return last


_PEER_LOSS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
              "Socket Timeout", "Timed out waiting")


def _is_peer_loss(e: BaseException) -> bool:
    return isinstance(e, dist.DistBackendError) or any(m in str(e) for m in _PEER_LOSS)


def run_worker(run_dir: str) -> int:
    run = RunDir(run_dir)
    cfg = load_run_config(run)
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank, local_world = _env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", 1)
    attempt = _env_int("TORCHELASTIC_RESTART_COUNT", 0)
    device = resolve_device(cfg.launch.device, local_rank)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(local_world))
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    _init_group(backend_for(device, cfg.launch.backend), rank, world, cfg.launch.init_timeout_s)
    ckpt_group = dist.new_group(backend="gloo")
    run.pids.mkdir(parents=True, exist_ok=True)
    (run.pids / f"rank{rank}").write_text(str(os.getpid()))
    run.emit("worker_start", rank=rank, attempt=attempt, pid=os.getpid(), device=str(device))

    progress = None
    if rank == 0:
        mode = os.environ.get("MIXFLEET_PROGRESS", "auto")
        stream = sys.stderr if os.environ.get("MIXFLEET_STREAM") == "stderr" else sys.stdout
        progress = TrainProgress(cfg.train.steps, mode=mode, stream=stream,
                                 log_every=cfg.train.log_every)
        run.events.on_record = progress.event
    workload = get_workload(cfg.workload.name, **cfg.workload.options)
    trainer = Trainer(cfg, workload, run=run, device=device, rank=rank, world=world,
                      ckpt_group=ckpt_group,
                      on_step=progress.step if progress is not None else None)
    resumed = trainer.resume()
    if rank == 0:
        last = _last_step(run)
        run.emit("run_start", attempt=attempt, resumed_from=resumed, world_size=world,
                 steps_lost=max(0, last - (resumed or 0)))
    if progress is not None:
        progress.start(trainer.step)
    try:
        out = trainer.fit()
    except RuntimeError as e:
        if not _is_peer_loss(e):
            raise
        # Another rank died: torchrun restarts the group; no traceback needed here.
        run.emit("peer_lost", rank=rank, step=trainer.step, error=str(e).splitlines()[0][:200])
        print(f"[rank {rank}] lost a peer at step {trainer.step}; the launcher restarts "
              f"the group", file=sys.stderr, flush=True)
        os._exit(1)
    finally:
        if progress is not None:
            progress.close()
    if rank == 0:
        run.final.mkdir(parents=True, exist_ok=True)
        torch.save(trainer.final_state_dict(), run.final / "model.pt")
        summary = build_summary(run, cfg, out["final_metric"], world, str(device))
        run.emit("finish", **{k: summary[k] for k in ("steps", "restarts", "steps_lost")})
        run.summary.write_text(json.dumps(summary, indent=2) + "\n")
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(run_worker(sys.argv[1]))
