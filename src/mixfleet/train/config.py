"""The training run's config, :class:`RunConfig`: one typed section per component, filled
from TOML and ``--set section.key=value`` by :func:`mixfleet.config.from_dict`.

Each section lives next to what it configures: ``[workload]`` in
:mod:`mixfleet.workloads.base`, ``[checkpoint]`` in :mod:`mixfleet.train.checkpoint.manager`,
``[faults]`` in :mod:`mixfleet.train.health.faults`, ``[health]`` in
:mod:`mixfleet.train.health.detectors`, ``[shares]`` in :mod:`mixfleet.train.mixed.shares`,
``[emulate]`` in :mod:`mixfleet.emulate.pricing`, ``[telemetry]`` in
:mod:`mixfleet.telemetry.base`, ``[parallel]`` in :mod:`mixfleet.train.parallel.strategy`;
the core's own (``[train]``, ``[launch]``, ``[[ranks]]``) are here. Bounds are declared on
the fields (:func:`mixfleet.config.field`); ``__post_init__`` keeps the checks that relate
several fields."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from mixfleet.config import Section, field
from mixfleet.config import require as _require
from mixfleet.emulate.pricing import EmulateConfig
from mixfleet.telemetry.base import TelemetryConfig
from mixfleet.train.checkpoint.manager import CheckpointConfig
from mixfleet.train.health.detectors import HealthConfig
from mixfleet.train.health.faults import FaultsConfig
from mixfleet.train.mixed.shares import SharesConfig
from mixfleet.train.parallel.strategy import ParallelConfig
from mixfleet.workloads.base import WorkloadConfig

__all__ = ["TrainConfig", "LaunchConfig", "RankConfig", "RunConfig", "shares_table"]


@dataclasses.dataclass(kw_only=True, frozen=True)
class TrainConfig(Section, section="train"):
    steps: int = field(help="global steps to train", ge=1, example=1000)
    global_batch: int = field(64, help="samples per global step (B), split across ranks",
                              ge=1)
    lr: float = field(0.05, help="peak learning rate", gt=0)
    optimizer: Literal["sgd", "adamw"] = field("sgd", help="sgd (with momentum) or adamw")
    momentum: float = field(0.9, help="SGD momentum", ge=0, lt=1)
    weight_decay: float = field(0.0, help="weight decay", ge=0)
    schedule: Literal["constant", "cosine"] = field("cosine", help="LR schedule after warmup")
    warmup_steps: int = field(0, help="linear warmup steps (fewer than steps)", ge=0)
    seed: int = field(0, help="seed of the model init and the data order")
    log_every: int = field(50, help="steps between plain progress lines (non-terminal output)",
                           ge=1)
    eval_every: int = field(0, help="steps between evaluations on held-out data (0: at the end)",
                            ge=0)
    deterministic: bool = field(True, help="torch deterministic algorithms (bit-exact resume)")
    skip_batches: list[int] = field([], help="steps (1-based) whose global batch is skipped")
    grad_clip: float = field(0.0, help="clip the global gradient norm to this (0: off)", ge=0)

    def __post_init__(self) -> None:
        _require(self.warmup_steps < self.steps, f"train.warmup_steps must be in "
                 f"[0, train.steps) (got {self.warmup_steps}); set [train] warmup_steps = 0")


@dataclasses.dataclass(kw_only=True, frozen=True)
class LaunchConfig(Section, section="launch"):
    nproc: int = field(1, help="ranks on this machine (torchrun --nproc-per-node)", ge=1,
                       flag="--nproc")
    device: str = field("auto", help="auto, cpu, cuda, npu, xpu, mlu, ... (auto: the "
                                     "machine's accelerator, else CPU), or emu:<chip-id>")
    backend: str = field("auto", help="collective backend; auto follows the device",
                         choices=("auto", "gloo", "nccl", "hccl", "xccl", "cncl", "mpi"))
    max_restarts: int = field(3, help="restarts of the whole group after a failure", ge=0)
    init_timeout_s: float = field(60.0, help="timeout of process-group set-up and of "
                                             "collectives, so a hang becomes a failure", gt=0)

    def __post_init__(self) -> None:
        from mixfleet.train.device import check_device_spec

        check_device_spec(self.device)


@dataclasses.dataclass(kw_only=True, frozen=True)
class RankConfig(Section, section="ranks"):
    device: str = field(help="this rank's device: cpu, cuda, npu, ... or emu:<chip-id>")
    speed: float | None = field(None, help="relative speed in (0, 1] (1.0 = the fastest); "
                                "for [shares] mode = \"speed\", and the pace of an emulated "
                                "chip; none: from the throughput table or the catalog",
                                gt=0, le=1, example=0.6)
    max_micro_batch: int = field(0, help="samples this chip holds at once (gradient "
                                 "accumulation above it); 0: [shares] max_micro_batch", ge=0)
    chip: str | None = field(None, help="catalog id of this rank's chip (e.g. kunlun-p800): "
                             "overrides detection for the vendor-aware groups; none: detected")

    def __post_init__(self) -> None:
        from mixfleet.train.device import check_device_spec

        check_device_spec(self.device)
        if self.chip is not None:
            from mixfleet.catalog.base import get_chip

            rec = get_chip(self.chip)  # unknown id -> ConfigError naming the known ones
            kind = self.device.split(":", 1)[0]
            emu = self.device.removeprefix("emu:") if self.device.startswith("emu:") else None
            _require(emu is None or emu == self.chip, f"ranks.chip = {self.chip!r} contradicts "
                     f"device = {self.device!r}; remove chip from that [[ranks]] entry")
            _require(emu is not None or kind in ("auto", rec.torch_device), f"ranks.chip = "
                     f"{self.chip!r} is a {rec.torch_device!r} device but device = "
                     f"{self.device!r}; set device = \"{rec.torch_device}\" or fix chip")


@dataclasses.dataclass(kw_only=True, frozen=True)
class RunConfig(Section):
    workload: WorkloadConfig = field(help="what to train")
    train: TrainConfig = field(help="the optimization")
    checkpoint: CheckpointConfig = field(CheckpointConfig(), help="persistent checkpoints")
    launch: LaunchConfig = field(LaunchConfig(), help="ranks, device and restarts")
    faults: FaultsConfig = field(FaultsConfig(), help="fault injection (tests, demos)")
    telemetry: TelemetryConfig = field(TelemetryConfig(), help="device telemetry sampling")
    health: HealthConfig = field(HealthConfig(), help="watchdog, NaN guard, stragglers, heat")
    ranks: list[RankConfig] = field([], help="one entry per rank of the job (by RANK), each "
                                    "with its device; overrides launch.device")
    shares: SharesConfig = field(SharesConfig(), help="shares of the global batch per rank")
    emulate: EmulateConfig = field(EmulateConfig(), help="pacing of emulated chips")
    parallel: ParallelConfig = field(ParallelConfig(), help="dp (replicas) or fsdp (sharded)")

    def __post_init__(self) -> None:
        _require(self.train.global_batch >= self.launch.nproc,
                 f"train.global_batch ({self.train.global_batch}) must be >= launch.nproc "
                 f"({self.launch.nproc}) so that every rank gets a sample; raise "
                 f"global_batch or lower --nproc")
        _require(not self.ranks or self.train.global_batch >= len(self.ranks),
                 f"train.global_batch ({self.train.global_batch}) must be >= the number of "
                 f"[[ranks]] ({len(self.ranks)}); raise global_batch")
        _require(not self.ranks or len(self.ranks) % self.launch.nproc == 0,
                 f"launch.nproc ({self.launch.nproc}) must divide the number of [[ranks]] "
                 f"({len(self.ranks)}) (ranks per machine); remove nproc or set it to "
                 f"{len(self.ranks)}")


def shares_table(cfg: RunConfig) -> list[Any] | None:
    """The throughput table of ``[shares] table`` (rows), or None: the worker passes it to
    ``EmulatedDevice.create(..., table=..., workload=...)`` so that an emulated chip's pace
    and the shares of ``mode = "speed"`` come from the same measured rows."""
    if cfg.shares.table is None:
        return None
    from mixfleet.catalog.table import read_table

    return list(read_table(cfg.shares.table))
