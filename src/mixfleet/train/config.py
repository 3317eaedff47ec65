"""The training run's config: one typed dataclass per section, filled from TOML and
``--set section.key=value``; validation raises ConfigError with the fix."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from mixfleet.config import field
from mixfleet.errors import ConfigError
from mixfleet.telemetry.base import TelemetryConfig

__all__ = ["WorkloadConfig", "TrainConfig", "CheckpointConfig", "LaunchConfig",
           "FaultsConfig", "RunConfig"]


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclasses.dataclass(kw_only=True, frozen=True)
class WorkloadConfig:
    name: str = field(help="built-in workload (digits-cnn, char-gpt) or "
                           "'package.module:function' returning model, dataset and loss")
    options: dict[str, Any] = field({}, help="keyword arguments for the workload")

    def __post_init__(self) -> None:
        from mixfleet.workloads import check_workload_name

        check_workload_name(self.name)


@dataclasses.dataclass(kw_only=True, frozen=True)
class TrainConfig:
    steps: int = field(help="global steps to train")
    global_batch: int = field(64, help="samples per global step (B), split across ranks")
    lr: float = field(0.05, help="peak learning rate")
    optimizer: Literal["sgd", "adamw"] = field("sgd", help="sgd (with momentum) or adamw")
    momentum: float = field(0.9, help="SGD momentum")
    weight_decay: float = field(0.0, help="weight decay")
    schedule: Literal["constant", "cosine"] = field("cosine", help="LR schedule after warmup")
    warmup_steps: int = field(0, help="linear warmup steps")
    seed: int = field(0, help="seed of the model init and the data order")
    log_every: int = field(50, help="steps between plain progress lines (non-terminal output)")
    eval_every: int = field(0, help="steps between evaluations on held-out data (0: at the end)")
    deterministic: bool = field(True, help="torch deterministic algorithms (bit-exact resume)")

    def __post_init__(self) -> None:
        _require(self.steps >= 1, f"train.steps must be >= 1 (got {self.steps}); set "
                                  f"[train] steps = 1000")
        _require(self.global_batch >= 1, f"train.global_batch must be >= 1 (got "
                 f"{self.global_batch}); set [train] global_batch = 64")
        _require(self.lr > 0, f"train.lr must be > 0 (got {self.lr}); set [train] lr = 0.05")
        _require(0 <= self.momentum < 1, f"train.momentum must be in [0, 1) (got "
                 f"{self.momentum}); set [train] momentum = 0.9")
        _require(self.weight_decay >= 0, f"train.weight_decay must be >= 0 (got "
                 f"{self.weight_decay})")
        _require(0 <= self.warmup_steps < self.steps, f"train.warmup_steps must be in "
                 f"[0, train.steps) (got {self.warmup_steps}); set [train] warmup_steps = 0")
        _require(self.log_every >= 1, f"train.log_every must be >= 1 (got {self.log_every})")
        _require(self.eval_every >= 0, f"train.eval_every must be >= 0 (got "
                 f"{self.eval_every}); 0 evaluates only at the end")


@dataclasses.dataclass(kw_only=True, frozen=True)
class CheckpointConfig:
    interval: int = field(100, help="steps between persistent checkpoints")
    keep: int = field(3, help="committed checkpoints to keep (older ones are deleted only "
                              "after a newer one is committed)")
    asynchronous: bool = field(True, help="write in the background; the step loop only "
                                          "waits for the copy to host memory")

    def __post_init__(self) -> None:
        _require(self.interval >= 1, f"checkpoint.interval must be >= 1 (got "
                 f"{self.interval}); set [checkpoint] interval = 100")
        _require(self.keep >= 1, f"checkpoint.keep must be >= 1 (got {self.keep}); set "
                                 f"[checkpoint] keep = 3")


@dataclasses.dataclass(kw_only=True, frozen=True)
class LaunchConfig:
    nproc: int = field(1, help="ranks on this machine (torchrun --nproc-per-node)")
    device: str = field("auto", help="auto, cpu, cuda, npu, xpu, mlu, ... (auto: the "
                                     "machine's accelerator, else CPU), or emu:<chip-id>")
    backend: str = field("auto", help="collective backend; auto follows the device "
                                      "(gloo, nccl, hccl, ...)")
    max_restarts: int = field(3, help="restarts of the whole group after a failure")
    init_timeout_s: float = field(60.0, help="timeout of process-group set-up and of "
                                             "collectives, so a hang becomes a failure")

    def __post_init__(self) -> None:
        from mixfleet.train.device import check_device_spec

        _require(self.nproc >= 1, f"launch.nproc must be >= 1 (got {self.nproc}); pass "
                                  f"--nproc 2")
        _require(self.max_restarts >= 0, f"launch.max_restarts must be >= 0 (got "
                 f"{self.max_restarts}); set [launch] max_restarts = 3")
        _require(self.init_timeout_s > 0, f"launch.init_timeout_s must be > 0 (got "
                 f"{self.init_timeout_s})")
        check_device_spec(self.device)
        _require(self.backend in ("auto", "gloo", "nccl", "hccl", "xccl", "cncl", "mpi"),
                 f"launch.backend {self.backend!r} is unknown; use auto, gloo, nccl, hccl, "
                 f"xccl, cncl or mpi")


@dataclasses.dataclass(kw_only=True, frozen=True)
class FaultsConfig:
    inject: list[str] = field([], help="exact faults, e.g. 'kill@rank=1,step=40', "
                                       "'kill-in-checkpoint@rank=0,step=200', "
                                       "'disk-full@step=120'")

    def __post_init__(self) -> None:
        from mixfleet.train.faults import parse_fault

        for i, spec in enumerate(self.inject):
            parse_fault(spec, f"faults.inject[{i}]")


@dataclasses.dataclass(kw_only=True, frozen=True)
class RunConfig:
    workload: WorkloadConfig = field(help="what to train")
    train: TrainConfig = field(help="the optimization")
    checkpoint: CheckpointConfig = field(CheckpointConfig(), help="persistent checkpoints")
    launch: LaunchConfig = field(LaunchConfig(), help="ranks, device and restarts")
    faults: FaultsConfig = field(FaultsConfig(), help="fault injection (tests, demos)")
    telemetry: TelemetryConfig = field(TelemetryConfig(), help="device telemetry sampling")

    def __post_init__(self) -> None:
        _require(self.train.global_batch >= self.launch.nproc,
                 f"train.global_batch ({self.train.global_batch}) must be >= launch.nproc "
                 f"({self.launch.nproc}) so that every rank gets a sample; raise "
                 f"global_batch or lower --nproc")
