"""The llama workload: published shapes, the same function as transformers' reference
models, FLOPs, the loss contract and the byte-level fallback data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mixfleet.errors import WorkloadError
from mixfleet.workloads import get_workload
from mixfleet.workloads.base import count_train_flops
from mixfleet.workloads.chargpt import load_corpus
from mixfleet.workloads.llama import (
    Llama,
    analytic_flops_per_token,
    meta_flops_per_sample,
    parameter_count,
    preset_config,
)
from mixfleet.workloads.lm import lm_loss

# Parameter counts published with the models (model cards / safetensors index metadata).
PUBLISHED = {
    "llama3-8b": 8_030_261_248,   # Meta-Llama-3-8B: "8.03B"
    "qwen2.5-7b": 7_615_616_512,  # Qwen2.5-7B: "7.61B"
    "llama3-1b": 1_235_814_400,   # Llama-3.2-1B: "1.23B"
    "qwen2.5-0.5b": 494_032_768,  # Qwen2.5-0.5B: "0.49B"
}

TINY = dict(dim=64, layers=2, heads=8, kv_heads=2, ffn_dim=96, seq_len=24)


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_presets_on_meta_have_the_published_parameter_count(preset: str) -> None:
    """A preset built on the meta device has its model's published parameter count (to 1%),
    and parameter_count() agrees with the built model exactly."""
    cfg = preset_config(preset)
    with torch.device("meta"):
        model = Llama(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n == pytest.approx(PUBLISHED[preset], rel=0.01)
    assert parameter_count(cfg) == n
    assert all(p.device.type == "meta" for p in model.parameters())


def test_debug_preset_is_about_ten_million_parameters() -> None:
    """The debug preset with an 8,192-token vocabulary has 5-15M parameters."""
    assert 5_000_000 <= parameter_count(preset_config("debug", vocab=8192)) <= 15_000_000


def _hf_reference(cfg, model: Llama) -> nn.Module:  # type: ignore[no-untyped-def]
    """transformers' LlamaForCausalLM / Qwen2ForCausalLM with ``model``'s weights."""
    from mixfleet.workloads.hf import offline_transformers

    tf = offline_transformers()
    kw = dict(vocab_size=cfg.vocab, hidden_size=cfg.dim, intermediate_size=cfg.ffn_dim,
              num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
              num_key_value_heads=cfg.kv_heads, rms_norm_eps=cfg.norm_eps,
              rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_embeddings,
              max_position_embeddings=256)
    hf_cfg = tf.Qwen2Config(**kw) if cfg.qkv_bias else tf.LlamaConfig(**kw, mlp_bias=False,
                                                                     attention_bias=False)
    ref = tf.AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32)
    names = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
             "head.weight": "lm_head.weight"}
    sub = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
           "attn.": "self_attn.", "ffn.": "mlp."}
    state = {}
    for k, v in model.state_dict().items():
        if k.startswith("layers."):
            hk = "model." + k
            for a, b in sub.items():
                hk = hk.replace(a, b)
        else:
            hk = names[k]
        state[hk] = v
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    return ref.eval()


@pytest.mark.parametrize("variant", [
    dict(qkv_bias=False, tie_embeddings=True, rope_theta=5000.0, norm_eps=1e-5),
    dict(qkv_bias=True, tie_embeddings=False, rope_theta=1e6, norm_eps=1e-6),
], ids=["llama", "qwen2"])
def test_logits_equal_transformers_reference_model(variant: dict) -> None:  # type: ignore[type-arg]
    """With the same weights, the project's decoder gives the logits of transformers'
    LlamaForCausalLM (and Qwen2ForCausalLM with qkv_bias) to 1e-4: RMSNorm, rotary
    embeddings, SwiGLU, grouped-query causal attention and the (un)tied head all match."""
    cfg = preset_config("debug", vocab=300, **TINY, **variant)
    torch.manual_seed(1)
    model = Llama(cfg).eval()
    if cfg.qkv_bias:  # biases start at zero: make them matter
        with torch.no_grad():
            for b in model.layers[0].attn.q_proj.bias, model.layers[1].attn.v_proj.bias:
                b.normal_(std=0.5)
    ref = _hf_reference(cfg, model)
    x = torch.randint(0, cfg.vocab, (3, cfg.seq_len))
    with torch.no_grad():
        ours, theirs = model(x), ref(x).logits
    assert ours.shape == (3, cfg.seq_len, cfg.vocab)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()
    assert ours.std() > 0.1  # not a comparison of near-zero outputs


def test_attention_is_causal() -> None:
    """Changing the tokens after position t leaves the logits up to t unchanged."""
    torch.manual_seed(0)
    model = Llama(preset_config("debug", vocab=100, **TINY)).eval()
    x = torch.randint(0, 100, (2, 24))
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 1) % 100
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:], atol=1e-3)


def test_init_is_a_function_of_the_torch_seed() -> None:
    """Two builds after the same seed are equal, also when one is built on the meta device
    then materialized (to_empty + init_weights); another seed gives other weights."""
    cfg = preset_config("debug", vocab=100, **TINY)

    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return Llama(cfg).state_dict()

    a, b, c = build(3), build(3), build(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layers.0.attn.q_proj.weight"], c["layers.0.attn.q_proj.weight"])
    torch.manual_seed(3)
    torch.rand(5)  # RNG draws in between do not matter: the seed does
    with torch.device("meta"):
        lazy = Llama(cfg)
    lazy.to_empty(device="cpu")
    lazy.init_weights()
    m = lazy.state_dict()
    assert m.keys() == a.keys() and all(torch.equal(a[k], m[k]) for k in a)
    assert lazy.head.weight is lazy.embed.weight  # still tied
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in Llama(cfg).modules())


def test_flops_counted_on_meta_equal_the_analytic_formula() -> None:
    """count_train_flops on a meta-device model (debug and the 8B shape) equals
    6 x matmul parameters + 12 x layers x dim x seq_len per token, and on a real CPU model
    its matmul part alone is 6 x matmul parameters per token."""
    for preset, t in (("debug", 128), ("llama3-8b", 256)):
        cfg = preset_config(preset, vocab=8192 if preset == "debug" else None, seq_len=t)
        counted = meta_flops_per_sample(lambda c=cfg: Llama(c), t)
        assert counted == pytest.approx(analytic_flops_per_token(cfg) * t, rel=1e-9)
    cfg = preset_config("debug", vocab=100, **TINY)
    torch.manual_seed(0)
    x = torch.randint(0, 100, (2, cfg.seq_len))
    from torch.utils.flop_counter import FlopCounterMode

    fc = FlopCounterMode(display=False)
    with fc:
        lm_loss(Llama(cfg), (x, x)).backward()
    mm = fc.get_flop_counts()["Global"][torch.ops.aten.mm]
    d, kv, L = cfg.dim, cfg.kv_heads * cfg.head_dim, cfg.layers
    matmul_params = L * (2 * d * d + 2 * d * kv + 3 * d * cfg.ffn_dim) + cfg.vocab * d
    assert mm == 6 * matmul_params * 2 * cfg.seq_len
    assert count_train_flops(Llama(cfg), lm_loss, (x, x)) >= mm / 2


def test_llama_workload_on_bytes_is_the_shakespeare_text() -> None:
    """Without data, sample i is bytes [i(T+1), (i+1)(T+1)) of the plays' UTF-8 text:
    inputs its first T, targets its last T; the untrained loss is about ln(256)."""
    w = get_workload("llama", **TINY, corpus_chars=50_000, eval_samples=4)
    t = TINY["seq_len"]
    raw = torch.tensor(list(load_corpus(50_000).encode("utf-8")))
    x, y = w.train_set.take(torch.tensor([0, 5]))
    assert torch.equal(x[1], raw[5 * (t + 1): 5 * (t + 1) + t])
    assert torch.equal(y[1], raw[5 * (t + 1) + 1: 6 * (t + 1)])
    assert x.dtype == torch.int64 and w.info["vocab"] == 256
    assert len(w.train_set) == int(0.9 * len(raw)) // (t + 1)
    torch.manual_seed(0)
    model = w.build_model()
    name, val = w.evaluate(model, torch.device("cpu"))  # type: ignore[misc]
    assert name == "val_loss" and abs(val - torch.log(torch.tensor(256.0)).item()) < 0.5
    assert w.shard_units is not None
    units = w.shard_units(model)
    assert units == list(model.layers) and len(units) == TINY["layers"]
    assert isinstance(model.layers, nn.ModuleList)
    assert w.flops_per_sample == pytest.approx(
        analytic_flops_per_token(preset_config("debug", vocab=256, **TINY)) * t)


def test_loss_is_the_sum_of_per_sample_losses_and_shares_sum_to_the_batch_gradient() -> None:
    """loss(batch) = sum of each sample's own loss; gradients of shares (5, 3) scaled by
    1/B add up to the gradient of the batch of 8 (the trainer's contract)."""
    w = get_workload("llama", **TINY, corpus_chars=50_000, eval_samples=4)
    torch.manual_seed(0)
    model = w.build_model()
    idx = torch.arange(8) * 7
    batch = w.train_set.take(idx)
    each = sum(w.loss(model, w.train_set.take(idx[i:i + 1])) for i in range(8))
    assert torch.allclose(w.loss(model, batch), each, rtol=1e-5)

    def grads() -> torch.Tensor:
        return torch.cat([p.grad.flatten() for p in model.parameters()])  # type: ignore[union-attr]

    model.zero_grad()
    (w.loss(model, batch) / 8).backward()
    full = grads().clone()
    total = torch.zeros_like(full)
    for lo, hi in ((0, 5), (5, 8)):
        model.zero_grad()
        (w.loss(model, w.train_set.take(idx[lo:hi])) / 8).backward()
        total += grads()
    assert torch.allclose(total, full, rtol=0, atol=1e-6)
    assert full.abs().max() > 1e-3


@pytest.mark.parametrize("options, needle", [
    (dict(preset="gpt5"), "preset"),
    (dict(dim=100, heads=8), "dim"),
    (dict(heads=8, kv_heads=3), "kv_heads"),
    (dict(seq_len=0), "seq_len"),
    (dict(vocab=100), "vocab"),  # smaller than the data's 256 byte values
    (dict(metric="accuracy"), "metric"),
    (dict(eval_samples=0), "eval_samples"),
    (dict(depth=3), "depth"),
    (dict(seq_len=10**8, corpus_chars=1000), "seq_len"),
])
def test_bad_llama_options_name_the_field(options: dict, needle: str) -> None:  # type: ignore[type-arg]
    """A bad option raises WorkloadError (exit 2 in the CLI) naming the option."""
    with pytest.raises(WorkloadError, match=needle):
        get_workload("llama", **{**dict(corpus_chars=20_000), **options})
