"""What the cost model needs to know of a job: the model's size and the ranks it runs on.

:class:`ModelShape` holds parameter counts (counted on a model built on the meta device, so
any size costs no memory), training FLOPs per sample (the workloads' own counters:
:func:`mixfleet.workloads.llama.analytic_flops_per_token` for llama presets, torch's
FlopCounterMode on the meta device for ``hf:`` configs and built-in workloads) and the
activation bytes a sample keeps for the backward pass (an assumed formula, see
``docs/costmodel.md``). :class:`RankSpec` is one rank: its device, its catalog chip and its
node. Pure data; nothing here runs a step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from mixfleet.catalog.base import Chip, load_catalog
from mixfleet.errors import ConfigError

__all__ = ["ModelShape", "RankSpec", "preset_shape", "hf_shape", "as_model_shape",
           "workload_shape", "parse_rank_specs", "config_rank_specs", "ACT_BYTES_PER_TOKEN_DIM"]

#: Bytes of activations a transformer block keeps per token per unit of width for the
#: backward pass with a fused (flash / SDPA) attention: 34 x dim at 2-byte activations
#: (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
#: Models", eq. 1 without the 5 a s / h attention-score term that SDPA does not store).
#: Assumed for every decoder here; scaled by (activation bytes / 2).
ACT_BYTES_PER_TOKEN_DIM = 34.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelShape:
    """A model's size as the cost model sees it (one sample = one sequence for LMs)."""

    name: str
    params: int
    flops_per_sample: float
    blocks: int
    """Sharding units (transformer blocks); 0 when the model has none (fsdp shards the
    root only)."""
    block_params: int
    """Parameters of the largest block (FSDP gathers one block at a time)."""
    seq_len: int | None
    """Tokens per sample (None: not a sequence model; the work unit is then samples)."""
    dim: int | None = None
    vocab: int | None = None
    act_bytes_per_sample: float | None = None
    """Activation bytes per sample at 2-byte activations without recomputation; None:
    unknown (the memory figure then says so)."""
    act_origin: str = "assumed"

    @property
    def root_params(self) -> int:
        """Parameters outside the blocks (embeddings, head, final norm)."""
        return max(0, self.params - self.blocks * self.block_params)

    def act_bytes(self, samples: float, *, act_bytes: int = 2,
                  checkpointing: bool = False) -> float | None:
        """Activation bytes of a micro-batch of ``samples``; None when unknown."""
        if self.act_bytes_per_sample is None:
            return None
        per = self.act_bytes_per_sample
        if checkpointing and self.blocks and self.dim and self.seq_len:
            # each block keeps only its input (dim per token); one block is recomputed
            block = (per - self.logits_bytes()) / self.blocks
            per = self.blocks * self.seq_len * self.dim * 2 + block + self.logits_bytes()
        return samples * per * act_bytes / 2.0

    def logits_bytes(self) -> float:
        """Bytes of one sample's fp32 logits (kept for the loss); 0 when unknown."""
        if self.seq_len and self.vocab:
            return float(self.seq_len * self.vocab * 4)  # fp32 logits for the loss
        return 0.0


def _decoder_act(layers: int, dim: int, seq_len: int, vocab: int) -> float:
    return layers * seq_len * dim * ACT_BYTES_PER_TOKEN_DIM + seq_len * vocab * 4.0


def _count(model: nn.Module, blocks: Sequence[nn.Module]) -> tuple[int, int, int]:
    params = sum(p.numel() for p in model.parameters())
    sizes = [sum(p.numel() for p in b.parameters()) for b in blocks]
    return params, len(sizes), max(sizes, default=0)


def preset_shape(preset: str, seq_len: int | None = None) -> ModelShape:
    """A llama preset's shape (parameters counted on the meta device)."""
    from mixfleet.workloads.llama import PRESETS, Llama, analytic_flops_per_token, preset_config

    if preset not in PRESETS:
        raise ConfigError(f"emulate.as_model = {preset!r} is not a model; use a llama "
                          f"preset ({', '.join(PRESETS)}) or hf:<dir>")
    cfg = preset_config(preset, seq_len=seq_len)
    with torch.device("meta"):
        model = Llama(cfg)
    params, blocks, block = _count(model, list(model.layers))
    t = cfg.seq_len
    return ModelShape(name=preset, params=params, blocks=blocks, block_params=block,
                      flops_per_sample=analytic_flops_per_token(cfg, t) * t, seq_len=t,
                      dim=cfg.dim, vocab=cfg.vocab,
                      act_bytes_per_sample=_decoder_act(cfg.layers, cfg.dim, t, cfg.vocab))


def hf_shape(spec: str, seq_len: int | None = None) -> ModelShape:
    """An ``hf:<dir>`` config's shape (built on the meta device from its config.json);
    ``seq_len`` defaults to its ``max_position_embeddings`` up to 4096, as the emulator's
    ``as_model`` pace takes it."""
    from mixfleet.workloads.hf import _config, offline_transformers
    from mixfleet.workloads.llama import meta_flops_per_sample

    tf = offline_transformers()
    conf = _config(spec, Path(spec.removeprefix("hf:")).expanduser())
    if seq_len is None:
        seq_len = int(min(getattr(conf, "max_position_embeddings", 4096) or 4096, 4096))

    def build() -> nn.Module:
        return tf.AutoModelForCausalLM.from_config(conf)

    with torch.device("meta"):
        model = build()
    layers = getattr(getattr(model, "model", model), "layers", None)
    blocks = list(layers) if isinstance(layers, nn.ModuleList) else []
    params, nb, block = _count(model, blocks)
    dim = getattr(conf, "hidden_size", None)
    vocab = getattr(conf, "vocab_size", None)
    act = (_decoder_act(nb, dim, seq_len, vocab) if nb and dim and vocab else None)
    return ModelShape(name=spec, params=params, blocks=nb, block_params=block,
                      flops_per_sample=meta_flops_per_sample(build, seq_len), seq_len=seq_len,
                      dim=dim, vocab=vocab, act_bytes_per_sample=act)


