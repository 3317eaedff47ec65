"""A Llama/Qwen-style decoder written in the project: RMSNorm, rotary embeddings, SwiGLU,
grouped-query attention (``kv_heads``), tied or untied embeddings, and ``qkv_bias`` for
the Qwen variant. Attention is :func:`torch.nn.functional.scaled_dot_product_attention`
with ``is_causal=True``. No dropout, no BatchNorm: a sample's gradient never depends on
the other samples of its batch.

Sizes come from a named preset (:data:`PRESETS`: a ~9M ``debug`` model up to the published
Llama-3-8B and Qwen2.5-7B shapes) with any field overridden. The transformer blocks are
``model.layers`` (an ``nn.ModuleList``), so a sharding strategy can wrap each block.
Building a big preset under ``torch.device("meta")`` allocates nothing;
:meth:`Llama.init_weights` (re)initializes every parameter from the torch seed after
``to_empty``, to the same values as a direct build.

FLOPs (:func:`analytic_flops_per_token`) follow the PaLM appendix-B convention used for
MFU: ``6 N`` for the matmul parameters ``N`` (the input embedding is a lookup and does not
count; a tied embedding counts once, as the output head) plus ``12 L d_attn T`` for the
attention scores and their weighted sum, without a discount for the causal mask.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mixfleet.config import Section, field, from_dict
from mixfleet.errors import ConfigError, WorkloadError
from mixfleet.workloads.base import Workload, count_train_flops
from mixfleet.workloads.lm import check_common, lm_evaluate, lm_loss, load_lm_data

__all__ = ["LlamaConfig", "Llama", "PRESETS", "preset_config", "parameter_count",
           "analytic_flops_per_token", "make_llama", "meta_flops_per_sample"]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise WorkloadError(msg)


@dataclasses.dataclass(kw_only=True, frozen=True)
class LlamaConfig(Section, section="workload.options"):
    """The shape of a decoder (``[workload.options]`` of ``llama`` fill it in)."""

    dim: int = field(help="model width (hidden size)", ge=1, example=256)
    layers: int = field(help="transformer blocks", ge=1, example=4)
    heads: int = field(help="query heads; dim must be a multiple of heads", ge=1, example=4)
    kv_heads: int = field(help="key/value heads (grouped-query attention); divides heads",
                          ge=1, example=4)
    ffn_dim: int = field(help="SwiGLU hidden width", ge=1, example=768)
    vocab: int = field(help="vocabulary size (embedding rows)", ge=1, example=8192)
    seq_len: int = field(help="tokens per training sequence", ge=1, example=256)
    rope_theta: float = field(10000.0, help="rotary embedding base", gt=0)
    norm_eps: float = field(1e-5, help="RMSNorm epsilon", gt=0)
    tie_embeddings: bool = field(False, help="output head shares the input embedding")
    qkv_bias: bool = field(False, help="biases on the q, k, v projections (Qwen2)")

    def __post_init__(self) -> None:
        _check(self.dim % self.heads == 0, f"workload.options.dim ({self.dim}) must be a "
               f"multiple of heads ({self.heads}); e.g. dim = {self.heads * 64}")
        _check((self.dim // self.heads) % 2 == 0, f"workload.options.dim / heads "
               f"({self.dim // self.heads}) must be even for rotary embeddings; change dim "
               f"or heads")
        _check(self.heads % self.kv_heads == 0, f"workload.options.kv_heads "
               f"({self.kv_heads}) must divide heads ({self.heads}); e.g. kv_heads = "
               f"{self.heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


@dataclasses.dataclass(frozen=True)
class _Preset:
    dim: int
    layers: int
    heads: int
    kv_heads: int
    ffn_dim: int
    vocab: int | None  # None: the data's vocabulary
    seq_len: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    qkv_bias: bool = False
    published: int | None = None  # published parameter count, for the shape's check
    note: str = ""


PRESETS: dict[str, _Preset] = {
    # ~9M with an 8,192-token BPE vocabulary; the vocab follows the data.
    "debug": _Preset(256, 8, 8, 4, 768, None, 256, tie_embeddings=True,
                     note="~9M (vocab 8,192), trains on a CPU"),
    "qwen2.5-0.5b": _Preset(896, 24, 14, 2, 4864, 151936, 2048, 1e6, 1e-6, True, True,
                            published=494_032_768, note="Qwen2.5-0.5B shape"),
    "llama3-1b": _Preset(2048, 16, 32, 8, 8192, 128256, 2048, 500000.0, 1e-5, True,
                         published=1_235_814_400, note="Llama-3.2-1B shape"),
    "qwen2.5-1.5b": _Preset(1536, 28, 12, 2, 8960, 151936, 2048, 1e6, 1e-6, True, True,
                            published=1_543_714_304, note="Qwen2.5-1.5B shape"),
    "qwen2.5-7b": _Preset(3584, 28, 28, 4, 18944, 152064, 4096, 1e6, 1e-6, False, True,
                          published=7_615_616_512, note="Qwen2.5-7B shape"),
    "llama3-8b": _Preset(4096, 32, 32, 8, 14336, 128256, 8192, 500000.0, 1e-5,
                         published=8_030_261_248, note="Llama-3-8B shape"),
}

_FIELDS = ("dim", "layers", "heads", "kv_heads", "ffn_dim", "vocab", "seq_len", "rope_theta",
           "norm_eps", "tie_embeddings", "qkv_bias")


def preset_config(preset: str = "debug", *, data_vocab: int | None = None,
                  **overrides: object) -> LlamaConfig:
    """The preset's shape with ``overrides`` (None values are ignored). ``data_vocab`` is
    the vocabulary of the training data: the model's vocab when the preset leaves it open,
    and a lower bound on any vocab given."""
    if preset not in PRESETS:
        raise WorkloadError(f"workload.options.preset {preset!r} is unknown; use one of "
                            f"{', '.join(PRESETS)}")
    unknown = set(overrides) - set(_FIELDS)
    if unknown:
        raise WorkloadError(f"llama has no option {sorted(unknown)[0]!r}; known: "
                            f"{', '.join(_FIELDS)}")
    p = PRESETS[preset]
    vals = {k: getattr(p, k) for k in _FIELDS}
    vals.update({k: v for k, v in overrides.items() if v is not None})
    if vals["vocab"] is None:
        vals["vocab"] = data_vocab if data_vocab is not None else 8192
    vocab = vals["vocab"]
    if data_vocab is not None and isinstance(vocab, int) and vocab < data_vocab:
        raise WorkloadError(f"workload.options.vocab ({vocab}) is smaller than the data's "
                            f"vocabulary ({data_vocab}); set vocab >= {data_vocab} or leave "
                            f"it out")
    try:  # the typed loader: types and the bounds declared on LlamaConfig's fields
        return from_dict(LlamaConfig, vals, prefix="workload.options")
    except ConfigError as e:
        raise e if isinstance(e, WorkloadError) else WorkloadError(str(e)) from None


def parameter_count(cfg: LlamaConfig) -> int:
    """Parameters of :class:`Llama` for ``cfg`` (computed, nothing is built)."""
    d, kv = cfg.dim, cfg.kv_heads * cfg.head_dim
    attn = d * d + 2 * d * kv + d * d + ((d + 2 * kv) if cfg.qkv_bias else 0)
    block = attn + 3 * d * cfg.ffn_dim + 2 * d
    emb = cfg.vocab * d * (1 if cfg.tie_embeddings else 2)
    return cfg.layers * block + emb + d


def analytic_flops_per_token(cfg: LlamaConfig, seq_len: int | None = None) -> float:
    """Training FLOPs (forward + backward) per token: 6 x matmul parameters + attention
    (12 x layers x dim x seq_len; PaLM's convention, no causal discount)."""
    t = cfg.seq_len if seq_len is None else seq_len
    d, kv = cfg.dim, cfg.kv_heads * cfg.head_dim
    matmul = cfg.layers * (2 * d * d + 2 * d * kv + 3 * d * cfg.ffn_dim) + cfg.vocab * d
    return 6.0 * matmul + 12.0 * cfg.layers * cfg.heads * cfg.head_dim * t


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


def rotary(seq_len: int, head_dim: int, theta: float, device: torch.device,
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (seq_len, head_dim) in the half-split layout (as in Llama)."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32)
                          / head_dim)
    ang = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv)
    ang = torch.cat((ang, ang), dim=-1)
    return ang.cos(), ang.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return (x * cos + torch.cat((-x2, x1), dim=-1) * sin).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.hd = cfg.heads, cfg.kv_heads, cfg.head_dim
        kv = cfg.kv_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.dim, kv, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.dim, kv, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           enable_gqa=self.kv_heads != self.heads)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """One transformer block (pre-norm attention and SwiGLU, each with a residual)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = FeedForward(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.ffn(self.ffn_norm(x))


class Llama(nn.Module):
    """Token ids (batch, seq) -> logits (batch, seq, vocab)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, 0.02) weights, output projections scaled by 1/sqrt(2 x layers), zero
        biases, unit norms. Drawn in module order from a CPU generator seeded with
        ``seed`` (default: the torch seed, ``torch.initial_seed()``), then copied to the
        parameters' device: the same weights on every device, and the same whether the
        model was built directly or on the meta device then ``to_empty`` + this (which
        also ties the head to the embedding again). No-op on the meta device."""
        if self.embed.weight.device.type == "meta":
            return
        if self.cfg.tie_embeddings:  # to_empty() unties them
            self.head.weight = self.embed.weight
        g = torch.Generator().manual_seed(torch.initial_seed() if seed is None else seed)

        def normal(t: torch.Tensor, std: float) -> None:
            t.copy_(torch.empty(t.shape, dtype=torch.float32).normal_(0.0, std, generator=g))

        out_std = 0.02 / math.sqrt(2 * self.cfg.layers)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                if m is self.head and self.cfg.tie_embeddings:
                    continue
                normal(m.weight, out_std if name.endswith(("o_proj", "down_proj")) else 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                normal(m.weight, 0.02)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        cos, sin = rotary(idx.shape[1], self.cfg.head_dim, self.cfg.rope_theta, idx.device)
        x = self.embed(idx)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for block in self.layers:
            x = block(x, cos, sin)
        return self.head(self.norm(x))


def meta_flops_per_sample(build: Callable[[], nn.Module], seq_len: int) -> float:
    """FLOPs per sample counted by :func:`count_train_flops` on a model built on the meta
    device (no memory, any size). There attention runs as plain matmuls, so the count
    includes it (as the analytic formula does)."""
    with torch.device("meta"):
        model = build()
        x = torch.zeros(1, seq_len, dtype=torch.long)
    return count_train_flops(model, lm_loss, (x, x))


def _blocks(model: nn.Module) -> list[nn.Module]:
    layers = model.layers
    assert isinstance(layers, nn.ModuleList)
    return list(layers)


def make_llama(*, preset: str = "debug", data: str | None = None, dim: int | None = None,
               layers: int | None = None, heads: int | None = None,
               kv_heads: int | None = None, ffn_dim: int | None = None,
               vocab: int | None = None, seq_len: int | None = None,
               rope_theta: float | None = None, norm_eps: float | None = None,
               tie_embeddings: bool | None = None, qkv_bias: bool | None = None,
               eval_samples: int = 64, metric: str = "val_loss", corpus_chars: int = 10**9,
               verify_data: bool = True) -> Workload:
    """The ``llama`` workload: a preset shape with overrides, on token data (``data``) or
    the byte-level Shakespeare corpus (see :mod:`mixfleet.workloads.lm`)."""
    check_common(eval_samples=eval_samples, metric=metric)
    if preset not in PRESETS:
        raise WorkloadError(f"workload.options.preset {preset!r} is unknown; use one of "
                            f"{', '.join(PRESETS)}")
    t = PRESETS[preset].seq_len if seq_len is None else seq_len
    if not isinstance(t, int) or isinstance(t, bool) or t < 1:
        raise WorkloadError(f"workload.options.seq_len must be an integer >= 1 (got {t!r}); "
                            f"e.g. seq_len = 256")
    lm = load_lm_data(data, t, corpus_chars=corpus_chars, verify=verify_data)
    cfg = preset_config(preset, data_vocab=lm.vocab, dim=dim, layers=layers, heads=heads,
                        kv_heads=kv_heads, ffn_dim=ffn_dim, vocab=vocab, seq_len=t,
                        rope_theta=rope_theta, norm_eps=norm_eps,
                        tie_embeddings=tie_embeddings, qkv_bias=qkv_bias)
    ev = lm.val
    return Workload(
        name="llama", build_model=lambda: Llama(cfg), train_set=lm.train, eval_set=ev,
        loss=lm_loss, evaluate=lm_evaluate(ev, eval_samples, metric) if ev else None,
        flops_per_sample=meta_flops_per_sample(lambda: Llama(cfg), t),
        shard_units=_blocks,
        info={**lm.info, "preset": preset, "parameters": parameter_count(cfg),
              "vocab": cfg.vocab, "data_vocab": lm.vocab, "config": dataclasses.asdict(cfg),
              "analytic_flops_per_token": analytic_flops_per_token(cfg)},
    )
