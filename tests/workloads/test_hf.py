"""`hf:<dir>`: transformers causal LMs from a local directory, offline, safetensors only."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from mixfleet.cli import main
from mixfleet.errors import WorkloadError
from mixfleet.workloads import get_workload
from mixfleet.workloads.hf import offline_transformers
from tests.conftest import EXAMPLES

OPTS = dict(seq_len=16, eval_samples=4, corpus_chars=20_000)


def _qwen(tmp_path: Path, *, weights: bool) -> tuple[Path, torch.nn.Module]:
    tf = offline_transformers()
    cfg = tf.Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64)
    torch.manual_seed(7)
    model = tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    d = tmp_path / "qwen"
    if weights:
        model.save_pretrained(d)
    else:
        cfg.save_pretrained(d)
    return d, model


def test_hf_loads_the_saved_safetensors_weights(tmp_path: Path) -> None:
    """With model.safetensors present, build_model returns exactly the saved weights (in
    float32); shard_units are the decoder layers; the hub is switched off."""
    d, model = _qwen(tmp_path, weights=True)
    w = get_workload(f"hf:{d}", **OPTS)
    built = w.build_model()
    ref = model.state_dict()
    got = built.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert all(p.dtype == torch.float32 for p in built.parameters())
    assert w.shard_units is not None
    units = w.shard_units(built)
    assert len(units) == 3 and all(type(u).__name__ == "Qwen2DecoderLayer" for u in units)
    assert w.info["model_type"] == "qwen2"
    assert w.info["parameters"] == sum(p.numel() for p in model.parameters())
    assert w.flops_per_sample and w.flops_per_sample >= 6 * 16 * sum(
        p.numel() for n, p in model.named_parameters() if "embed" not in n) * 0.99
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    x, y = w.train_set.take(torch.arange(2))
    loss = w.loss(built, (x, y))
    assert loss.shape == () and 2 * 4.0 < loss.item() < 2 * 8.0  # ~2 x ln(300)


def test_hf_from_config_alone_is_seeded(tmp_path: Path) -> None:
    """Without weights the model is a random init from the torch RNG: same seed, same
    weights; another seed, other weights."""
    d, _ = _qwen(tmp_path, weights=False)
    w = get_workload(f"hf:{d}", **OPTS)

    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return w.build_model().state_dict()

    a, b, c = build(1), build(1), build(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert w.info["weights"] == "random init (from_config)"


@pytest.mark.parametrize("case, needle", [
    ("missing", "does not exist"),
    ("no-config", "no config.json"),
    ("unknown-type", "'not-a-model' is not supported"),
    ("encoder", "'t5' has no causal-LM class"),
    ("remote", "remote code"),
    ("pickle", "pickled"),
    ("vocab", "vocab_size (100) is smaller"),
    ("seq", "max_position_embeddings"),
    ("heads", "cannot be loaded"),
    ("empty-name", "names no directory"),
])
def test_bad_hf_dirs_raise_with_the_fix(tmp_path: Path, case: str, needle: str) -> None:
    """A missing folder, no config.json, an unknown / non-causal / remote-code
    architecture, pickled weights, too small a vocab or too long a sequence: WorkloadError
    naming the problem."""
    d = tmp_path / "m"
    if case != "missing":
        d.mkdir()
    tf = offline_transformers()
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                 num_attention_heads=4, max_position_embeddings=64)
    if case == "unknown-type":
        (d / "config.json").write_text(json.dumps({"model_type": "not-a-model"}))
    elif case == "encoder":
        tf.T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=4).save_pretrained(d)
    elif case == "remote":
        (d / "config.json").write_text(json.dumps({"model_type": "mine",
                                                   "auto_map": {"AutoModel": "x.Y"}}))
    elif case in ("pickle", "vocab", "seq"):
        tf.LlamaConfig(vocab_size=100 if case == "vocab" else 300, **small).save_pretrained(d)
        if case == "pickle":
            (d / "pytorch_model.bin").write_bytes(b"not loaded")
    elif case == "heads":  # hidden size 30 is no multiple of 4 heads
        tf.LlamaConfig(**small).save_pretrained(d)
        raw = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**raw, "hidden_size": 30}))
    opts = {**OPTS, "seq_len": 100} if case == "seq" else OPTS
    with pytest.raises(WorkloadError, match=re.escape(needle)):
        get_workload("hf:" if case == "empty-name" else f"hf:{d}", **opts)


def test_train_cli_exits_2_for_a_missing_hf_dir(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`mixfleet train` with workload.name = "hf:<missing dir>" exits 2 with one message
    naming the field and the directory; no run directory is created."""
    run = tmp_path / "run"
    rc = main(["train", str(EXAMPLES / "llama-debug.toml"), "--run-dir", str(run),
               "--set", f'workload.name="hf:{tmp_path / "nowhere"}"',
               "--set", "workload.options={}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "workload.name" in err and "nowhere" in err and "does not exist" in err
    assert not run.exists()
