"""One rank of a training run: ``python -m mixfleet.train.worker RUN_DIR``.

Started by torchrun (``mixfleet train --nproc N``) or in-process for a single rank. Reads
the resolved ``RUN_DIR/config.toml``, joins the process group, resumes from the newest
committed checkpoint, trains, and (rank 0) writes ``final/model.pt`` and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import signal
import sys
import time
from typing import Any

import torch
import torch.distributed as dist

from mixfleet.config import from_dict, load_toml
from mixfleet.emulate import EmulatedDevice, EmulatedFault, EmulationConfig, is_emulated
from mixfleet.errors import MixfleetError
from mixfleet.report.progress import TrainProgress
from mixfleet.report.timeline import run_report
from mixfleet.runs import Event, StepMarker
from mixfleet.telemetry import (
    DeviceTable,
    JsonlSink,
    NullReader,
    Sampler,
    device_temperature,
    open_reader,
    open_readers,
    table_path,
)
from mixfleet.train.config import RunConfig, shares_table
from mixfleet.train.device import cpu_threads, resolve_device
from mixfleet.train.health.detectors import ThermalGuard, Watchdog, thermal_thresholds
from mixfleet.train.health.faults import FaultInjector, FaultPlan
from mixfleet.train.mixed.collectives import default_backend, rank_chips
from mixfleet.train.mixed.pacing import as_model_plan, emulated_job, link_pacer, model_bytes
from mixfleet.train.mixed.placement import RankDevice, rank_placements
from mixfleet.train.mixed.rebalance import plan_fleet, rank_devices
from mixfleet.train.parallel.pipepace import pace_stages
from mixfleet.train.parallel.pipeplan import PipelinePlan, job_pipeline
from mixfleet.train.rendezvous import process_group_store
from mixfleet.train.rundir import RunDir, read_jsonl
from mixfleet.train.trainer import Trainer
from mixfleet.workloads import load_workload

__all__ = ["run_worker", "load_run_config", "build_summary"]


def load_run_config(run: RunDir) -> RunConfig:
    run.read_text(run.config)  # a link in its place is refused, never followed
    return from_dict(RunConfig, load_toml(run.config))


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _init_group(backend: str, rank: int, world: int, attempt: int, timeout_s: float) -> Any:
    """Join the process group through a store mixfleet builds (never torch's default TCP
    store on every interface: mixfleet.train.rendezvous); returns what must stay open."""
    timeout = datetime.timedelta(seconds=timeout_s)
    store, keep = process_group_store(rank, world, attempt, timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    return keep


def build_summary(run: RunDir, cfg: RunConfig, final_metric: tuple[str, float] | None,
                  world: int, device: str, devices: list[str] | None = None) -> dict[str, Any]:
    """summary.json, from the run report (so restarts of earlier attempts count)."""
    rep = run_report(run.root, end_t=time.time())
    steps = cfg.train.steps
    return {
        "steps": steps,
        "global_batch": cfg.train.global_batch,
        "wall_s": rep["wall_s"],
        "samples_per_s": round(steps * cfg.train.global_batch / max(rep["wall_s"], 1e-9), 2),
        "restarts": rep["restarts"],
        "steps_lost": rep["steps_lost"],
        "final_metric": ({"name": final_metric[0], "value": final_metric[1]}
                         if final_metric else None),
        **{k: rep[k] for k in ("checkpoints_committed", "ettr", "failure_time_s",
                               "skipped_steps", "drained_ranks", "faults_injected",
                               "checkpoint_failures")},
        "workload": cfg.workload.name,
        "world_size": world,
        "device": device,
        "devices": list(devices or [device]),
        # emulated when any rank is: a job with a real rank 0 and emulated peers is not a
        # hardware measurement
        "emulated": any(is_emulated(d) for d in (devices or [device])),
        **(plan.fields() if (plan := as_model_plan(cfg, devices)) is not None else {}),
        "run_dir": str(run.root),
    }


def _last_step(run: RunDir) -> int:
    """The step the last attempt reached when it died (rank 0's step marker; the newest
    step record of a run directory written before markers existed)."""
    marked = StepMarker.read(run.last_step)
    if marked is not None:
        return marked
    last = 0
    for rec in read_jsonl(run.metrics_path):
        if "loss" in rec:
            last = int(rec["step"])
    return last


_PEER_LOSS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
              "Socket Timeout", "Timed out waiting")


def _is_peer_loss(e: BaseException) -> bool:
    return isinstance(e, dist.DistBackendError) or any(m in str(e) for m in _PEER_LOSS)


def _start_telemetry(cfg: RunConfig, run: RunDir, emu: EmulatedDevice | None,
                     local_rank: int, rank: int) -> list[Sampler]:
    """Background samplers into metrics.jsonl: each rank its emulated chip; on a real node,
    local rank 0 samples every device of the node (one reader per vendor) and publishes a
    per-device table (``RUN_DIR/telemetry/devices-<host>.json``) that each rank's thermal
    guard reads for its own device."""
    if cfg.telemetry.hz <= 0 or (emu is None and local_rank != 0):
        return []
    try:
        if emu is not None:
            readers = [open_reader(cfg.telemetry.reader, emulated=[emu])]
        else:
            readers = open_readers(cfg.telemetry.reader)
    except MixfleetError as e:  # a requested tool that is absent: reported, not fatal
        run.emit(Event.TELEMETRY_UNAVAILABLE, reader=cfg.telemetry.reader, error=str(e))
        return []
    # an emulated chip is the rank's own: its records carry the rank (two ranks on one
    # chip kind are two devices); a real device is told apart by its device_id
    sink: Any = JsonlSink(run.metrics_path, extra={"rank": rank} if emu is not None else None)
    if emu is None:
        sink = DeviceTable(table_path(run.root), sink=sink)
    return [Sampler(r, hz=cfg.telemetry.hz, sink=sink).start() for r in readers
            if not isinstance(r, NullReader)]


def _thermal_guard(cfg: RunConfig, run: RunDir, emu: EmulatedDevice | None,
                   place: RankDevice) -> ThermalGuard:
    """This rank's guard, reading its own device: the emulated chip, or the node table's
    row of its device (by stable id)."""
    h = cfg.health
    warn, crit, _ = thermal_thresholds(h.warn_c, h.critical_c,
                                       emu.profile if emu is not None else None)
    if emu is not None:
        return ThermalGuard(warn_c=warn, critical_c=crit, resume_c=warn - h.resume_margin_c,
                            read=lambda: emu.snapshot().temp_c)
    read: Any = lambda: None  # noqa: E731 - the CPU: no temperature
    if place.index is not None and cfg.telemetry.hz > 0:
        read = device_temperature(table_path(run.root), place.index,
                                  torch_type=place.torch_type, vendor=place.vendor,
                                  device_id=place.stable_id)
    return ThermalGuard(warn_c=warn, critical_c=crit, resume_c=warn - h.resume_margin_c,
                        read=read)


@dataclasses.dataclass(frozen=True)
class RankSetup:
    """One rank once it has joined the job (:func:`_setup_rank`)."""

    run: RunDir
    cfg: RunConfig
    rank: int
    world: int
    local_rank: int
    local_world: int
    attempt: int
    devices: list[str]  # each rank's device string ([[ranks]] by RANK)
    places: list[RankDevice]  # the physical device and chip kind of each rank
    device: torch.device
    server: Any  # keeps the process group's store open (closed when leaving)
    ckpt_group: Any
    progress: TrainProgress | None  # rank 0's progress display
    workload: Any
    pipeline: PipelinePlan | None  # a pipeline job's plan (its ranks in stage order)

    @property
    def spec(self) -> str:
        """This rank's device string."""
        return self.devices[self.rank]


