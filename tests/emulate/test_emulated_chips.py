"""Emulated chips: speed by padding to a budget, seeded heat and faults, bad input."""

from __future__ import annotations

import time

import pytest
import torch

from mixfleet.emulate import (
    EmulatedDevice,
    EmulatedFault,
    EmulationConfig,
    ThermalModel,
    get_profile,
    load_profiles,
    parse_emu_device,
    relative_speeds,
)
from mixfleet.errors import ConfigError, DeviceError
from tests.emulate.fakeclock import FakeClock


def run_steps(dev: EmulatedDevice, clock: FakeClock, n: int, compute_s: float = 0.01):
    reports = []
    for _ in range(n):
        dev.step_begin()
        clock.now += compute_s
        reports.append(dev.step_end())
    return reports


def fake_device(chip="kunlun-p800", speed=1.0, clock=None, profile=None, **cfg):
    """A device on a fake clock; by default with the chip's profile made linear (no fixed
    costs, no efficiency curve): these tests check the relative-speed budget alone."""
    clock = clock or FakeClock()
    cfg.setdefault("headroom", 1.0)
    dev = EmulatedDevice(chip, speed=speed, config=EmulationConfig(**cfg), clock=clock,
                         sleep=clock.sleep,
                         profile=profile or get_profile(chip).linear())
    return dev, clock


def test_half_speed_doubles_step_time_exactly_with_fake_clock():
    """Speed 0.5 pads a step to twice the calibrated time of speed 1.0."""
    d1, c1 = fake_device(speed=1.0, faults=False)
    d2, c2 = fake_device(speed=0.5, faults=False)
    t1 = [r.budget_s for r in run_steps(d1, c1, 5)]
    t2 = [r.budget_s for r in run_steps(d2, c2, 5)]
    assert t2[-1] == pytest.approx(2 * t1[-1])
    assert c2.now == pytest.approx(2 * c1.now)


def _work(a: torch.Tensor) -> torch.Tensor:
    for _ in range(8):
        a = torch.tanh(a @ a)
    return a


def _base_step_time(a: torch.Tensor) -> float:
    """The host's own time for one step of the work (the calibration both speeds share)."""
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        _work(a)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


HEADROOM = 4.0  # steps long beside the delay of a wake-up on a busy machine (~10 ms)


