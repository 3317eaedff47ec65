"""Start a training run: validate, write the run directory, then run the ranks.

A single rank without restarts runs in this process. Otherwise the ranks are started by
PyTorch's elastic launcher (torchrun, through ``mixfleet.train.agent``) with
``max_restarts``; on one machine the rendezvous is a file in a private directory of the run
and no port is opened (mixfleet.train.rendezvous, docs/security.md). torchrun's
multi-node flags (``--nnodes``, ``--node-rank``, ``--rdzv-endpoint``, ``--rdzv-id``, ...)
pass through.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from mixfleet import safefs
from mixfleet.config import apply_overrides, config_hash, dumps_toml, from_dict, load_toml, to_dict
from mixfleet.errors import ConfigError, LaunchError
from mixfleet.runs import Event
from mixfleet.train.autoplan import RunPlan, plan_event, resolve_auto
from mixfleet.train.config import RunConfig
from mixfleet.train.device import cpu_threads, resolve_device
from mixfleet.train.mixed.blocklist import (
    BLOCKLIST,
    read_entries,
    resolve_pending,
    visible_env,
    write_entries,
)
from mixfleet.train.mixed.collectives import check_groups
from mixfleet.train.mixed.placement import RankDevice, device_slots, rank_placements, slots_without
from mixfleet.train.parallel.pipeplan import job_pipeline
from mixfleet.train.rendezvous import (
    TORCHRUN_LOG_VAR,
    endpoint_host,
    endpoint_is_loopback,
    launcher_env,
    local_addr_towards,
    local_rdzv_args,
    local_store_dir,
)
from mixfleet.train.rundir import RESTAGE, RunDir, read_restage
from mixfleet.train.sampler import GlobalBatchSampler
from mixfleet.workloads import load_workload
from mixfleet.workloads.user import workload_dir

__all__ = ["MULTINODE_FLAGS", "resolve_config", "prepare_run", "launch", "torchrun_command",
           "check_rendezvous", "job_placements", "device_env"]

MULTINODE_FLAGS = ("--nnodes", "--node-rank", "--node_rank", "--rdzv-endpoint", "--rdzv_endpoint",
              "--rdzv-id", "--rdzv_id", "--rdzv-backend", "--rdzv_backend", "--master-addr",
              "--master_addr", "--master-port", "--master_port", "--rdzv-conf", "--rdzv_conf")


def resolve_config(path: str | Path | None, overrides: list[str],
                   data: dict[str, Any] | None = None,
                   config_dir: Path | None = None) -> RunConfig:
    """The validated config: the TOML file (or ``data``, from the file ``path`` when given),
    then ``--set`` overrides; a user workload's folder made absolute (``workload.path``;
    relative to ``config_dir``, default the file's folder)."""
    if data is None:
        if path is None:
            raise ConfigError("no config given; pass a TOML file, e.g. examples/digits-cnn.toml")
        data = load_toml(path)
    raw = apply_overrides(data, overrides)
    wl = raw.get("workload")
    if isinstance(wl, dict) and isinstance(wl.get("name"), str):
        # a user workload's folder: explicit, or the config file's when it is trusted
        wdir = workload_dir(wl["name"], str(wl.get("path", "")),
                            config_dir if config_dir is not None
                            else Path(path).absolute().parent if path is not None else None)
        if wdir:
            raw["workload"] = {**wl, "path": wdir}
    if isinstance(raw.get("ranks"), list) and raw["ranks"] and not any(
            o.split("=", 1)[0].strip() == "launch.nproc" for o in overrides):
        raw.setdefault("launch", {})["nproc"] = len(raw["ranks"])  # [[ranks]] define nproc
    try:
        return from_dict(RunConfig, raw)
    except ConfigError as e:
        if path is None:
            raise
        raise type(e)(f"{path}: {e}") from None  # the file, then the key and the fix


