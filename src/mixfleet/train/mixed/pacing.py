"""A job's emulated pace beyond its chips' speed: ``as_model`` and the emulated links.

:func:`as_model_plan` resolves ``[emulate] as_model`` for a config (the CLI calls it before
anything is written, so that a model that does not fit is refused with exit 2; every rank
calls it again and gets the same plan); :func:`link_pacer` builds a rank's pacer of its
transfers (a collective call: it creates a process group). See ``docs/emulation.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mixfleet.emulate.asmodel import LINK_BYTES, AsModelPlan, plan_as_model
from mixfleet.emulate.links import LinkPacer
from mixfleet.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from mixfleet.train.config import RunConfig

__all__ = ["as_model_plan", "link_pacer", "emulated_job", "model_bytes"]


def _world(cfg: RunConfig) -> int:
    return len(cfg.ranks) if cfg.ranks else cfg.launch.nproc


def emulated_job(devices: Sequence[str]) -> bool:
    """Whether any rank is an emulated chip (then every rank paces its transfers)."""
    return any(d.startswith("emu:") for d in devices)


def as_model_plan(cfg: RunConfig, devices: Sequence[str] | None = None,
                  workload: str | None = None, *, pipeline: Any = None
                  ) -> AsModelPlan | None:
    """The ``as_model`` plan of ``cfg`` (None without ``as_model``): pace per chip, time
    scale, memory checked against each chip's HBM (ConfigError when it does not fit;
    under pipeline the split checks each stage's memory, and the default time scale maps
    the predicted step of the ``pipeline``'s plan)."""
    if cfg.emulate.as_model is None:
        return None
    from mixfleet.emulate import load_profiles, parse_emu_device
    from mixfleet.train.mixed.rebalance import initial_plan, rank_devices

    devs = list(devices) if devices is not None else rank_devices(cfg, _world(cfg))
    real = [d for d in devs if not d.startswith("emu:")]
    if real:
        raise ConfigError(f"emulate.as_model = {cfg.emulate.as_model!r} paces emulated chips, "
                          f"but rank device(s) {real} are not emulated; use emu:<chip-id> "
                          f"devices or remove [emulate] as_model")
    shares, micros, _ = initial_plan(cfg, devs, workload or cfg.workload.name)
    return plan_as_model(cfg.emulate.as_model, [parse_emu_device(d) for d in devs],
                         load_profiles(), shares=shares, micros=micros,
                         mode=cfg.parallel.mode, optimizer=cfg.train.optimizer,
                         activation_checkpointing=cfg.parallel.activation_checkpointing,
                         time_scale=cfg.emulate.time_scale,
                         check_memory=cfg.parallel.mode != "pipeline",
                         target_step_s=pipeline.step_s if pipeline is not None else None,
                         seq_len=cfg.emulate.as_model_seq_len or None)


def link_pacer(cfg: RunConfig, kinds: Sequence[str], *, local_world: int,
               plan: AsModelPlan | None = None, group: Any = None) -> LinkPacer:
    """This rank's pacer over every rank (``kinds``: each rank's chip kind; ranks are on
    node ``rank // local_world``). ``group``: the gloo group of the arrival exchange."""
    nodes = [r // max(1, local_world) for r in range(len(kinds))]
    return LinkPacer.for_group(list(kinds), nodes, cfg.emulate.link_prices(), group=group,
                               scale=plan.time_scale if plan is not None else 1.0)


def model_bytes(pacer: LinkPacer, plan: AsModelPlan | None, model: nn.Module) -> None:
    """Under ``as_model``: the pacer prices the named model's bytes, not the small
    model's (each transfer scaled by the ratio of their parameter counts)."""
    if plan is None:
        return
    small = sum(p.numel() for p in model.parameters())
    pacer.model_bytes(plan.shape.params / max(1, small), LINK_BYTES)
