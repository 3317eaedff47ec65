"""LLM workloads under `mixfleet train` (the `dp` trainer): 1 and 2 ranks agree on token
data, the example config runs, and an `hf:` model trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixfleet.workloads.prepare import PrepareConfig, prepare_tokens
from tests.conftest import EXAMPLES
from tests.train.helpers import losses, train_cli

LLAMA = EXAMPLES / "llama-debug.toml"
TINY = ("workload.options.dim=32", "workload.options.layers=2", "workload.options.heads=4",
        "workload.options.kv_heads=2", "workload.options.ffn_dim=64",
        "workload.options.seq_len=16", "workload.options.eval_samples=8")
STEPS = 30


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("llmdata")
    (d / "t.txt").write_text("The quality of mercy is not strain'd;\nIt droppeth as the gentle "
                             "rain from heaven\nUpon the place beneath. " * 60)
    prepare_tokens(PrepareConfig(inputs=(str(d / "t.txt"),), out=str(d / "tok"), vocab=320))
    return d / "tok"


def test_two_ranks_dp_equal_one_rank_on_token_data(tmp_path: Path, token_dir: Path) -> None:
    """A tiny llama on prepared token data: 2 ranks (dp) give the losses of 1 rank up to
    float rounding (rel. 1e-3 over 30 AdamW steps), and both report val_loss."""
    sets = (*TINY, f'workload.options.data="{token_dir}"', f"train.steps={STEPS}",
            "train.global_batch=8", "train.warmup_steps=2", "checkpoint.interval=1000",
            "train.log_every=10", "launch.max_restarts=0")
    s1 = train_cli(tmp_path / "one", *sets, nproc=1, config=LLAMA)
    s2 = train_cli(tmp_path / "two", *sets, nproc=2, config=LLAMA)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    for step in one:
        assert one[step] == pytest.approx(two[step], rel=1e-3), step
    assert one[STEPS] < one[1] - 0.5  # it learns
    for s in (s1, s2):
        assert s["workload"] == "llama" and s["final_metric"]["name"] == "val_loss"
    assert s1["final_metric"]["value"] == pytest.approx(s2["final_metric"]["value"], rel=1e-3)


def test_hf_model_trains_under_mixfleet(tmp_path: Path) -> None:
    """An `hf:` Llama built by the test from a transformers config (no download) trains on
    one rank: the loss falls and the final metric is val_loss."""
    from mixfleet.train.launch import launch, prepare_run, resolve_config
    from mixfleet.workloads.hf import offline_transformers

    tf = offline_transformers()
    cfg = tf.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64)
    model_dir = tmp_path / "model"
    cfg.save_pretrained(model_dir)
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == "llama"
    run = resolve_config(LLAMA, [f'workload.name="hf:{model_dir}"',
                                 "workload.options={seq_len=16, eval_samples=8, "
                                 "corpus_chars=40000}",
                                 "train.steps=12", "train.warmup_steps=2", "train.global_batch=8",
                                 "checkpoint.interval=1000", "launch.nproc=1",
                                 "launch.max_restarts=0", "train.log_every=5"])
    s = launch(run, prepare_run(run, tmp_path / "run"), progress="plain")
    curve = losses(tmp_path / "run")
    assert s["final_metric"]["name"] == "val_loss"
    assert curve[12] < curve[1] - 0.5


def test_example_config_resolves_and_its_workload_builds() -> None:
    """examples/llama-debug.toml is a valid config as shipped: the debug llama on the
    byte-level Shakespeare corpus, with more samples than a global batch."""
    from mixfleet.train.launch import resolve_config
    from mixfleet.workloads import get_workload

    cfg = resolve_config(LLAMA, [])
    assert cfg.workload.name == "llama" and "data" not in cfg.workload.options
    w = get_workload(cfg.workload.name, **cfg.workload.options)
    assert w.info["preset"] == "debug" and w.info["vocab"] == 256
    assert len(w.train_set) > 100 * cfg.train.global_batch
    assert 5_000_000 < w.info["parameters"] < 15_000_000