@dataclasses.dataclass(frozen=True)
class RankParts:
    """What :func:`_build_rank` made: the trainer and what runs beside it."""

    trainer: Trainer
    emu: EmulatedDevice | None
    watchdog: Watchdog
    samplers: list[Sampler]


def _setup_rank(run: RunDir) -> RankSetup:
    """Read the config and the torchrun environment, pick this rank's device, join the
    process group, record the pid and a ``worker_start`` event, open rank 0's progress."""
    cfg = load_run_config(run)
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank, local_world = _env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", 1)
    attempt = _env_int("TORCHELASTIC_RESTART_COUNT", 0)
    devices = rank_devices(cfg, world)  # each rank's device ([[ranks]] by RANK)
    # which physical device (and chip kind) each rank uses, under the visible-devices masks
    places = rank_placements(devices, chips=rank_chips(cfg, world), local_world=local_world)
    workload = load_workload(cfg.workload.name, cfg.workload.options, cfg.workload.path)
    pipeline = job_pipeline(cfg, [p.kind for p in places], workload)
    if pipeline is not None:  # pipeline rank i runs on job rank order[i]'s device
        devices = [devices[j] for j in pipeline.order]
        places = [places[j] for j in pipeline.order]
    spec = devices[rank]
    device = resolve_device(spec, local_rank, placement=places[rank])
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(local_world))
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    server = _init_group(default_backend(devices, device, cfg.launch.backend, placements=places),
                         rank, world, attempt, cfg.launch.init_timeout_s)
    ckpt_group = dist.new_group(backend="gloo")
    run.mkdir(run.pids)
    run.write(run.pids / f"rank{rank}", str(os.getpid()))
    run.emit(Event.WORKER_START, rank=rank, attempt=attempt, pid=os.getpid(),
             device=spec if is_emulated(spec) else str(device), chip=places[rank].chip,
             device_id=places[rank].stable_id)

    progress = None
    if rank == 0:
        mode = os.environ.get("MIXFLEET_PROGRESS", "auto")
        stream = sys.stderr if os.environ.get("MIXFLEET_STREAM") == "stderr" else sys.stdout
        progress = TrainProgress(cfg.train.steps, mode=mode, stream=stream,
                                 log_every=cfg.train.log_every)
        run.events.on_record = progress.event
    if pipeline is not None and rank == 0:
        run.emit(Event.STAGES, attempt=attempt, **pipeline.fields())
    return RankSetup(run=run, cfg=cfg, rank=rank, world=world, local_rank=local_rank,
                     local_world=local_world, attempt=attempt, devices=devices, places=places,
                     device=device, server=server, ckpt_group=ckpt_group, progress=progress,
                     workload=workload, pipeline=pipeline)