def prepare_run(cfg: RunConfig, run_dir: str | Path, *, resume: str = "auto",
                plan: RunPlan | None = None) -> RunDir:
    """Check the device and the run directory, then write ``config.toml``.

    ``[parallel] mode = "auto"`` is resolved to the cost model's pick (``plan``, when the
    caller resolved it already with :func:`resolve_auto`) and recorded as a ``plan`` event.
    Everything is checked before anything is written: on bad input nothing is created.
    """
    if resume not in ("auto", "never"):
        raise ConfigError(f"--resume {resume!r} is unknown; use auto or never")
    if cfg.parallel.mode == "auto":
        cfg, plan = resolve_auto(cfg)
    resolve_device(cfg.launch.device)  # unknown/unavailable device -> DeviceError
    if len(cfg.ranks) == cfg.launch.nproc:  # every rank on this machine: check each device
        for spec in dict.fromkeys(r.device for r in cfg.ranks):
            resolve_device(spec)
    # No device backend may span vendors (e.g. launch.backend = "nccl" on H20 + P800).
    places = job_placements(cfg)
    check_groups(places, cfg.launch.backend)
    # The workload must load and its data must fill a global batch (user factories too).
    workload = load_workload(cfg.workload.name, cfg.workload.options, cfg.workload.path)
    GlobalBatchSampler(len(workload.train_set), cfg.train.global_batch, cfg.train.seed)
    job_pipeline(cfg, [p.kind for p in places], workload)  # a pipeline's stages must work out
    run = RunDir(run_dir)
    if run.root.exists() and not run.root.is_dir():
        raise ConfigError(f"--run-dir {str(run.root)!r} is a file; pass a directory path")
    safefs.check_run_dir(run.root)  # another user's, or writable by others: refused
    run.check()  # a link where a file of the run should be: refused, never followed
    if run.has_checkpoints() and resume == "never":
        raise ConfigError(f"--run-dir {str(run.root)!r} already holds checkpoints and "
                          f"--resume never was given; pass --resume auto to continue it or "
                          f"another --run-dir to start afresh (nothing is deleted)")
    parent = run.root if run.root.exists() else _existing_parent(run.root)
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"--run-dir {str(run.root)!r} is not writable ({parent} denies "
                          f"writes); pass a writable --run-dir")
    previous = _previous_hash(run)
    mode = safefs.SHARED_DIR_MODE if cfg.checkpoint.share_with_group else safefs.DIR_MODE
    safefs.make_dir(run.root, mode)
    os.chmod(run.root, mode)  # an existing run follows [checkpoint] share_with_group too
    new_hash = config_hash(cfg)
    run.write(run.config, dumps_toml(to_dict(cfg)))
    run.emit(Event.LAUNCH, config_hash=new_hash, nproc=cfg.launch.nproc, pid=os.getpid())
    if plan is not None and plan.pick is not None:
        run.emit(Event.PLAN, **plan_event(plan))
    if previous is not None and previous != new_hash and run.has_checkpoints():
        run.emit(Event.CONFIG_CHANGED, previous=previous, now=new_hash)
    return run


def _previous_hash(run: RunDir) -> str | None:
    """The hash of the config the run directory holds (None: none; a link in its place is
    refused, never followed)."""
    try:
        text = run.read_text(run.config)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return "unreadable"
    try:
        return config_hash(from_dict(RunConfig, tomllib.loads(text)))
    except (ConfigError, tomllib.TOMLDecodeError, ValueError, RecursionError):
        return "unreadable"


def _drop_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _existing_parent(p: Path) -> Path:
    p = p.absolute()
    while not p.exists():
        p = p.parent
    return p


def torchrun_command(cfg: RunConfig, run: RunDir, passthrough: list[str],
                     store_dir: Path | None = None) -> list[str]:
    """torchrun (with the safe path, ``-P``; mixfleet.train.agent) and its flags; on one
    machine (``store_dir``) the rendezvous is a file in that private directory
    (mixfleet.train.rendezvous)."""
    cmd = [sys.executable, "-P", "-m", "mixfleet.train.agent",  # torchrun, store bound
           f"--nproc-per-node={cfg.launch.nproc}", f"--max-restarts={cfg.launch.max_restarts}",
           "--monitor-interval=0.5"]
    if store_dir is not None:
        cmd += local_rdzv_args(store_dir, f"mixfleet-{os.getpid()}")
    else:  # across machines: this node's address on the route to the rendezvous host
        host = endpoint_host(passthrough)
        addr = local_addr_towards(host) if host else None
        if addr is not None:  # MASTER_ADDR: rank 0's store is bound to it
            cmd.append(f"--local-addr={addr}")
    return cmd + passthrough + ["-m", "mixfleet.train.worker", str(run.root)]


def check_rendezvous(passthrough: list[str]) -> None:
    """Refuse (ConfigError) a multi-machine rendezvous host the other nodes could not reach
    through this node's store (a name that resolves to loopback here)."""
    host = endpoint_host(passthrough)
    if host is not None:
        local_addr_towards(host)


