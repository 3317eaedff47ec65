"""``[emulate] as_model``: pace emulated ranks as if they trained a named large model.

The configured small model does the real math; each emulated rank's step is paced by the
named model's figures (``docs/emulation.md``):

- **compute**: tokens of the rank's micro-batches x the model's training FLOPs per token
  (:func:`~mixfleet.workloads.llama.analytic_flops_per_token` for a ``llama`` preset, the
  meta-device FLOP counter for an ``hf:`` config) / (the chip's catalog BF16 peak x the
  profile's ``mfu``), with the profile's fixed costs and efficiency curve in tokens;
- **time scale**: every emulated second (compute, fixed costs, links) lasts ``time_scale``
  wall seconds; by default chosen so that the slowest rank's step takes about
  :data:`TARGET_STEP_S` at equal shares;
- **links**: bytes from the model's parameter count (dp: fp32 gradients; fsdp: bf16
  parameter all-gathers and fp32 gradient reduce-scatters);
- **memory**: :func:`memory_need` checked against the chip's catalog HBM; a plan that does
  not fit is refused (ConfigError naming the chip, the need and the HBM).

A sample is one sequence of the model's ``seq_len`` tokens. Pure functions: the trainer's
side is :func:`mixfleet.train.mixed.rebalance.as_model_plan`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from mixfleet.catalog.base import Chip, get_chip, load_catalog
from mixfleet.emulate.pricing import StepCost
from mixfleet.emulate.profile import EmuProfile
from mixfleet.errors import ConfigError, MixfleetError

__all__ = ["ModelShape", "model_shape", "MemoryNeed", "memory_need", "AsModelPlan",
           "plan_as_model", "TARGET_STEP_S", "LINK_BYTES"]

#: The default time scale makes the slowest rank's step take about this long (wall s).
TARGET_STEP_S = 0.2
#: Bytes per element the emulated model moves per op (bf16 parameters gathered, fp32
#: gradients reduced), as in FSDP2's MixedPrecisionPolicy(bf16, reduce fp32).
LINK_BYTES = {"all_reduce": 4.0, "reduce_scatter": 4.0, "all_gather": 2.0}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelShape:
    """The figures of a named model that pacing needs."""

    name: str
    params: int
    flops_per_token: float  # training (forward + backward)
    seq_len: int
    layers: int
    dim: int
    vocab: int


def _preset_shape(name: str) -> ModelShape:
    from mixfleet.workloads.llama import analytic_flops_per_token, parameter_count, preset_config

    cfg = preset_config(name)
    return ModelShape(name=name, params=parameter_count(cfg),
                      flops_per_token=analytic_flops_per_token(cfg), seq_len=cfg.seq_len,
                      layers=cfg.layers, dim=cfg.dim, vocab=cfg.vocab)


def _hf_shape(name: str) -> ModelShape:
    import torch

    from mixfleet.workloads.hf import _config, offline_transformers
    from mixfleet.workloads.llama import meta_flops_per_sample

    config = _config(name, Path(name[3:]).expanduser())
    auto = offline_transformers().AutoModelForCausalLM
    seq = int(min(getattr(config, "max_position_embeddings", 4096) or 4096, 4096))
    with torch.device("meta"):
        params = sum(p.numel() for p in auto.from_config(config).parameters())
    flops = meta_flops_per_sample(lambda: auto.from_config(config), seq) / seq
    return ModelShape(name=name, params=int(params), flops_per_token=flops, seq_len=seq,
                      layers=int(getattr(config, "num_hidden_layers", 1)),
                      dim=int(getattr(config, "hidden_size", 1)),
                      vocab=int(getattr(config, "vocab_size", 1)))


def model_shape(name: str) -> ModelShape:
    """The shape of a ``llama`` preset (``llama3-8b``, ...) or an ``hf:<dir>`` config,
    counted without building weights; an unknown name raises ConfigError with the fix."""
    from mixfleet.workloads.llama import PRESETS

    try:
        if name.startswith("hf:"):
            return _hf_shape(name)
        if name in PRESETS:
            return _preset_shape(name)
    except MixfleetError as e:
        raise ConfigError(f"emulate.as_model = {name!r}: {e}") from None
    raise ConfigError(f"emulate.as_model = {name!r} is not a known model; use a llama preset "
                      f"({', '.join(PRESETS)}) or hf:<dir with a config.json>")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryNeed:
    """Bytes one rank needs (parts and total)."""

    states: float  # weights, gradients, optimizer state (sharded under fsdp)
    gathered: float  # fsdp: bf16 parameters of two blocks gathered at once
    activations: float  # of the largest micro-batch

    @property
    def total(self) -> float:
        return self.states + self.gathered + self.activations


def memory_need(shape: ModelShape, *, mode: str, world: int, micro_samples: int,
                optimizer: str, activation_checkpointing: bool = False) -> MemoryNeed:
    """Memory of one rank: fp32 weights and gradients (4 + 4 bytes per parameter) and the
    optimizer state (sgd momentum 4, adamw 8), all divided by ``world`` under fsdp (plus
    two blocks of bf16 parameters gathered); activations of one micro-batch in bf16 per
    token: 34 x dim per layer (Korthikanti et al. 2022, flash attention: no scores), with
    activation checkpointing 2 x dim per layer + one block's 34 x dim, plus the fp32
    logits (4 x vocab)."""
    per_param = 8.0 + (8.0 if optimizer == "adamw" else 4.0)
    states = shape.params * per_param / (world if mode == "fsdp" else 1)
    gathered = 2 * 2.0 * shape.params / max(1, shape.layers) if mode == "fsdp" else 0.0
    per_token = (2.0 * shape.dim * shape.layers + 34.0 * shape.dim if activation_checkpointing
                 else 34.0 * shape.dim * shape.layers) + 4.0 * shape.vocab
    return MemoryNeed(states=states, gathered=gathered,
                      activations=per_token * shape.seq_len * max(1, micro_samples))


@dataclasses.dataclass(frozen=True, kw_only=True)
class AsModelPlan:
    """How every rank is paced under ``as_model`` (the same on every rank)."""

    shape: ModelShape
    time_scale: float
    time_scale_origin: str  # "config" or "default"
    token_s: dict[str, float]  # emulated-chip seconds per token at full efficiency
    step_s: list[float]  # each rank's emulated step (chip seconds) at the shares given
    costs: dict[str, StepCost]  # per chip, in tokens, already time-scaled

    def label(self) -> str:
        return f"emulated as {self.shape.name} (time scale {self.time_scale:.3g})"

    def fields(self) -> dict[str, object]:
        """For metrics, events and the summary."""
        return {"emulated_as": self.shape.name, "time_scale": self.time_scale}


def _peak_tflops(chip: Chip, profile: EmuProfile) -> float:
    v = chip.bf16_tflops.value
    if v is None:
        v = profile.relative_tflops
    if v is None or v <= 0:
        raise ConfigError(f"emulate.as_model: the BF16 peak of {chip.id} is unknown (catalog "
                          f"and profile); set relative_tflops in [chips.{chip.id}] of the "
                          f"profile file, or leave {chip.id} out")
    return float(v)


def plan_as_model(name: str, chips: Sequence[str], profiles: dict[str, EmuProfile], *,
                  shares: Sequence[int], micros: Sequence[int], mode: str, optimizer: str,
                  activation_checkpointing: bool = False, time_scale: float | None = None,
                  catalog: dict[str, Chip] | None = None) -> AsModelPlan:
    """The pace of each emulated rank (``chips[r]``, catalog ids) at ``shares`` (samples)
    in micro-batches of at most ``micros[r]`` (0: the whole share); raises ConfigError
    when the model does not fit a chip's HBM (not under ``pipeline``: a stage holds part
    of the model)."""
    shape = model_shape(name)
    cat = load_catalog() if catalog is None else catalog
    world = len(chips)
    token_s: dict[str, float] = {}
    step_s: list[float] = []
    for chip_id, share, micro in zip(chips, shares, micros, strict=True):
        chip, prof = get_chip(chip_id, cat), profiles[chip_id]
        mb = micro if micro > 0 else share
        need = memory_need(shape, mode=mode, world=world, micro_samples=mb,
                           optimizer=optimizer,
                           activation_checkpointing=activation_checkpointing)
        hbm = chip.hbm_gib.value
        # a pipeline's chips hold their stage only: the cost model checks its memory per
        # stage (mixfleet.train.parallel.pipecost), not this whole-model figure
        if mode != "pipeline" and hbm is not None and need.total > hbm * 2**30:
            gib = 2**30
            raise ConfigError(
                f"emulate.as_model = {name!r} does not fit {chip_id}: it needs "
                f"{need.total / gib:.1f} GiB per chip ({mode}: states {need.states / gib:.1f}, "
                f"gathered {need.gathered / gib:.1f}, activations of {mb} x {shape.seq_len} "
                f"tokens {need.activations / gib:.1f}) but its HBM is {hbm:g} GiB; use "
                f"[parallel] mode = \"fsdp\" over more ranks, a smaller [shares] "
                f"max_micro_batch, activation_checkpointing, or a smaller model")
        token_s[chip_id] = shape.flops_per_token / (_peak_tflops(chip, prof) * 1e12 * prof.mfu)
        sizes = [float(b * shape.seq_len) for b in _split(share, mb)]
        step_s.append(prof.step_cost("tokens").step_s(sizes, token_s[chip_id]))
    origin = "config" if time_scale is not None else "default"
    if time_scale is None:
        time_scale = min(1.0, TARGET_STEP_S / max(step_s))
    costs = {c: profiles[c].step_cost("tokens").scaled(time_scale) for c in set(chips)}
    return AsModelPlan(shape=shape, time_scale=time_scale, time_scale_origin=origin,
                       token_s=token_s, step_s=step_s, costs=costs)


def _split(share: int, micro: int) -> list[int]:
    if micro <= 0 or share <= micro:
        return [share]
    return [micro] * (share // micro) + ([share % micro] if share % micro else [])
