"""The calibrated budget of an emulated chip follows the host's uncontended step time: a
calibration taken under contention (a fleet starting, a restart) does not pad every later
step, and later contention never raises the budget."""

from __future__ import annotations

import pytest

from mixfleet.emulate import EmulatedDevice, EmulationConfig
from tests.emulate.fakeclock import FakeClock


def device(clock: FakeClock) -> EmulatedDevice:
    return EmulatedDevice("nvidia-h20", config=EmulationConfig(headroom=1.5, faults=False),
                          clock=clock, sleep=clock.sleep)


def budget_of(base_s: float) -> float:
    """The step budget of a chip whose base is ``base_s`` (step costs included)."""
    dev = device(FakeClock())
    dev.calibrate(base_s)
    return dev.budget(1.0)


def budgets(dev: EmulatedDevice, clock: FakeClock, computes: list[float]) -> list[float]:
    out = []
    for c in computes:
        dev.step_begin()
        clock.now += c
        out.append(dev.step_end().budget_s)
    return out


def test_calibration_under_contention_is_lowered_once_the_host_is_free():
    """Five steps at 0.58 s (the demo's first job while the others started) then 0.017 s:
    after five uncontended steps the budget is that of 0.017 s, not of 0.58 s."""
    clock = FakeClock()
    dev = device(clock)
    b = budgets(dev, clock, [0.58] * 5 + [0.017] * 10)
    assert b[4] == pytest.approx(budget_of(0.58))
    assert b[-1] == pytest.approx(budget_of(0.017))


def test_later_contention_never_raises_the_budget():
    """After a clean calibration, slow steps (another job starting) only eat into the
    padding: the budget stays that of the calibration."""
    clock = FakeClock()
    dev = device(clock)
    b = budgets(dev, clock, [0.02] * 5 + [0.5] * 10 + [0.025] * 10)
    assert b[5:] == [pytest.approx(budget_of(0.02))] * 20


def test_budget_after_restart_equals_the_one_before():
    """A restarted worker restores its chip's state: its budget equals the one before the
    kill, though the restart's first steps run under contention."""
    clock = FakeClock()
    dev = device(clock)
    before = budgets(dev, clock, [0.02] * 8)[-1]
    again = device(clock)
    again.load_state_dict(dev.state_dict())
    after = budgets(again, clock, [0.4, 0.3, 0.02, 0.02, 0.02, 0.02])
    assert after == [pytest.approx(before)] * 6


def test_a_fixed_pace_is_never_recalibrated():
    """calibrate() (the fixed sample_s pace) keeps its base whatever the steps take."""
    clock = FakeClock()
    dev = device(clock)
    dev.calibrate(0.1)
    assert budgets(dev, clock, [0.01] * 12) == [pytest.approx(budget_of(0.1))] * 12