def as_model_shape(name: str, seq_len: int | None = None) -> ModelShape:
    """The shape of an ``[emulate] as_model`` value: a llama preset or ``hf:<dir>``, at
    its own sequence length unless ``seq_len`` is given (a sample is one sequence)."""
    if name.startswith("hf:"):
        return hf_shape(name, seq_len)
    return preset_shape(name, seq_len)


def workload_shape(name: str, options: dict[str, object], sample_mib: float = 0.0
                   ) -> ModelShape:
    """The shape of a configured workload (built once, as the trainer builds it)."""
    from mixfleet.workloads import get_workload

    w = get_workload(name, **options)
    model = w.build_model()
    blocks = w.shard_units(model) if w.shard_units is not None else []
    params, nb, block = _count(model, blocks)
    conf = w.info.get("config") if isinstance(w.info.get("config"), dict) else None
    seq = conf.get("seq_len") if conf else None
    act: float | None = None
    origin = "assumed"
    if conf:
        act = _decoder_act(int(conf["layers"]), int(conf["dim"]), int(conf["seq_len"]),
                           int(conf["vocab"]))
    elif sample_mib > 0:
        act, origin = sample_mib * 2**20, "config"
    if w.flops_per_sample is None:
        raise ConfigError(f"workload {name!r} states no FLOPs per sample; the cost model "
                          f"needs them: give the factory's Workload flops_per_sample, or set "
                          f"[emulate] as_model")
    return ModelShape(name=name, params=params, blocks=nb, block_params=block,
                      flops_per_sample=float(w.flops_per_sample),
                      seq_len=int(seq) if seq else None,
                      dim=int(conf["dim"]) if conf else None,
                      vocab=int(conf["vocab"]) if conf else None,
                      act_bytes_per_sample=act, act_origin=origin)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RankSpec:
    """One rank of a job: its device string, catalog chip, node and micro-batch limit."""

    device: str
    chip: str
    node: int = 0
    max_micro_batch: int = 0
    """Samples it holds at once (0: its whole share)."""
    speed: float | None = None
    """``[[ranks]] speed``: the emulated pace's relative speed override (None: none)."""

    @property
    def emulated(self) -> bool:
        return self.device.startswith("emu:")


def _chip_of(device: str, chip: str | None, where: str, cat: dict[str, Chip],
             fix: str = "use emu:<chip-id> or a chip id") -> str:
    cid = chip if chip is not None else device.removeprefix("emu:")
    if cid in cat:
        return cid
    raise ConfigError(f"{where} = {device!r} names no catalog chip; {fix} "
                      f"({', '.join(sorted(cat))})")


def parse_rank_specs(text: str, catalog: dict[str, Chip] | None = None) -> list[RankSpec]:
    """``--ranks emu:nvidia-h20,emu:kunlun-p800@1,nvidia-h100``: devices (or chip ids),
    each optionally ``@NODE`` (default node 0)."""
    cat = load_catalog() if catalog is None else catalog
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ConfigError(f"--ranks {text!r} names no ranks; pass them comma-separated, e.g. "
                          f"--ranks emu:nvidia-h20,emu:kunlun-p800")
    out = []
    for i, item in enumerate(items):
        dev, _, node = item.partition("@")
        try:
            n = int(node) if node else 0
        except ValueError:
            n = -1
        if n < 0:
            raise ConfigError(f"--ranks item {i} {item!r}: node {node!r} is not an integer "
                              f">= 0; write DEVICE@NODE, e.g. emu:kunlun-p800@1")
        out.append(RankSpec(device=dev, chip=_chip_of(dev, None, f"--ranks item {i}", cat),
                            node=n))
    return out


def config_rank_specs(devices: Sequence[str], chips: Sequence[str | None],
                      micro: Sequence[int], per_node: int, *, from_launch: bool = False,
                      speeds: Sequence[float | None] | None = None,
                      catalog: dict[str, Chip] | None = None) -> list[RankSpec]:
    """Ranks of a run config: rank i on node i // per_node (``launch.nproc`` per machine)."""
    cat = load_catalog() if catalog is None else catalog
    where = "launch.device" if from_launch else "ranks[{i}].device"
    fix = ("give the job [[ranks]] with device = \"emu:<chip-id>\" (or chip = \"<chip-id>\"), "
           "or pass --ranks, with a catalog chip")
    sp = list(speeds) if speeds is not None else [None] * len(devices)
    return [RankSpec(device=d, chip=_chip_of(d, c, where.format(i=i), cat, fix),
                     node=i // max(1, per_node), max_micro_batch=m, speed=v)
            for i, (d, c, m, v) in enumerate(zip(devices, chips, micro, sp, strict=True))]
