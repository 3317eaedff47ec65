"""The emulated step cost has the shape of real chips: fixed costs and an efficiency curve,
and the rebalance still finds the shares that equalize whole steps."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from mixfleet.emulate import EmulatedDevice, EmulationConfig, get_profile, load_profiles
from mixfleet.emulate.links import LinkPacer
from mixfleet.emulate.pricing import LinkPrices, StepCost
from mixfleet.train.mixed.rebalance import decide
from tests.emulate.test_emulated_chips import FakeClock

SHAPED = dataclasses.replace(get_profile("kunlun-p800"), step_fixed_ms=2.0,
                             microbatch_fixed_ms=0.5, saturate_samples=8.0,
                             efficiency_exponent=0.5)


def _device(speed: float = 1.0, profile=SHAPED) -> tuple[EmulatedDevice, FakeClock]:
    clock = FakeClock()
    dev = EmulatedDevice("kunlun-p800", speed=speed, profile=profile, clock=clock,
                         sleep=clock.sleep, config=EmulationConfig(headroom=1.0, faults=False))
    dev.calibrate(0.001)  # 1 ms per sample at speed 1, full efficiency
    return dev, clock


@pytest.mark.parametrize("speed", [1.0, 0.5])
def test_budget_is_the_sum_over_micro_batches_plus_the_step_fixed_cost(speed: float):
    """Micro-batches (8, 4): 2 ms + 2 x 0.5 ms fixed (not slowed by the speed) + 8 ms +
    4 ms / (4/8)^0.5, the work divided by the relative speed."""
    dev, clock = _device(speed)
    dev.step_begin()
    clock.now += 0.001
    dev.compute_done(work=12, micro=[8, 4])
    r = dev.step_end()
    work = (8 * 0.001 + 4 * 0.001 / 0.5 ** 0.5) / speed
    assert r.budget_s == pytest.approx(0.002 + 2 * 0.0005 + work)
    assert r.fixed_s == pytest.approx(0.003)
    assert clock.now == pytest.approx(r.budget_s)


def test_linear_profile_keeps_the_old_budget():
    """A profile made linear pays work x base / speed and nothing else."""
    dev, clock = _device(0.5, SHAPED.linear())
    dev.step_begin()
    dev.compute_done(work=12, micro=[8, 4])
    assert dev.step_end().budget_s == pytest.approx(12 * 0.001 / 0.5)


def test_smaller_micro_batches_cost_more_for_the_same_samples():
    """The same 16 samples cost more in four micro-batches of 4 than in two of 8."""
    dev, _ = _device()
    assert dev.budget(16, [4, 4, 4, 4]) > dev.budget(16, [8, 8]) > dev.budget(16, [16]) - 1e-12


def test_priced_transfers_are_added_to_the_budget_and_never_counted_as_compute():
    """A 10 ms priced transfer inside the compute, the other rank arriving 5 ms late, makes
    the step 10 ms longer (the wait is absorbed by the padding); the report counts 15 ms of
    comm and only the real compute as compute."""
    dev, clock = _device()
    pacer = LinkPacer.for_group(["kunlun-p800", "nvidia-h20"], None, LinkPrices(),
                                clock=clock, sleep=clock.sleep, exchange=lambda t: t + 0.005)
    dev.attach_links(pacer)
    nbytes = 0.010 * 32e9 - 2 * 15e-6 * 32e9  # 10 ms on the 32 GB/s bridge (ring of 2)
    dev.step_begin()
    clock.now += 0.002  # real compute
    pacer.settle("all_reduce", nbytes, pacer.arrive())
    dev.compute_done(work=8, micro=[8])
    r = dev.step_end()
    assert r.comm_s == pytest.approx(0.015) and r.comm_in_compute_s == pytest.approx(0.010)
    assert r.compute_s == pytest.approx(0.002)
    assert clock.now == pytest.approx(r.budget_s + 0.010)


def test_absolute_pace_counts_tokens():
    """Under an absolute pace (as_model) a micro-batch of 2 samples is 2 x seq_len tokens."""
    dev, _ = _device()
    cost = StepCost(step_fixed_s=0.01, microbatch_fixed_s=0.001, saturate=4096,
                    efficiency_exponent=0.5)
    dev.pace_absolute(1e-6, cost, per_sample=1024, labels={"emulated_as": "x"})
    dev.step_begin()
    dev.compute_done(work=3, micro=[2, 1])
    r = dev.step_end()
    assert r.budget_s == pytest.approx(cost.step_s([2048, 1024], 1e-6))
    assert dev.labels == {"emulated_as": "x"}


def _model(chips, speeds):
    """Per rank: its chip's profile step cost in samples (micro-batches of at most 16),
    seconds per sample = 1 ms / speed."""
    profs = load_profiles()
    costs = [profs[c].step_cost("samples") for c in chips]

    def sizes(x):
        return [16] * (x // 16) + ([x % 16] if x % 16 else [])

    def step(r, x):
        return costs[r].step_s(sizes(x), 0.001 / speeds[r])

    def fixed(r, x):
        return costs[r].step_fixed_s + costs[r].microbatch_fixed_s * len(sizes(x))

    return step, fixed


def test_rebalance_with_fixed_costs_converges_to_the_models_optimum_on_three_kinds():
    """H20, P800, 910B with their profiles' fixed costs and efficiency curve: uneven shares
    beat equal ones, and the rebalance (fed compute without fixed costs, as the controller
    does) reaches a whole-step time within 2% of the best integer split of B = 96."""
    chips, speeds, B = ["nvidia-h20", "kunlun-p800", "ascend-910b"], [0.43, 1.0, 0.9], 96
    step, fixed = _model(chips, speeds)

    def whole(shares):
        return max(step(r, x) for r, x in enumerate(shares))

    best = min(whole(s) for s in itertools.product(range(1, B), repeat=2)
               for s in [(s[0], s[1], B - s[0] - s[1])] if s[2] >= 1)
    equal = [32, 32, 32]
    shares = list(equal)
    for _ in range(12):
        compute = [step(r, x) - fixed(r, x) for r, x in enumerate(shares)]
        other = [fixed(r, x) for r, x in enumerate(shares)]
        d = decide(shares, compute, other, global_batch=B, hysteresis=0.0)
        shares = d.shares or shares
    assert whole(shares) < 0.8 * whole(equal)
    assert whole(shares) <= 1.02 * best, (shares, whole(shares), best)
