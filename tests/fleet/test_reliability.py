import math

import pytest

from mixfleet.errors import ConfigError
from mixfleet.fleet.reliability import (
    availability,
    default_profile,
    young_daly_interval,
)


def test_nvidia_default_mtbf_is_llama3_rate():
    """The Nvidia default MTBF is Llama 3's 419 interruptions over 54 days x 16,384 H100."""
    assert default_profile(True).mtbf_h == pytest.approx(16384 * 54 * 24 / 419)
    assert default_profile(True).mtbf_h == pytest.approx(50677.0, abs=0.1)


def test_other_default_mtbf_is_ant_group_rate():
    """The non-Nvidia default MTBF is 8 % of cards failing per month."""
    assert default_profile(False).mtbf_h == pytest.approx(730.5 / 0.08)


def test_every_default_figure_has_a_source():
    """Each default figure names where it comes from."""
    for nv in (True, False):
        p = default_profile(nv)
        for name in ("mtbf_h", "throttle_per_h", "throttle_s", "throttle_slowdown",
                     "restart_s", "checkpoint_s"):
            assert p.sources[name]


def test_young_daly_and_availability_match_hand_computation():
    """tau = sqrt(2 C M); availability = 1 - C/tau - (tau/2 + R)/M."""
    p = default_profile(True).with_overrides({"mtbf_h": 100.0, "checkpoint_s": 60.0,
                                              "restart_s": 300.0}, "test")
    m = 100 * 3600 / 4
    tau = math.sqrt(2 * 60 * m)
    assert young_daly_interval(60, m) == pytest.approx(tau)
    assert availability(p, 4) == pytest.approx(1 - 60 / tau - (tau / 2 + 300) / m)


def test_override_unknown_key_is_rejected_with_known_keys():
    """An unknown reliability key names the key and lists the known ones."""
    with pytest.raises(ConfigError, match="mtbf_hours.*known: .*mtbf_h"):
        default_profile(True).with_overrides({"mtbf_hours": 5}, "fleet.toml: pool #1")


def test_negative_figure_is_rejected():
    """A negative restart cost is bad input."""
    with pytest.raises(ConfigError, match="restart_s"):
        default_profile(True).with_overrides({"restart_s": -1}, "x")


def test_throttle_factor_hand_computation():
    """Kept throughput = 1 - P(any device throttled) x slowdown."""
    p = default_profile(False)
    busy = 1 - math.exp(-8 * p.throttle_per_h * p.throttle_s / 3600)
    assert p.throttle_factor(8) == pytest.approx(1 - busy * 0.30)
