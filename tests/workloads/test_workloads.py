"""Built-in and user workloads: real data, FLOPs per sample, and their metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mixfleet.workloads import get_workload
from tests.conftest import EXAMPLES


def test_digits_flops_match_the_analytic_count() -> None:
    """digits-cnn's counted FLOPs per sample = 3 x the forward FLOPs (forward, gradient
    w.r.t. inputs, gradient w.r.t. weights), less conv1's input gradient (the images need
    none)."""
    w = get_workload("digits-cnn")
    conv1 = 2 * 8 * 8 * 16 * 9 * 1
    fwd = conv1 + 2 * 8 * 8 * 32 * 16 * 9 + 2 * 512 * 64 + 2 * 64 * 10
    assert w.flops_per_sample == pytest.approx(3 * fwd - conv1, rel=1e-9)
    assert len(w.train_set) + len(w.eval_set or ()) == 1797


def test_char_gpt_is_a_small_gpt_with_a_bits_per_char_metric() -> None:
    """char-gpt has 1-5M parameters; an untrained model scores about log2(vocab) bits/char."""
    w = get_workload("char-gpt", corpus_chars=200_000, eval_samples=32)
    assert 1_000_000 <= w.info["parameters"] <= 5_000_000
    torch.manual_seed(0)
    name, bpc = w.evaluate(w.build_model(), torch.device("cpu"))  # type: ignore[misc]
    assert name == "val_bits_per_char"
    assert abs(bpc - math.log2(w.info["vocab"])) < 1.5
    assert w.flops_per_sample and w.flops_per_sample > 6 * w.info["parameters"] * 64 * 0.9


def test_user_workload_trains_under_mixfleet(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """examples/custom.toml (a user's module:function beside it) trains and reports its
    metric, from any working directory."""
    from mixfleet.train.launch import launch, prepare_run, resolve_config

    monkeypatch.chdir(tmp_path)
    cfg = resolve_config(EXAMPLES / "custom.toml", ["launch.nproc=1", "launch.max_restarts=0"])
    s = launch(cfg, prepare_run(cfg, tmp_path / "run"), progress="plain")
    assert s["final_metric"]["name"] == "test_accuracy"
    assert s["final_metric"]["value"] >= 0.9


def test_digits_reaches_95_percent_with_the_example_config(tmp_path: Path) -> None:
    """The example config's budget trains digits-cnn past 95% test accuracy (1 rank)."""
    from mixfleet.train.launch import launch, prepare_run, resolve_config

    cfg = resolve_config(EXAMPLES / "digits-cnn.toml",
                         ["launch.nproc=1", "launch.max_restarts=0", "train.steps=1500"])
    s = launch(cfg, prepare_run(cfg, tmp_path / "run"), progress="plain")
    assert s["final_metric"]["value"] >= 0.95