def _paired_ratio(a: torch.Tensor, base: float, pairs: int = 15, tries: int = 60) -> float:
    """The median, over pairs of adjacent steps (one on each device, the order alternating),
    of the step time at speed 0.5 over the one at speed 1.0: both steps of a pair meet the
    same load of a shared machine. A pair counts when both steps computed within their
    budget (padded); a step whose computation a burst of load pushed past its budget has
    nothing left to pace."""
    devs = {}
    for speed in (0.5, 1.0):
        devs[speed] = EmulatedDevice("nvidia-h20", speed=speed,
                                     config=EmulationConfig(faults=False, headroom=HEADROOM),
                                     profile=get_profile("nvidia-h20").linear())  # linear budget
        devs[speed].calibrate(base)
    ratios = []
    for i in range(tries):
        t: dict[float, float] = {}
        padded = True
        for speed in ((0.5, 1.0) if i % 2 == 0 else (1.0, 0.5)):
            t0 = time.perf_counter()
            with devs[speed].step():
                _work(a)
            t[speed] = time.perf_counter() - t0
            report = devs[speed].last_report
            padded = padded and report is not None and report.pad_s > 0
        if padded:
            ratios.append(t[0.5] / t[1.0])
        if len(ratios) == pairs:
            return sorted(ratios)[len(ratios) // 2]
    raise AssertionError(f"only {len(ratios)} of {tries} pairs of steps computed within "
                         f"their budget (the machine's load exceeds the headroom)")


def test_half_speed_doubles_real_step_time_within_10_percent():
    """On real CPU compute, speed 0.5 gives 2.0x +/- 10% the step time of speed 1.0 (the
    median of adjacent pairs of padded steps, budgets of 4x the computation)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            torch.manual_seed(0)
            a = torch.randn(256, 256) / 16  # the same work every step
            ratio = _paired_ratio(a, _base_step_time(a))
    finally:
        torch.set_num_threads(threads)
    assert 1.8 <= ratio <= 2.2, ratio


def test_thermal_model_is_deterministic_for_a_seed():
    """Same seed and steps give the same trajectory and faults; another seed differs."""
    prof = get_profile("kunlun-p800")

    def trace(seed):
        m = ThermalModel(prof, seed=seed)
        return [(s.temp_c, s.throttled, s.fault) for s in (m.advance(5.0) for _ in range(300))]

    assert trace(7) == trace(7)
    assert trace(7) != trace(8)


def test_thermal_state_dict_resumes_the_same_trajectory():
    """Restoring a state_dict continues exactly as the uninterrupted model."""
    prof = get_profile("ascend-910b")
    a = ThermalModel(prof, seed=3)
    for _ in range(50):
        a.advance(2.0)
    b = ThermalModel(prof, seed=99)
    b.load_state_dict(a.state_dict())
    assert [a.advance(2.0) for _ in range(50)] == [b.advance(2.0) for _ in range(50)]


def test_throttle_episode_shows_in_telemetry_and_step_times():
    """Past the throttle point the clock drops, the step budget grows by 1/throttle_clock,
    and the emulated telemetry reports it; events record start and end."""
    from mixfleet.telemetry.emulated import EmulatedReader

    dev, clock = fake_device("kunlun-p800", virtual_step_s=5.0, faults=False)
    reader = EmulatedReader([dev])
    reports, samples = [], []
    for _ in range(200):
        reports.extend(run_steps(dev, clock, 1))
        samples.extend(reader.read())
    prof = dev.profile
    normal = [r.budget_s for r in reports[5:] if not r.throttled]
    slow = [r.budget_s for r in reports if r.throttled]
    assert slow and normal
    assert min(slow) == pytest.approx(max(normal) / prof.throttle_clock)
    hot = [s for s in samples if "emulated-thermal" in s.throttle]
    assert hot and all(s.clock_mhz == pytest.approx(prof.base_clock_mhz * prof.throttle_clock)
                       for s in hot)
    assert all(s.emulated for s in samples)
    kinds = [e["kind"] for e in dev.drain_events()]
    assert "throttle-start" in kinds and "throttle-end" in kinds


def test_fault_raises_and_device_stays_dead_and_repeats_for_a_seed():
    """A crash near the limit raises EmulatedFault at the same step for the same seed, and
    a restarted device (attempt + 1) does not replay it."""
    def first_fault(**cfg):
        dev, clock = fake_device("kunlun-p800", virtual_step_s=20.0, **cfg)
        for _ in range(20000):
            try:
                run_steps(dev, clock, 1)
            except EmulatedFault as e:
                with pytest.raises(EmulatedFault):
                    dev.step_begin()
                return e.step, e.kind
        return None

    a = first_fault(seed=1)
    assert a is not None
    assert first_fault(seed=1) == a
    assert first_fault(seed=1, attempt=1) != a


def test_relative_speed_from_catalog_and_table():
    """Speeds are relative to the fastest chip; a measured table overrides the catalog."""
    from mixfleet.bench.table import ThroughputRow

    sp = relative_speeds(["nvidia-h20", "nvidia-h100"])
    assert sp["nvidia-h100"] == 1.0 and sp["nvidia-h20"] == pytest.approx(148 / 989)

    def row(chip, sps):
        return ThroughputRow(workload="w", chip=chip, batch=8, samples_per_s=sps,
                             step_p50_s=None, step_p90_s=None, mfu=None, peak_mem_bytes=None,
                             host="h", torch_version="t", date="d", emulated=False,
                             origin="measured")
    table = [row("nvidia-h20", 300.0), row("nvidia-h100", 600.0)]
    sp = relative_speeds(["nvidia-h20", "nvidia-h100"], table=table, workload="w")
    assert sp["nvidia-h20"] == pytest.approx(0.5)


@pytest.mark.parametrize("device", ["kunlun-p800", "emu:nvidia-h9000", "emu:"])
def test_bad_device_string_is_a_device_error(device):
    """A non-emu string or unknown chip id raises DeviceError (a ConfigError) naming it."""
    with pytest.raises(DeviceError, match="emu:"):
        parse_emu_device(device)


@pytest.mark.parametrize("text,match", [
    ("[default\n", "not valid TOML"),
    ("[default]\nthrottle_c = 99.0\nlimit_c = 95.0\n", "throttle_c"),
    ("[default]\nthrottle_clock = 1.5\n", "throttle_clock"),
    ("[chips.nvidia-h9000]\ntau_s = 1.0\n", "names no catalog chip"),
    ("[default]\ntau_secs = 1.0\n", "unknown config key"),
    ("[default]\ntau_s = \"fast\"\n", "must be a number"),
])
def test_malformed_profile_file_is_a_config_error(tmp_path, text, match):
    """A malformed profile file raises ConfigError naming the field and the fix."""
    p = tmp_path / "profiles.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_profiles(p)


def test_bad_emulation_config_is_a_config_error():
    """Invalid [emulate] values raise ConfigError with the fix."""
    with pytest.raises(ConfigError, match="emulate.virtual_step_s"):
        EmulationConfig(virtual_step_s=0)
    with pytest.raises(ConfigError, match="relative speed"):
        EmulatedDevice("nvidia-h20", speed=2.0)


def test_pace_first_computes_at_the_end_of_the_same_budget():
    """With a known budget, pace_first waits until 2x the recent compute + 2 ms before the
    budget ends, the real compute runs there, and the step still takes exactly its budget
    (the same as computing first); before the first measured step it does not wait."""
    first, clock = fake_device(speed=0.5, faults=False)
    first.calibrate(0.01)  # budget per unit of work: 0.01 / 0.5 = 0.02 s
    late, clock2 = fake_device(speed=0.5, faults=False)
    late.calibrate(0.01)
    for i in range(3):
        first.step_begin()
        clock.now += 0.004  # the real compute
        first.compute_done(work=4)
        r1 = first.step_end()
        t0 = clock2.now
        late.step_begin()
        late.pace_first(work=4)
        waited = clock2.now - t0
        clock2.now += 0.004
        late.compute_done(work=4)
        r2 = late.step_end()
        assert waited == pytest.approx(0.0 if i == 0 else 0.08 - 2 * 0.004 - 0.002)
        assert (r2.budget_s, r2.compute_s) == pytest.approx((r1.budget_s, r1.compute_s))
        assert clock2.now - t0 == pytest.approx(0.08)
    assert clock.now == pytest.approx(clock2.now)
