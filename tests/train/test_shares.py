"""Shares of the global batch: integers summing to B, proportional to speed, within the
memory caps; micro-batches (gradient accumulation) give the same gradient."""

from __future__ import annotations

import pytest
import torch

from mixfleet.errors import ConfigError
from mixfleet.train.launch import resolve_config
from mixfleet.train.mixed.rebalance import initial_plan
from mixfleet.train.mixed.shares import (
    largest_remainder,
    memory_micro_cap,
    micro_batches,
    rank_speeds,
    shares_from_speeds,
    step_time,
)
from mixfleet.workloads import get_workload
from tests.train.helpers import DIGITS


@pytest.mark.parametrize("B", [3, 7, 64, 96, 128, 1000])
def test_shares_are_integers_summing_to_B_and_proportional(B: int) -> None:
    """Largest remainder: sum is B, each >= 1, each within 1 of its proportional value."""
    speeds = [1.0, 0.6, 0.35]
    out = shares_from_speeds(speeds, B)
    assert sum(out) == B and all(s >= 1 for s in out)
    for s, v in zip(out, speeds, strict=True):
        assert abs(s - B * v / sum(speeds)) < 1 + 1e-9 or s == 1


def test_equal_weights_match_the_samplers_equal_shares() -> None:
    """Equal weights give the first ranks the extra samples, as equal_shares does."""
    from mixfleet.train.sampler import equal_shares

    for B, n in [(64, 3), (10, 4), (7, 7)]:
        assert largest_remainder([1.0] * n, B) == equal_shares(B, n)


def test_caps_are_respected_and_the_rest_spread() -> None:
    """A capped rank takes at most its cap; the excess goes to the others by speed."""
    assert largest_remainder([1.0, 1.0, 1.0], 90, caps=[10, None, None]) == [10, 40, 40]
    assert largest_remainder([3.0, 1.0], 64, caps=[None, 8]) == [56, 8]
    with pytest.raises(ConfigError, match="max_accum"):
        largest_remainder([1.0, 1.0], 64, caps=[16, 16])


def test_a_very_slow_rank_keeps_one_sample() -> None:
    """Every rank keeps at least one sample so that it can still be measured."""
    assert largest_remainder([1.0, 1e-6], 64) == [63, 1]


def test_step_time_is_the_slowest_rank() -> None:
    """The predicted step time is the largest share/speed; proportional shares minimize it."""
    speeds = [1.0, 0.6, 0.35]
    assert step_time([22, 21, 21], speeds) == pytest.approx(21 / 0.35)
    assert step_time(shares_from_speeds(speeds, 64), speeds) < 34.0


def test_memory_caps_the_micro_batch_and_accumulation_caps_the_share() -> None:
    """A chip's HBM over the memory per sample gives its micro-batch; x max_accum its cap."""
    assert memory_micro_cap(64.0, 1024.0) == 51  # 64 GiB x 0.8 / 1 GiB
    assert memory_micro_cap(None, 1024.0) == 0
    cfg = resolve_config(DIGITS, [
        'ranks=[{device="emu:nvidia-h20"}, {device="emu:ascend-910b", max_micro_batch=4}]',
        "shares.max_accum=2", "train.global_batch=64"])
    shares, micros, caps = initial_plan(cfg, [r.device for r in cfg.ranks], "digits-cnn")
    assert micros == [0, 4] and caps == [None, 8] and shares == [56, 8]


def test_speed_mode_uses_overrides_then_catalog() -> None:
    """mode = speed: per-rank overrides win, emulated chips fall back to the catalog."""
    sp = rank_speeds(["emu:nvidia-h20", "emu:kunlun-p800", "cpu"], overrides=[1.0, None, 0.5])
    assert sp[0] == 1.0 and 0 < sp[1] <= 1.0 and sp[2] == 0.5
    cfg = resolve_config(DIGITS, [
        'ranks=[{device="emu:nvidia-h20", speed=1.0}, {device="emu:kunlun-p800", speed=0.6},'
        ' {device="emu:ascend-910b", speed=0.35}]', 'shares.mode="speed"'])
    assert cfg.launch.nproc == 3  # the ranks define nproc
    shares, _, _ = initial_plan(cfg, [r.device for r in cfg.ranks], "digits-cnn")
    assert shares == [33, 20, 11]


def test_micro_batches_sum_to_the_same_gradient() -> None:
    """Accumulating micro-batches of 5 gives the gradient of the whole share (atol 1e-6)."""
    w = get_workload("digits-cnn")
    torch.manual_seed(0)
    model = w.build_model()
    idx = torch.arange(23)
    chunks = micro_batches(idx, 5)
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 3] and micro_batches(idx, 0) == [idx]
    (w.loss(model, w.train_set.take(idx)) / 64).backward()
    full = torch.cat([p.grad.flatten() for p in model.parameters()]).clone()  # type: ignore[union-attr]
    model.zero_grad()
    for c in chunks:
        (w.loss(model, w.train_set.take(c)) / 64).backward()
    acc = torch.cat([p.grad.flatten() for p in model.parameters()])  # type: ignore[union-attr]
    assert torch.allclose(acc, full, rtol=0, atol=1e-6) and full.abs().max() > 1e-4


@pytest.mark.parametrize("bad, fix", [
    ('ranks=[{device="emu:nvidia-h20", speed=1.5}]', r"ranks\[0\]\.speed must be in \(0, 1\]"),
    ('ranks=[{device="emu:nope"}]', "unknown chip"),
    ('shares.mode="measured"', "rebalance_every"),
    ("shares.hysteresis=1.5", "shares.hysteresis"),
    ("shares.max_accum=0", "shares.max_accum"),
    ("emulate.sample_s=0", "emulate.sample_s"),
])
def test_bad_hetero_config_names_field_and_fix(bad: str, fix: str) -> None:
    """Each bad [[ranks]]/[shares]/[emulate] value raises one message naming the field."""
    from mixfleet.errors import MixfleetError

    with pytest.raises(MixfleetError, match=fix):
        resolve_config(DIGITS, [bad])
