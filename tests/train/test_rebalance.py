"""Online rebalance: shares follow the measured compute times, with hysteresis; a chip that
throttles gets a smaller share within K steps and its share recovers after the episode."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixfleet.train.mixed.rebalance import decide
from mixfleet.train.mixed.shares import shares_from_speeds
from tests.train.helpers import events, train_cli


def _times(shares: list[int], speeds: list[float]) -> list[float]:
    return [s / v for s, v in zip(shares, speeds, strict=True)]


def test_decide_moves_equal_shares_to_proportional() -> None:
    """From equal shares and compute times of speeds (1, 0.6, 0.35): shares by speed."""
    speeds = [1000.0, 600.0, 350.0]
    d = decide([22, 21, 21], _times([22, 21, 21], speeds), [0.0] * 3, global_batch=64)
    assert d.shares == [33, 20, 11] and d.gain > 0.4
    assert d.speeds == pytest.approx(speeds)


def test_hysteresis_keeps_shares_when_the_gain_is_small() -> None:
    """A predicted gain below the hysteresis changes nothing; above it, shares change."""
    speeds = [1000.0, 950.0]
    times = _times([32, 32], speeds)
    assert decide([32, 32], times, [0.0, 0.0], global_batch=64, hysteresis=0.05).shares is None
    assert decide([32, 32], times, [0.0, 0.0], global_batch=64, hysteresis=0.0).shares == \
        [33, 31]


def test_share_independent_time_is_accounted_for() -> None:
    """A rank with a fixed per-step cost (o_r) gets fewer samples than speed alone says."""
    d = decide([32, 32], [0.032, 0.032], [0.0, 0.016], global_batch=64, hysteresis=0.0)
    assert d.shares is not None and d.shares[0] > d.shares[1]


def test_caps_bound_the_new_shares() -> None:
    """Rebalanced shares never exceed a rank's cap (micro-batch x max_accum)."""
    d = decide([32, 32], _times([32, 32], [1000.0, 100.0]), [0.0, 0.0], global_batch=64,
               caps=[40, None])
    assert d.shares == [40, 24]


def test_simulated_throttle_episode_shrinks_then_restores_the_share() -> None:
    """A loop of windows of K steps: rank 0 runs at half clock in steps 40-80; its share
    drops at the first decision after the start and is back after the end."""
    K, B = 10, 64
    base = [1.0, 0.6, 0.35]
    shares = shares_from_speeds(base, B)
    history = {}
    for step in range(K, 140, K):
        window_start = step - K
        speeds = [v * (0.5 if i == 0 and 40 <= window_start < 80 else 1.0)
                  for i, v in enumerate(base)]
        d = decide(shares, _times(shares, speeds), [0.0] * 3, global_batch=B)
        shares = d.shares or shares
        history[step] = list(shares)
    assert history[30] == [33, 20, 11]
    assert history[50][0] < 25  # within K steps of the start (step 40)
    assert history[90] == [33, 20, 11]  # within K steps of the end (step 80)


MIXED = ('ranks=[{device="emu:nvidia-h20", speed=1.0}, {device="emu:ascend-910b", '
         'speed=0.5}]')


@pytest.mark.slow  # two torchrun ranks: ~15-30 s on 2 shared cores
def test_throttled_emulated_chip_gets_a_smaller_share_then_recovers(tmp_path: Path) -> None:
    """Two emulated ranks, rebalance every K=5 steps; rank 0's chip runs at 40% clock in
    steps 20-40: its share drops by step 25 + K and is back up by step 40 + 2K."""
    K = 5
    d = tmp_path / "run"
    train_cli(d, MIXED, "train.steps=60", 'shares.mode="measured"',
              f"shares.rebalance_every={K}", "emulate.sample_s=0.0008",
              "checkpoint.interval=1000", "train.log_every=100",
              "health.straggler_action='report'",
              "faults.inject=['throttle@rank=0,step=20,steps=20,clock=40']", nproc=2)
    changes = [(e["step"], e["new"]) for e in events(d, "shares_changed")]
    assert events(d, "fault_injected")[0]["kind"] == "throttle"
    before = [s for step, s in changes if step <= 20]
    assert before and before[-1][0] > 32, changes  # the fast chip first got more
    high = before[-1][0]
    during = [s for step, s in changes if 20 < step <= 20 + 2 * K]
    assert during and during[-1][0] < high - 5, changes
    after = [s for step, s in changes if 40 < step <= 40 + 2 * K]
    assert after and after[-1][0] >= high - 2, changes
