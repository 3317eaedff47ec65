"""The planner's workload classes as runnable models, and their per-component profiles.

Each class of :mod:`mixfleet.fleet.workloads` gets a concrete definition of one sample:

=========  ==================================================================================
class      model (one sample)
=========  ==================================================================================
llm-7b     Llama-2-7B decoder: d 4096, 32 heads, FFN 11008 (SwiGLU), 32 layers, vocab 32000,
           4096 tokens
llm-70b    Llama-2-70B decoder: d 8192, 64 heads with 8 KV heads (GQA), FFN 28672, 80 layers,
           vocab 32000, 4096 tokens
bert       BERT-base encoder: d 768, 12 heads, FFN 3072 (GELU), 12 layers, vocab 30522,
           512 tokens
cnn        ResNet-50 (bottleneck blocks 3-4-6-3, BatchNorm), 224 x 224 px, 1000 classes
recsys     DLRM-like: 8 embedding-bag tables of 1M rows x 64 (20 ids each), 13 dense
           features, bottom MLP 512-256-64, pairwise dot interaction, top MLP 512-256-1
=========  ==================================================================================

As performance models do (Calculon, Vidur, the Megatron-LM paper's per-layer profiles), a
model is a chain of *components*, each repeated ``count`` times (a transformer: embedding
x1, block x layers, head x1; ResNet-50: stem, then per stage its first block and one of its
repeated blocks, head). :func:`profile_class` times forward + backward of one instance of
each component at full size (bf16 on an accelerator, fp32 on the CPU) and extrapolates:
seconds per step = sum of count x component time.

``scale`` < 1 shrinks every width (channels, hidden and FFN sizes, embedding rows and
dimensions) and the sequence length / image side by ``scale``, with floors (8 channels or
head dims, 32 px, 16 tokens); layer counts stay. A scaled profile measures a smaller model:
its rows have origin ``measured-scaled`` and their samples/s are extrapolated to full size
by the FLOP ratio (the scaled model's counted FLOPs over the class's), never presented as a
measurement of the full model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mixfleet.errors import ConfigError

__all__ = ["CLASS_NAMES", "Component", "ClassProfile", "components", "profile_class",
           "time_full_model", "time_fwd_bwd"]

CLASS_NAMES = ("cnn", "bert", "recsys", "llm-7b", "llm-70b")
Inputs = Callable[[int], tuple[torch.Tensor, ...]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Component:
    """One part of a model: how to build it, its input for a batch, how often it repeats."""

    name: str
    build: Callable[[], nn.Module]
    inputs: Inputs
    count: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassProfile:
    """Extrapolated step time of a class at one batch, and what it rests on."""

    workload: str
    batch: int
    scale: float
    step_s: float
    """Seconds per step of the whole model, extrapolated from the components."""
    component_s: dict[str, float]
    """Median forward + backward seconds of one instance of each component."""
    counts: dict[str, int]
    flops_per_sample: float
    """Counted FLOPs (forward + backward) of the model as built (scaled if scale < 1)."""
    peak_mem_bytes: int | None

    def note(self) -> str:
        parts = ", ".join(f"{n} {self.component_s[n] * 1e3:.3g} ms x{self.counts[n]}"
                          for n in self.component_s)
        return (f"per-component fwd+bwd at batch {self.batch}, scale {self.scale:g}: {parts};"
                f" step = sum = {self.step_s * 1e3:.4g} ms")


def _w(x: int, scale: float, floor: int = 8) -> int:
    return max(floor, int(round(x * scale)))


# -- transformers ----------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, d: int, heads: int, kv: int, ffn: int, causal: bool, swiglu: bool):
        super().__init__()
        self.h, self.kv, self.hd, self.causal, self.swiglu = heads, kv, d // heads, causal, swiglu
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, (heads + 2 * kv) * self.hd, bias=not swiglu)
        self.o = nn.Linear(heads * self.hd, d, bias=not swiglu)
        self.up = nn.Linear(d, ffn * (2 if swiglu else 1), bias=not swiglu)
        self.down = nn.Linear(ffn, d, bias=not swiglu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(self.n1(x)).split([self.h * self.hd, self.kv * self.hd,
                                              self.kv * self.hd], dim=-1)
        q = q.view(b, t, self.h, self.hd).transpose(1, 2)
        k = k.view(b, t, self.kv, self.hd).transpose(1, 2)
        v = v.view(b, t, self.kv, self.hd).transpose(1, 2)
        if self.kv != self.h:
            k = k.repeat_interleave(self.h // self.kv, dim=1)
            v = v.repeat_interleave(self.h // self.kv, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, -1))
        u = self.up(self.n2(x))
        if self.swiglu:
            g, u = u.chunk(2, dim=-1)
            u = F.silu(g) * u
        else:
            u = F.gelu(u)
        return x + self.down(u)


class _Head(nn.Module):
    def __init__(self, d: int, vocab: int):
        super().__init__()
        self.norm, self.out = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.out(self.norm(x)).float()
        target = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())


def _transformer(d: int, heads: int, kv: int, ffn: int, layers: int, vocab: int, seq: int,
                 causal: bool, swiglu: bool, scale: float, dev: str, dt: torch.dtype
                 ) -> list[Component]:
    hd = _w(d // heads, scale)
    heads_s = max(1, int(round(heads * scale))) if scale < 1 else heads
    kv_s = max(1, min(heads_s, int(round(kv * scale)))) if scale < 1 else kv
    while heads_s % kv_s:
        kv_s -= 1
    d_s, ffn_s = hd * heads_s, _w(ffn, scale)
    vocab_s, t = _w(vocab, scale), _w(seq, scale, 16)

    def ids(b: int) -> tuple[torch.Tensor, ...]:
        return (torch.randint(0, vocab_s, (b, t), device=dev),)

    def hidden(b: int) -> tuple[torch.Tensor, ...]:
        return (torch.randn(b, t, d_s, device=dev, dtype=dt, requires_grad=True),)

    return [Component(name="embedding", build=lambda: nn.Embedding(vocab_s, d_s),
                      inputs=ids, count=1),
            Component(name="block", build=lambda: _Block(d_s, heads_s, kv_s, ffn_s, causal,
                                                         swiglu), inputs=hidden,
                      count=layers),
            Component(name="head", build=lambda: _Head(d_s, vocab_s), inputs=hidden,
                      count=1)]


# -- ResNet-50 -------------------------------------------------------------------------
class _Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, stride: int):
        super().__init__()
        out = mid * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU(), nn.Conv2d(mid, out, 1, bias=False), nn.BatchNorm2d(out))
        self.skip: nn.Module = nn.Identity() if cin == out and stride == 1 else \
            nn.Sequential(nn.Conv2d(cin, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class _CnnHead(nn.Module):
    def __init__(self, c: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(x.mean(dim=(2, 3))).float()
        return F.cross_entropy(logits, torch.zeros(len(x), dtype=torch.long, device=x.device))


def _resnet50(scale: float, dev: str, dt: torch.dtype) -> list[Component]:
    side = _w(224, scale, 32)
    c0 = _w(64, scale)
    comps = [Component(name="stem", build=lambda: nn.Sequential(
        nn.Conv2d(3, c0, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(c0), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1)),
        inputs=lambda b: (torch.randn(b, 3, side, side, device=dev, dtype=dt),), count=1)]
    cin, hw = c0, math.ceil(math.ceil(side / 2) / 2)
    for i, (n, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
        mid, stride = _w(width, scale), 1 if i == 0 else 2

        def act(c: int, s: int) -> Inputs:
            return lambda b: (torch.randn(b, c, s, s, device=dev, dtype=dt,
                                          requires_grad=True),)
        comps.append(Component(name=f"stage{i + 1}.first",
                               build=functools.partial(_Bottleneck, cin, mid, stride),
                               inputs=act(cin, hw), count=1))
        hw = math.ceil(hw / stride)
        comps.append(Component(name=f"stage{i + 1}.block",
                               build=functools.partial(_Bottleneck, mid * 4, mid, 1),
                               inputs=act(mid * 4, hw), count=n - 1))
        cin = mid * 4
    comps.append(Component(name="head", build=functools.partial(_CnnHead, cin, 1000),
                           inputs=act(cin, hw), count=1))
    return comps


# -- DLRM-like ------------------------------------------------------------------------
class _Tables(nn.Module):
    def __init__(self, tables: int, rows: int, dim: int):
        super().__init__()
        self.t = nn.ModuleList(nn.EmbeddingBag(rows, dim, mode="sum") for _ in range(tables))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([t(ids[:, i]) for i, t in enumerate(self.t)], dim=1)


class _Top(nn.Module):
    def __init__(self, dim: int, tables: int):
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(13, 512), nn.ReLU(), nn.Linear(512, 256),
                                    nn.ReLU(), nn.Linear(256, dim), nn.ReLU())
        f = tables + 1
        self.top = nn.Sequential(nn.Linear(dim + f * (f - 1) // 2, 512), nn.ReLU(),
                                 nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 1))

    def forward(self, dense: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.bottom(dense)
        feats = torch.cat([z.unsqueeze(1), emb], dim=1)
        inter = feats @ feats.transpose(1, 2)
        i, j = torch.triu_indices(feats.shape[1], feats.shape[1], 1)
        out = self.top(torch.cat([z, inter[:, i, j]], dim=1)).float()
        return F.binary_cross_entropy_with_logits(out.squeeze(1), torch.ones(len(out),
                                                                            device=out.device))


def _dlrm(scale: float, dev: str, dt: torch.dtype) -> list[Component]:
    tables, rows, dim, ids = 8, _w(1_000_000, scale, 1000), _w(64, scale), 20
    return [Component(name="embeddings", build=lambda: _Tables(tables, rows, dim),
                      inputs=lambda b: (torch.randint(0, rows, (b, tables, ids), device=dev),),
                      count=1),
            Component(name="mlps", build=lambda: _Top(dim, tables),
                      inputs=lambda b: (torch.randn(b, 13, device=dev, dtype=dt),
                                        torch.randn(b, tables, dim, device=dev, dtype=dt,
                                                    requires_grad=True)), count=1)]


def components(workload: str, scale: float = 1.0, device: str = "cpu") -> list[Component]:
    """The components of a class at ``scale`` for ``device`` (bf16 off the CPU)."""
    if workload not in CLASS_NAMES:
        raise ConfigError(f"--class {workload!r} is not a planner class; use one of "
                          f"{', '.join(CLASS_NAMES)}")
    if not 0 < scale <= 1:
        raise ConfigError(f"--scale must be in (0, 1] (got {scale}); e.g. --scale 0.05 on "
                          f"the CPU")
    dt = torch.float32 if device == "cpu" else torch.bfloat16
    if workload == "cnn":
        return _resnet50(scale, device, dt)
    if workload == "recsys":
        return _dlrm(scale, device, dt)
    if workload == "bert":
        return _transformer(768, 12, 12, 3072, 12, 30522, 512, False, False, scale, device, dt)
    if workload == "llm-7b":
        return _transformer(4096, 32, 32, 11008, 32, 32000, 4096, True, True, scale, device,
                            dt)
    return _transformer(8192, 64, 8, 28672, 80, 32000, 4096, True, True, scale, device, dt)


def _sync(device: str) -> None:
    if device != "cpu":
        torch.accelerator.synchronize()


def _run(mod: nn.Module, x: tuple[torch.Tensor, ...]) -> None:
    out = mod(*x)
    out.float().sum().backward() if out.dim() else out.backward()


def time_fwd_bwd(mod: nn.Module, inputs: Inputs, batch: int, device: str, warmup: int,
                 steps: int, clock: Callable[[], float]) -> float:
    """The fastest of ``steps`` timed forward + backward passes of ``mod`` (after
    ``warmup``), each on fresh ``inputs(batch)``."""
    times = []
    for i in range(warmup + steps):
        x = inputs(batch)
        _sync(device)
        t0 = clock()
        _run(mod, x)
        _sync(device)
        if i >= warmup:
            times.append(clock() - t0)
        mod.zero_grad(set_to_none=True)
    return min(times)


def profile_class(workload: str, *, batch: int, scale: float = 1.0, device: str = "cpu",
                  warmup: int = 2, steps: int = 5,
                  clock: Callable[[], float] = time.perf_counter) -> ClassProfile:
    """Time forward + backward of each component once and extrapolate the step."""
    comps = components(workload, scale, device)
    dt = torch.float32 if device == "cpu" else torch.bfloat16
    accel = device != "cpu"
    if accel:
        torch.accelerator.reset_peak_memory_stats()
    per: dict[str, float] = {}
    flops = 0.0
    for c in comps:
        mod = c.build().to(device=device, dtype=dt).train()
        with FlopCounterMode(display=False) as fc:
            _run(mod, c.inputs(2))  # 2: BatchNorm needs more than one value per channel
        flops += fc.get_total_flops() / 2 * c.count
        mod.zero_grad(set_to_none=True)
        per[c.name] = time_fwd_bwd(mod, c.inputs, batch, device, warmup, steps, clock)
        del mod
    step = sum(per[c.name] * c.count for c in comps)
    peak = int(torch.accelerator.max_memory_allocated()) if accel else None
    return ClassProfile(workload=workload, batch=batch, scale=scale, step_s=step,
                        component_s=per, counts={c.name: c.count for c in comps},
                        flops_per_sample=flops, peak_mem_bytes=peak)


def time_full_model(workload: str, *, batch: int, scale: float = 1.0, device: str = "cpu",
                    warmup: int = 2, steps: int = 5,
                    clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of forward + backward of the whole model (every component instance
    chained), for checking the extrapolation (benchmarks/bench_class.py)."""
    comps = components(workload, scale, device)
    dt = torch.float32 if device == "cpu" else torch.bfloat16
    mods = nn.ModuleList(c.build() for c in comps for _ in range(c.count))
    mods.to(device=device, dtype=dt).train()
    first = comps[0].inputs

    if workload == "recsys":
        tables, top = mods[0], mods[1]
        dense = comps[1].inputs

        def chain(b: int) -> tuple[torch.Tensor, ...]:
            return first(b) + (dense(b)[0],)

        class Full(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.tables, self.top = tables, top

            def forward(self, ids: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
                return self.top(d, self.tables(ids))
        return time_fwd_bwd(Full(), chain, batch, device, warmup, steps, clock)

    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mods = mods

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for m in self.mods:
                x = m(x)
            return x
    return time_fwd_bwd(Seq(), first, batch, device, warmup, steps, clock)