def _build_rank(s: RankSetup) -> RankParts:
    """The workload, the emulated chip and its links (an emulated job), fault injection,
    telemetry, the mixed fleet's parts, the watchdog and thermal guard, and the trainer."""
    run, cfg, rank, devices, places = s.run, s.cfg, s.rank, s.devices, s.places
    progress, spec = s.progress, s.spec
    workload = s.workload
    emu = None
    if is_emulated(spec):
        emu = EmulatedDevice.create(spec, peers=devices, table=shares_table(cfg), rank=rank,
                                    workload=workload.name, slot=places[rank].device_slot,
                                    config=EmulationConfig(
                                        seed=cfg.train.seed, attempt=s.attempt,
                                        local_ranks=s.local_world, headroom=cfg.emulate.headroom))
        if progress is not None:
            progress.label = f"train [{emu.device_string}, emulated]"
    pipe = s.pipeline  # as_model: the same on every rank
    as_model = as_model_plan(cfg, devices, workload.name, pipeline=pipe)
    pacer = None
    if emulated_job(devices):  # every rank: the transfers' arrival exchange is collective
        pacer = link_pacer(cfg, [p.kind for p in places], local_world=s.local_world,
                           plan=as_model, group=dist.new_group(backend="gloo"))
        if emu is not None:
            emu.attach_links(pacer)
    if as_model is not None and rank == 0:
        run.emit(Event.EMULATED_AS, **as_model.fields(), label=as_model.label(),
                 time_scale_origin=as_model.time_scale_origin, links=pacer and pacer.describe(),
                 token_s={k: float(f"{v:.4g}") for k, v in as_model.token_s.items()},
                 emulated=True)
        if progress is not None:
            progress.label += f" {as_model.label()}"
    faults = FaultInjector(FaultPlan(cfg.faults.specs(cfg.launch.nproc, cfg.train.steps),
                                     rank, run.root), rank=rank, emit=run.emit)
    faults.startup()  # a rank killed during start-up (before it resumed) is an attempt too
    samplers = _start_telemetry(cfg, run, emu, s.local_rank, s.rank)
    fleet, shares, groups = plan_fleet(cfg, devices, rank=rank, world=s.world, group=None,
                                       workload=workload.name, emit=run.emit, emu=emu,
                                       placements=places, as_model=as_model)
    attempt = s.attempt
    watchdog = Watchdog(
        factor=cfg.health.hang_factor, floor_s=cfg.health.hang_floor_s,
        stacks_dir=run.root / "stacks", rank=rank,
        on_hang=lambda info: run.emit(Event.HANG_DETECTED, attempt=attempt, **info))
    trainer = Trainer(cfg, workload, run=run, device=s.device, rank=rank, world=s.world,
                      ckpt_group=s.ckpt_group, emu=emu, fleet=fleet, shares=shares,
                      thermal=_thermal_guard(cfg, run, emu, places[rank]), watchdog=watchdog,
                      faults=faults, local_world=s.local_world, groups=groups,
                      on_step=progress.step if progress is not None else None, pacer=pacer,
                      pipeline=s.pipeline)
    if pacer is not None:
        model_bytes(pacer, as_model, trainer.model)
    if emu is not None and pipe is not None:  # each chunk takes its chip's time
        pace_stages(trainer, emu, pipe, as_model, cfg, places, s.local_world)
    return RankParts(trainer=trainer, emu=emu, watchdog=watchdog, samplers=samplers)