def _one_machine(passthrough: list[str]) -> bool:
    return not any(a.split("=")[0] in MULTINODE_FLAGS for a in passthrough)


def job_placements(cfg: RunConfig, environ: dict[str, str] | None = None
                   ) -> list[RankDevice]:
    """Every rank's device on this node as the ranks of ``cfg`` would be placed (under the
    visible-devices masks of ``environ``, default os.environ)."""
    from mixfleet.catalog.detect import detect

    devices = ([r.device for r in cfg.ranks] if cfg.ranks
               else [cfg.launch.device] * cfg.launch.nproc)
    chips = [r.chip for r in cfg.ranks] if cfg.ranks else None
    real = any(not d.startswith(("emu:", "cpu", "auto")) for d in devices)
    det = detect(environ=environ) if real and environ is not None else None
    return rank_placements(devices, chips=chips, local_world=cfg.launch.nproc, detection=det,
                           slots=device_slots(environ) if environ is not None else None)


def device_env(run: RunDir, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The visible-devices variables that keep this run directory's blocked devices out
    (``{}`` when none is blocked), to set for every rank of every launch."""
    return visible_env(read_entries(run.root), os.environ if environ is None else environ)


def _pending_drains(run: RunDir) -> list[int]:
    return [e["rank"] for e in read_entries(run.root)
            if e.get("pending") and isinstance(e.get("rank"), int)]


def _relaunch_without_drained(cfg: RunConfig, run: RunDir, env: dict[str, str]
                              ) -> RunConfig:
    """The config without the drained ranks (their devices go on the block list, by stable
    id); it is written to config.toml so that later restarts honour the block list too.
    ``env`` gets the device slots of the ranks left (an emulated chip's heat stays with its
    device: the drained one's is dropped)."""
    drained = sorted(set(_pending_drains(run)))
    nproc = cfg.launch.nproc - len(drained)
    if nproc < 1:
        raise LaunchError(f"every rank was drained (block list in {run.root / BLOCKLIST}); "
                          f"let the devices cool or fix them, then resume with --resume auto")
    ranks = [r for i, r in enumerate(cfg.ranks) if i not in drained]
    places = job_placements(cfg, env)
    env.update(slots_without(env, drained, cfg.launch.nproc, any(p.emulated for p in places)))
    new = dataclasses.replace(cfg, launch=dataclasses.replace(cfg.launch, nproc=nproc),
                              ranks=ranks)
    if cfg.parallel.mode == "pipeline":  # the stages over the chips left (or the reason)
        new = restage_without(cfg, new, run, [places[i].kind for i in drained])
    entries = resolve_pending(read_entries(run.root), places)
    write_entries(run.root, entries)
    run.write(run.config, dumps_toml(to_dict(new)))
    run.emit(Event.RELAUNCH, nproc=nproc, drained=drained,
             blocked=[e.get("device_id") for e in entries if e.get("rank") in drained])
    return new


def _run_torchrun(cfg: RunConfig, run: RunDir, passthrough: list[str],
                  env: dict[str, str]) -> int:
    """One torchrun invocation; on one machine its stores live in a fresh private
    directory of the run, removed when it ends."""
    store_dir = local_store_dir(run.root) if _one_machine(passthrough) else None
    try:
        cmd = torchrun_command(cfg, run, passthrough, store_dir)
        extra = launcher_env(store_dir, loopback=endpoint_is_loopback(passthrough))
        extra[TORCHRUN_LOG_VAR] = str(run.torchrun_log)  # torchrun's own lines (agent.py)
        return subprocess.run(cmd, env={**env, **extra}).returncode
    finally:
        if store_dir is not None:
            shutil.rmtree(store_dir, ignore_errors=True)


def launch(cfg: RunConfig, run: RunDir, *, passthrough: list[str] | None = None,
           progress: str = "auto", progress_to_stderr: bool = False) -> dict[str, Any]:
    """Run the ranks to the end; returns the run's summary (summary.json)."""
    env_updates = {"MIXFLEET_PROGRESS": progress,
                   "MIXFLEET_STREAM": "stderr" if progress_to_stderr else "stdout"}
    passthrough = passthrough or []
    env_updates.update(device_env(run))  # blocked devices stay masked out in this run dir
    if cfg.launch.nproc == 1 and cfg.launch.max_restarts == 0 and not passthrough:
        from mixfleet.train.worker import run_worker

        old = {k: os.environ.get(k) for k in env_updates}
        os.environ.update(env_updates)
        try:
            run_worker(str(run.root))
        except BaseException:
            _drop_group()  # a worker that failed in this process leaves no process group
            raise
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    else:
        env = {**os.environ, **env_updates, "PYTHONUNBUFFERED": "1"}
        env.setdefault("OMP_NUM_THREADS", str(cpu_threads(cfg.launch.nproc)))
        while True:
            rc = _run_torchrun(cfg, run, passthrough, env)
            if rc != 0:
                run.emit(Event.LAUNCH_FAILED, returncode=rc)
                raise LaunchError(f"training failed (torchrun exit code {rc}) after "
                                  f"{cfg.launch.max_restarts} restarts at most; see "
                                  f"{run.events_path} and {run.torchrun_log}, and rerun "
                                  f"with --resume auto to continue from the last checkpoint")
            restage = read_restage(run) if not run.summary.exists() else None
            if restage is not None:  # a pipeline's re-split: relaunch with the new blocks
                cfg = relaunch_restaged(cfg, run, restage)
                continue
            if run.summary.exists() or not _pending_drains(run):
                break
            cfg = _relaunch_without_drained(cfg, run, env)
            masks = device_env(run, env)
            env.update(masks)
            if masks:
                run.emit(Event.DEVICE_MASK, **masks)
    if not run.summary.exists():
        raise LaunchError(f"the run ended without {run.summary}; see {run.events_path}")
    return dict(json.loads(run.read_text(run.summary)))


def restage_without(old: RunConfig, new: RunConfig, run: RunDir, lost: list[str]) -> RunConfig:
    """A pipeline after a drain: each drained rank leaves its kind's last stage of that
    kind (a stage left with no rank is dropped: its blocks go to the stages left), the
    split is picked again over the chips left, and a ``stages_changed`` event gives the
    old and the new split. When the chips left cannot hold the model (or fewer than 2
    ranks are left) the job stops here with the reason."""
    from mixfleet.train.parallel.pipeplan import job_pipeline

    stages = [dataclasses.replace(s, blocks=0) for s in old.parallel.stages]
    for kind in lost:
        for i in range(len(stages) - 1, -1, -1):
            if stages[i].chip == kind and stages[i].ranks > 0:
                stages[i] = dataclasses.replace(stages[i], ranks=stages[i].ranks - 1)
                break
    stages = [s for s in stages if s.ranks > 0]
    new = dataclasses.replace(new, parallel=dataclasses.replace(new.parallel, stages=stages))
    workload = load_workload(old.workload.name, old.workload.options, old.workload.path)
    before = job_pipeline(old, [p.kind for p in job_placements(old)], workload)
    try:
        after = job_pipeline(new, [p.kind for p in job_placements(new)], workload)
    except ConfigError as e:
        run.emit(Event.STAGES_CHANGED, reason="drain", lost=lost, old=before and
                 before.fields()["stages"], new=None, error=str(e))
        raise LaunchError(f"the pipeline cannot go on without the drained chip(s) {lost}: "
                          f"{e}") from None
    assert before is not None and after is not None
    run.emit(Event.STAGES_CHANGED, reason="drain", lost=lost, old=before.fields()["stages"],
             new=after.fields()["stages"])
    return new


def relaunch_restaged(cfg: RunConfig, run: RunDir, restage: dict[str, Any]) -> RunConfig:
    """The config with the split the workers asked for (``restage.json``: blocks per
    stage, the reason, the predicted gain), written to config.toml so later restarts keep
    it; a ``stages_changed`` event gives the old and the new split."""
    from mixfleet.train.parallel.pipeplan import job_pipeline

    workload = load_workload(cfg.workload.name, cfg.workload.options, cfg.workload.path)
    kinds = [p.kind for p in job_placements(cfg)]
    before = job_pipeline(cfg, kinds, workload)
    assert before is not None
    stages = [dataclasses.replace(s, blocks=b)
              for s, b in zip(before.stages, restage["blocks"], strict=True)]
    new = dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, stages=stages))
    after = job_pipeline(new, kinds, workload)
    assert after is not None
    run.write(run.config, dumps_toml(to_dict(new)))
    (run.root / RESTAGE).unlink()
    run.emit(Event.STAGES_CHANGED, old=before.fields()["stages"], new=after.fields()["stages"],
             **{k: v for k, v in restage.items() if k != "blocks"})
    return new
