"""``mixfleet bench --class llama[:PRESET]``: per-component rows of the project's Llama
decoder, for the pipeline's split (docs/pipeline.md, "The split").

The components are those a pipeline stage runs: the embedding, one decoder block (RMSNorm,
GQA attention with RoPE, SwiGLU MLP: :class:`mixfleet.workloads.llama.Block`) and the final
norm + head + loss, sized from a preset of :data:`mixfleet.workloads.llama.PRESETS`
(``debug`` when none is named). Each is timed forward + backward on a micro-batch of
``batch`` sequences (the fastest of ``steps`` after ``warmup``; fp32 on the CPU, bf16 on an
accelerator) and becomes one row (:mod:`mixfleet.catalog.blockrows`: workload
``llama:PRESET/block`` etc., ``step_p50_s`` = seconds per micro-batch, the shape in the
note). On ``emu:<chip>`` the host's time is divided by the emulated chip's relative speed
and the row is ``emulated`` (never a measurement of the chip).
"""

from __future__ import annotations

import datetime
import platform
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mixfleet.bench.classes import time_fwd_bwd
from mixfleet.bench.runner import BenchResult, Progress, resolve_device
from mixfleet.catalog.base import get_chip, load_catalog
from mixfleet.catalog.blockrows import COMPONENTS, BlockShape, row_workload, shape_note
from mixfleet.catalog.table import ThroughputRow
from mixfleet.emulate.speed import is_emulated
from mixfleet.errors import ConfigError
from mixfleet.workloads.llama import PRESETS, Block, LlamaConfig, RMSNorm, preset_config, rotary

__all__ = ["is_llama_class", "llama_preset", "llama_modules", "run_llama_bench"]


def is_llama_class(name: str) -> bool:
    """``llama`` or ``llama:PRESET``."""
    return name == "llama" or name.startswith("llama:")


def llama_preset(name: str) -> LlamaConfig:
    """The shape of ``llama[:PRESET]`` (ConfigError naming the presets when unknown)."""
    preset = name.partition(":")[2] or "debug"
    if preset not in PRESETS:
        raise ConfigError(f"--class {name!r}: unknown llama preset {preset!r}; use llama or "
                          f"llama:PRESET with one of {', '.join(PRESETS)}")
    return preset_config(preset)


class _RopeBlock(nn.Module):
    """A decoder block with its rotary tables held (as the model computes them once)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.block = Block(cfg)
        cos, sin = rotary(cfg.seq_len, cfg.head_dim, cfg.rope_theta, torch.device("cpu"))
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, self.cos.to(x.dtype), self.sin.to(x.dtype))


class _Head(nn.Module):
    """Final RMSNorm, head and the next-token cross entropy (fp32 logits)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab, bias=False)
        self.vocab = cfg.vocab

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.norm(x)).float()
        target = torch.arange(logits.shape[0] * logits.shape[1], device=x.device) % self.vocab
        return F.cross_entropy(logits.flatten(0, 1), target)


def llama_modules(cfg: LlamaConfig, device: str
                  ) -> dict[str, tuple[nn.Module, Callable[[int], tuple[torch.Tensor, ...]]]]:
    """Each component's module (on ``device``, bf16 off the CPU) and its input maker."""
    dt = torch.float32 if device == "cpu" else torch.bfloat16
    t, d = cfg.seq_len, cfg.dim

    def ids(b: int) -> tuple[torch.Tensor, ...]:
        return (torch.randint(0, cfg.vocab, (b, t), device=device),)

    def hidden(b: int) -> tuple[torch.Tensor, ...]:
        return (torch.randn(b, t, d, device=device, dtype=dt, requires_grad=True),)

    mods: dict[str, tuple[nn.Module, Callable[[int], tuple[torch.Tensor, ...]]]] = {
        "embedding": (nn.Embedding(cfg.vocab, d), ids), "block": (_RopeBlock(cfg), hidden),
        "head": (_Head(cfg), hidden)}
    return {k: (m.to(device=device, dtype=dt).train(), f) for k, (m, f) in mods.items()}


def _emu_speed(spec: str, peers: Sequence[str]) -> float:
    from mixfleet.emulate.device import EmulatedDevice

    return float(EmulatedDevice.create(spec, peers=list(peers)).speed)


def run_llama_bench(name: str, devices: Sequence[str], batch: Sequence[int], *,
                    warmup: int = 2, steps: int = 5, progress: Progress | None = None,
                    clock: Callable[[], float] = time.perf_counter) -> list[BenchResult]:
    """Three rows (embedding, block, head) per device x batch of ``llama[:PRESET]``."""
    cfg = llama_preset(name)
    preset = name.partition(":")[2] or "debug"
    shape = BlockShape(dim=cfg.dim, heads=cfg.heads, kv_heads=cfg.kv_heads,
                       ffn_dim=cfg.ffn_dim, vocab=cfg.vocab, seq_len=cfg.seq_len)
    resolved = [(d, *resolve_device(d)) for d in devices]
    emu_all = [d for d in devices if is_emulated(d)]
    cat = load_catalog()
    out: list[BenchResult] = []
    total, done = len(resolved) * len(batch), 0
    for spec, tdev, chip in resolved:
        emulated = is_emulated(spec)
        speed = _emu_speed(spec, emu_all) if emulated else 1.0
        peak = get_chip(chip, cat).peak_flops() if chip in cat and not emulated else None
        torch.manual_seed(0)
        mods = llama_modules(cfg, tdev)
        for b in batch:
            for comp in COMPONENTS:
                mod, inputs = mods[comp]
                sec = time_fwd_bwd(mod, inputs, b, tdev, warmup, steps, clock) / speed
                flops = shape.flops(comp, b)
                note = (f"llama {comp} fwd+bwd per micro-batch of {b} x {cfg.seq_len} tokens "
                        f"(fastest of {steps})")
                if emulated:
                    note += f"; EMULATED: host CPU / relative speed {speed:.3g}"
                row = ThroughputRow(
                    workload=row_workload(preset, comp), chip=chip, batch=b,
                    samples_per_s=b / max(sec, 1e-12), step_p50_s=sec, step_p90_s=None,
                    mfu=None if peak is None or comp == "embedding" else flops / sec / peak,
                    peak_mem_bytes=None, host=platform.node(),
                    torch_version=torch.__version__,
                    date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    emulated=emulated, origin="emulated" if emulated else "measured",
                    note=f"{note}; {shape_note(shape)}")
                out.append(BenchResult(row=row, device=spec, achieved_tflops=None if emulated
                                       else flops / sec / 1e12, trend=[]))
            done += 1
            if progress is not None:
                progress(f"class {name}", done, total)
        del mods
    return out