def _resume(s: RankSetup, trainer: Trainer) -> None:
    """Resume from the newest committed state; rank 0 says from where and what was lost."""
    resumed = trainer.resume()
    if s.rank == 0:
        last = _last_step(s.run)
        s.run.emit(Event.RUN_START, attempt=s.attempt, resumed_from=resumed, world_size=s.world,
                   source=trainer.state.source, steps_lost=max(0, last - (resumed or 0)))
    if s.progress is not None:
        s.progress.start(trainer.step)


def _run_guarded(s: RankSetup, parts: RankParts) -> dict[str, Any]:
    """Train under the guards: SIGTERM persists the newest snapshot (dying gasp), the
    watchdog runs; an emulated device fault or a lost peer ends this process (exit 1) for
    the launcher to restart the group. Stops the watchdog, progress and telemetry."""
    run, rank, trainer, watchdog = s.run, s.rank, parts.trainer, parts.watchdog

    def dying_gasp(signum: int, frame: Any) -> None:
        if trainer.metrics is not None:
            trainer.metrics.flush(block=False)
        trainer.state.snapshots.gasp()
        os._exit(128 + signum)

    old_handler = signal.signal(signal.SIGTERM, dying_gasp)
    watchdog.start()
    try:
        return trainer.fit()
    except EmulatedFault as e:
        run.emit(Event.DEVICE_FAULT, rank=rank, step=trainer.step, error=str(e), emulated=True)
        print(f"[rank {rank}] {e}; the launcher restarts the group", file=sys.stderr,
              flush=True)
        os._exit(1)
    except RuntimeError as e:
        if not _is_peer_loss(e):
            raise
        # Another rank died: torchrun restarts the group; no traceback needed here.
        run.emit(Event.PEER_LOST, rank=rank, step=trainer.step, error=str(e).splitlines()[0][:200])
        print(f"[rank {rank}] lost a peer at step {trainer.step}; the launcher restarts "
              f"the group", file=sys.stderr, flush=True)
        os._exit(1)
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        watchdog.stop()
        if s.progress is not None:
            s.progress.close()
        for sampler in parts.samplers:
            sampler.stop()


def _finish(s: RankSetup, parts: RankParts, out: dict[str, Any]) -> int:
    """After training: unless drained, the final weights and ``summary.json`` (rank 0);
    then every rank leaves the process group."""
    run, rank, trainer, emu = s.run, s.rank, parts.trainer, parts.emu
    if out["drained"] is not None:
        # Every rank stopped at the same step; the launcher restarts without the device.
        dist.barrier()
        dist.destroy_process_group()
        if s.server is not None:
            s.server.close()
        return 0
    weights = trainer.final_state_dict()  # a collective under fsdp
    metric = out["final_metric"] if rank == 0 else None
    if rank == 0:
        run.mkdir(run.final)
        with run.create(run.final / "model.pt") as f:
            torch.save(weights, f)
        summary = build_summary(run, s.cfg, metric, s.world,
                                emu.device_string if emu is not None else str(s.device),
                                s.devices)
        run.emit(Event.FINISH, **{k: summary[k] for k in ("steps", "restarts", "steps_lost")})
        run.write(run.summary, json.dumps(summary, indent=2) + "\n")
    dist.barrier()
    dist.destroy_process_group()
    if s.server is not None:
        s.server.close()  # rank 0's listening socket across machines
    return 0


def run_worker(run_dir: str) -> int:
    """One rank from start to end: set up, build, resume, train under the guards, finish."""
    s = _setup_rank(RunDir(run_dir))
    parts = _build_rank(s)
    _resume(s, parts.trainer)
    out = _run_guarded(s, parts)
    return _finish(s, parts, out)


if __name__ == "__main__":
    code = run_worker(sys.argv[1])
    # Everything is written and the groups are destroyed: skip the interpreter's teardown,
    # where gloo's threads that still hold finished work can abort the process (SIGABRT,
    # "terminate called without an active exception"; seen about once in ten fsdp runs of
    # three ranks on 2 cores), which the launcher would take for a failed rank.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
