"""The training run's config: one typed dataclass per section, filled from TOML and
``--set section.key=value``; validation raises ConfigError with the fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from mixfleet.config import Section, field
from mixfleet.config import require as _require
from mixfleet.emulate.pricing import LinkPrices
from mixfleet.errors import ConfigError
from mixfleet.telemetry.base import TelemetryConfig
from mixfleet.train.health.detectors import HealthConfig
from mixfleet.train.health.faults import RANDOM_KINDS
from mixfleet.train.parallel.strategy import ParallelConfig

__all__ = ["WorkloadConfig", "TrainConfig", "CheckpointConfig", "LaunchConfig",
           "FaultsConfig", "RankConfig", "SharesConfig", "EmulateConfig", "RunConfig",
           "shares_table"]


@dataclasses.dataclass(kw_only=True, frozen=True)
class WorkloadConfig(Section, section="workload"):
    name: str = field(help="built-in workload (digits-cnn, char-gpt, llama), hf:<dir> (a "
                           "transformers causal LM from a local directory), or "
                           "'package.module:function' returning model, dataset and loss")
    options: dict[str, Any] = field({}, help="keyword arguments for the workload")
    path: str = field("", help="folder to import a 'package.module:function' workload from "
                               "(after installed packages; relative: to the config file); "
                               "default: the config file's folder when it is yours and not "
                               "writable by group or others; never the working directory")

    def __post_init__(self) -> None:
        from mixfleet.workloads import check_workload_name

        check_workload_name(self.name)
        if self.path and not Path(self.path).is_dir():
            raise ConfigError(f"workload.path {self.path!r} is not a directory; set [workload] "
                              f"path to the folder holding your workload's module")


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
class CheckpointConfig(Section, section="checkpoint"):
    interval: int = field(100, help="steps between persistent checkpoints", ge=1)
    keep: int = field(3, help="committed checkpoints to keep (older ones are deleted only "
                              "after a newer one is committed)", ge=1)
    asynchronous: bool = field(True, help="write in the background; the step loop only "
                                          "waits for the copy to host memory")
    snapshot_interval: int = field(1, help="steps between in-memory snapshots in host "
                                           "shared memory (a crash loses at most this many "
                                           "steps, or the sparser interval that "
                                           "snapshot_max_cost sets); 0 turns them off",
                                      ge=0)
    snapshot_max_cost: float = field(0.005, help="the most a snapshot may cost as a fraction "
                                                "of the steps it covers: measured over the "
                                                "first snapshots, the interval grows until "
                                                "it is under (at most 64 steps; every rank "
                                                "alike); 0 keeps snapshot_interval as set",
                                       ge=0, lt=1)
    snapshot_host_rng: bool = field(False, help="also snapshot python's and numpy's RNG "
                                                "(for workloads that draw from them)")
    snapshot_memory_gib: float = field(0.0, help="host memory for in-memory snapshots on "
                                                 "this node, shared by its ranks (0: half "
                                                 "of what is available at start); snapshots "
                                                 "that do not fit are turned off, and said so",
                                         ge=0)
    snapshot_overlap: Literal["auto", "on", "off"] = field(
        "auto", help="copy a snapshot on a side thread while the next step computes (it "
                     "completes before the next update): on, off, or auto (on for snapshots "
                     "of 64 MiB and more, where the copy costs more than the thread)")
    share_with_group: bool = field(False, help="let the group read this run directory (0750 "
                                               "directories, 0640 files) for teams who read "
                                               "each other's runs; default private (0700/0600)")


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
class FaultsConfig(Section, section="faults"):
    inject: list[str] = field([], help="exact faults, e.g. 'kill@rank=1,step=40', "
                                       "'hang@rank=0,step=60,seconds=300', 'nan@step=70' "
                                       "(see mixfleet.train.health.faults)")
    mtbf_steps: float = field(0.0, help="chaos mode: mean steps between random faults per "
                                        "rank (0: off)", ge=0)
    seed: int = field(0, help="seed of the chaos schedule")
    random_kinds: list[str] = field(["kill", "hang", "nan", "slow", "overheat"],
                                    help="fault kinds the chaos mode draws from",
                                    choices=RANDOM_KINDS)

    def __post_init__(self) -> None:
        from mixfleet.train.health.faults import parse_fault

        for i, spec in enumerate(self.inject):
            parse_fault(spec, f"faults.inject[{i}]")

    def specs(self, ranks: int, steps: int) -> list[str]:
        """The exact faults plus the chaos schedule (if any)."""
        from mixfleet.train.health.faults import random_faults

        extra = (random_faults(mtbf_steps=self.mtbf_steps, seed=self.seed, ranks=ranks,
                               steps=steps, kinds=tuple(self.random_kinds))
                 if self.mtbf_steps > 0 else [])
        return [*self.inject, *extra]


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
class SharesConfig(Section, section="shares"):
    mode: Literal["equal", "speed", "measured"] = field(
        "equal", help="initial shares of the global batch: equal; speed (from the chips' "
                      "relative speeds); measured (equal, then from the compute times of "
                      "the first rebalance_every steps)")
    rebalance_every: int = field(0, help="steps between rebalances from the measured "
                                 "compute times (0: never; mode = measured needs >= 1)", ge=0)
    hysteresis: float = field(0.05, help="apply new shares only when they shorten the "
                              "predicted step time by more than this fraction", ge=0, lt=1)
    max_micro_batch: int = field(0, help="samples any rank holds at once (0: no limit)", ge=0)
    max_accum: int = field(8, help="micro-batches a rank may accumulate per step; a share "
                           "is capped at micro-batch x max_accum", ge=1)
    sample_mib: float = field(0.0, help="memory per sample (MiB); with the catalog's HBM "
                              "it caps each chip's micro-batch (0: unknown, no cap)", ge=0)
    table: str | None = field(None, help="throughput table (JSON from `mixfleet bench`) "
                              "for mode = speed")

    def __post_init__(self) -> None:
        _require(self.mode != "measured" or self.rebalance_every >= 1, "shares.mode "
                 "\"measured\" needs shares.rebalance_every >= 1 (got 0); set [shares] "
                 "rebalance_every = 20")


@dataclasses.dataclass(kw_only=True, frozen=True)
class EmulateConfig(Section, section="emulate"):
    sample_s: float | None = field(None, help="emulated chips: step time per sample at "
                                   "relative speed 1.0 (s), the same on every rank so the "
                                   "relative speeds are exact; none: calibrated per rank",
                                   gt=0, example=0.001)

    bridge_gbps: float = field(32.0, help="GB/s between chip kinds on one node (host memory, "
                               "PCIe); default assumed: one PCIe Gen4 x16 direction", gt=0)
    nic_gbps: float = field(25.0, help="GB/s between nodes; default assumed: one 200 Gb/s port",
                            gt=0)
    as_model: str | None = field(None, help="pace every emulated rank as if it trained this "
                                 "model (a llama preset or hf: config) while the configured "
                                 "small model does the real math")
    time_scale: float | None = field(None, help="emulated wall seconds per second of the "
                                     "emulated chip under as_model, in (0, 1]; none = chosen "
                                     "so a step takes well under a second",
                                     gt=0, le=1, example=0.001)

    def link_prices(self) -> LinkPrices:
        """The link classes' prices, the two set here labelled config when not default."""
        d = EmulateConfig()
        return LinkPrices(bridge_gbps=self.bridge_gbps, nic_gbps=self.nic_gbps,
                          bridge_origin="config" if self.bridge_gbps != d.bridge_gbps
                          else "assumed",
                          nic_origin="config" if self.nic_gbps != d.nic_gbps else "assumed")


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
