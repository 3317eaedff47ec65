"""Health checks as objects: each observes a (fake) step outcome and returns typed
actions; time comes from a fake clock, signals from a fake reduction over ranks. No
processes, no training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mixfleet.train.clock import FakeClock
from mixfleet.train.health.actions import (
    Checkpoint,
    Drain,
    Pause,
    Rollback,
    Shed,
    SparserSnapshots,
    apply_actions,
)
from mixfleet.train.health.base import StepOutcome
from mixfleet.train.health.checks import (
    THERMAL_QUIET_STEPS,
    GuardCheck,
    HealthCheck,
    SnapshotPacing,
    StragglerCheck,
    ThermalCheck,
)
from mixfleet.train.health.detectors import (
    HANG_EXIT_CODE,
    StepGuard,
    StragglerDetector,
    ThermalGuard,
    Watchdog,
)
from mixfleet.train.health.signals import ControlSignals


class Ranks:
    """``world`` ranks' signal registries and a fake reduction that sums their regions."""

    def __init__(self, world: int, checks: list[list[HealthCheck]]) -> None:
        self.world, self.checks = world, checks
        self.sig = [ControlSignals(world=world, rank=r) for r in range(world)]
        for r in range(world):
            self.sig[r].register("compute_s", per_rank=True)
            for c in checks[r]:
                c.register(self.sig[r])
        self.regions = [torch.zeros(self.sig[0].size + 1, dtype=torch.float64)
                        for _ in range(world)]
        for s, reg in zip(self.sig, self.regions, strict=True):
            s.bind(reg)
        self.step = 0

    def run(self, compute_s: list[float] | None = None, loss: float = 1.0,
            committed: bool = True) -> list[list[object]]:
        """One step: every rank publishes, the regions are summed, every rank observes."""
        self.step += 1
        for r in range(self.world):
            self.regions[r].zero_()
            self.sig[r].set("compute_s", (compute_s or [0.01] * self.world)[r])
            for c in self.checks[r]:
                c.publish(self.sig[r])
            self.sig[r].publish()
        total = sum(self.regions)
        total[-1] = loss
        out = []
        for r in range(self.world):
            self.regions[r].copy_(total)
            self.sig[r].collect()
            o = StepOutcome(step=self.step, reduced=True, committed=committed, loss=loss,
                            reason=None if committed else "bad", compute_s=0.01,
                            signals=self.sig[r], step_s=0.1)
            out.append([a for c in self.checks[r] for a in c.observe(o)])
        return out


def test_watchdog_fires_only_after_its_bound(tmp_path: Path) -> None:
    """The bound is max(factor x median step, floor); the watchdog dumps stacks and exits
    with HANG_EXIT_CODE only past it, and never while paused."""
    clock, exits, hangs = FakeClock(), [], []
    w = Watchdog(factor=20, floor_s=3.0, stacks_dir=tmp_path, rank=1, on_hang=hangs.append,
                 clock=clock.monotonic, exit=exits.append)
    for s in range(1, 11):
        clock.advance(0.5)
        w.beat(s)
    assert w.bound() == 10.0  # 20 x 0.5 s > the 3 s floor
    clock.advance(9.9)
    assert not w.check() and not exits
    w.pause()
    clock.advance(100)
    assert not w.check()
    w.resume()
    clock.advance(10.1)
    assert w.check() and exits == [HANG_EXIT_CODE]
    assert hangs[0]["rank"] == 1 and hangs[0]["step"] == 10
    assert "no step for 10.1s" in (tmp_path / "rank1.txt").read_text()


def test_watchdog_paused_block_resumes_even_when_it_raises(tmp_path: Path) -> None:
    """Inside ``paused()`` no deadline holds; leaving it (by an exception too) restarts the
    clock, so the bound counts from there."""
    clock, exits = FakeClock(), []
    w = Watchdog(factor=20, floor_s=3.0, stacks_dir=tmp_path, rank=0, on_hang=lambda h: None,
                 clock=clock.monotonic, exit=exits.append)
    w.beat(1)
    with pytest.raises(RuntimeError), w.paused():
        clock.advance(100)
        assert not w.check()
        raise RuntimeError("cooling failed")
    clock.advance(2.9)
    assert not w.check() and not exits  # 2.9 s since the pause ended, under the 3 s floor
    clock.advance(0.2)
    assert w.check() and exits == [HANG_EXIT_CODE]


def test_nan_and_spike_verdicts_then_rollback_after_three() -> None:
    """A non-finite loss or gradient and a norm spike are not committed; three in a row
    ask for a rollback of exactly those steps."""
    g = StepGuard(nan_guard=True, spike_factor=3.0, rollback_after=3)
    for _ in range(20):
        assert g.verdict(1.0, 1.0) is None
    assert g.verdict(1.0, 2.9) is None
    assert "gradient norm" in (g.verdict(1.0, 10.0) or "")
    assert g.verdict(float("nan"), 1.0) == "non-finite loss or gradient"
    assert g.verdict(1.0, float("inf")) is not None
    assert g.should_roll_back
    check = GuardCheck(StepGuard(nan_guard=True, spike_factor=0, rollback_after=3))
    ranks = Ranks(1, [[check]])
    acts = []
    for step in range(1, 7):
        bad = step >= 4
        if bad:
            check.guard.verdict(float("nan"), 1.0)
        acts = ranks.run(committed=not bad)[0]
        if step < 6:
            assert acts == []
    assert acts == [Rollback((4, 5, 6))]


def test_straggler_windows_report_then_exclude() -> None:
    """A rank 3x slower than the others' median for ``windows`` windows in a row is
    flagged at the end of the second window — excluded (drained) only when asked."""
    def check(exclude: bool, events: list) -> StragglerCheck:
        return StragglerCheck(StragglerDetector(world=3, window=4, factor=2.0, windows=2),
                              weights=lambda: [1, 1, 1], exclude=exclude,
                              emit=lambda ev, **k: events.append((ev, k)), rank=0)
    ev_report: list = []
    ev_exclude: list = []
    report = Ranks(3, [[check(False, ev_report)], [], []])
    exclude = Ranks(3, [[check(True, ev_exclude)], [], []])
    for step in range(1, 9):
        a = report.run(compute_s=[0.01, 0.01, 0.03])[0]
        b = exclude.run(compute_s=[0.01, 0.01, 0.03])[0]
        assert a == []
        assert b == ([Drain(2, "straggler")] if step == 8 else [])
    assert [k["rank"] for ev, k in ev_report if ev == "straggler"] == [2]
    evenly = Ranks(3, [[check(True, [])], [], []])
    assert all(evenly.run(compute_s=[0.01, 0.012, 0.011]) == [[], [], []] for _ in range(12))


def _thermal(temp: list[float], action: str = "cool", can_shed: bool = False,
             rank: int = 0, events: list | None = None) -> ThermalCheck:
    guard = ThermalGuard(warn_c=85, critical_c=95, resume_c=77, read=lambda: temp[0])
    out = [] if events is None else events
    return ThermalCheck(guard, action=action, can_shed=can_shed,
                        emit=lambda ev, **k: out.append((ev, k)), rank=rank)


def test_thermal_cool_checkpoints_every_rank_and_pauses_only_the_hot_one() -> None:
    """Past warn_c the hot rank pauses at once; its checkpoint request rides the next
    reduction so every rank checkpoints at the same step; the cool rank never pauses;
    within the quiet period no second action."""
    hot, cool = [80.0], [60.0]
    ranks = Ranks(2, [[_thermal(cool)], [_thermal(hot, rank=1)]])
    assert ranks.run() == [[], []]
    hot[0] = 88.0
    acts = ranks.run()
    assert acts[0] == [] and [type(a) for a in acts[1]] == [Pause]
    acts = ranks.run()  # the request went out with this step's reduction
    assert acts[0] == [Checkpoint("heat")] and acts[1] == [Checkpoint("heat")]
    for _ in range(THERMAL_QUIET_STEPS - 2):
        assert ranks.run() == [[], []]
    acts = ranks.run()  # still hot after the quiet period: act again
    assert [type(a) for a in acts[1]] == [Pause]


def test_thermal_critical_or_drain_drains_that_rank_on_every_rank() -> None:
    """Critical heat (or thermal_action = drain) drains the hot rank: every rank gets the
    same Drain at the same step; the shed action without uneven shares pauses instead."""
    hot = [96.0]
    ranks = Ranks(3, [[_thermal([50.0])], [_thermal([50.0], rank=1)], [_thermal(hot, rank=2)]])
    assert ranks.run() == [[], [], []]
    acts = ranks.run()
    assert all(Drain(2, "heat") in a and Checkpoint("heat") in a for a in acts)
    warm = [86.0]
    r2 = Ranks(2, [[_thermal([50.0], action="drain")], [_thermal(warm, action="drain", rank=1)]])
    r2.run()
    assert all(Drain(1, "heat") in a for a in r2.run())
    ev: list = []
    shed = Ranks(2, [[_thermal([50.0], "shed", True)], [_thermal(warm, "shed", True, 1, ev)]])
    shed.run()
    assert all(Shed(1) in a for a in shed.run())
    no_shed = Ranks(1, [[_thermal(warm, "shed", False, 0, ev)]])
    assert [type(a) for a in no_shed.run()[0]] == [Pause]
    assert "paused instead" in ev[-1][1]["note"]


def test_cooling_backs_off_on_the_clock_until_below_resume() -> None:
    """cool() sleeps 0.05 s doubling to 1 s until the chip is below resume_c, on the
    clock it is given (no real time passes)."""
    clock = FakeClock()
    guard = ThermalGuard(warn_c=85, critical_c=95, resume_c=77, read=lambda: 76.0)
    guard.inject(15.0)  # 100 C: 24 C above the reading, ~6.4 s of rest to fall below 77
    waited = guard.cool(clock)
    assert guard.temperature() < 77 and abs(waited - sum(clock.slept)) < 1e-9
    assert clock.slept[:5] == [0.05, 0.1, 0.2, 0.4, 0.8] and max(clock.slept) == 1.0


def test_snapshot_pacing_moves_every_rank_to_the_interval_that_fits() -> None:
    """The first snapshot (it allocates the buffer) is not counted; after the next 4, a
    rank whose snapshots cost over 1% of the steps they cover asks for ceil(cost / (1% x
    step)); every rank gets that interval at the same step (the largest asked for); then
    windows of 10; cheap snapshots and max_fraction 0 change nothing."""
    interval = [1]
    costly = SnapshotPacing(interval=lambda: interval[0], max_fraction=0.01)
    cheap = SnapshotPacing(interval=lambda: interval[0], max_fraction=0.01)
    ranks = Ranks(2, [[costly], [cheap]])
    ranks.run()  # step times of 0.1 s (the Ranks default) are recorded
    costly.record(1.0)  # the first snapshot: allocation, not counted
    cheap.record(0.0001)
    for _ in range(3):
        costly.record(0.0042)  # 4.2% of a 0.1 s step: 5 steps bring it under 1%
        cheap.record(0.0001)
    assert ranks.run() == [[], []]  # not a full window yet
    costly.record(0.0042)
    cheap.record(0.0001)
    assert ranks.run() == [[SparserSnapshots(5)], [SparserSnapshots(5)]]
    assert ranks.run() == [[], []]
    interval[0] = 5
    for _ in range(9):
        costly.record(0.0084)  # twice as costly now: 9 steps
        cheap.record(0.0001)
    assert ranks.run() == [[], []]  # later windows hold 10 snapshots
    costly.record(0.0084)
    cheap.record(0.0001)
    assert ranks.run() == [[SparserSnapshots(9)], [SparserSnapshots(9)]]
    off = SnapshotPacing(interval=lambda: 1, max_fraction=0.0)
    solo = Ranks(1, [[off]])
    solo.run()
    for _ in range(11):
        off.record(1.0)
    assert solo.run() == [[]]
    capped = SnapshotPacing(interval=lambda: 1)
    solo = Ranks(1, [[capped]])
    solo.run()
    for _ in range(5):
        capped.record(10.0)
    assert solo.run() == [[SparserSnapshots(64)]]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):  # noqa: ANN204 - records any public method call
        return lambda *a, **k: self.calls.append((name, *a))


def test_actions_are_applied_in_one_fixed_order_and_a_drain_stops() -> None:
    """apply_actions calls the target's public methods in a fixed order whatever order
    the checks returned them in; a Drain is returned and nothing after it runs."""
    t = Recorder()
    guard = ThermalGuard(warn_c=85, critical_c=95, resume_c=77, read=lambda: None)
    out = apply_actions(t, [Pause(guard), Rollback((3,)), Shed(1), Checkpoint("heat")])
    assert out is None
    assert [c[0] for c in t.calls] == ["checkpoint_now", "shed", "rollback", "pause_until_cool"]
    t2 = Recorder()
    out = apply_actions(t2, [Rollback((3,)), Drain(1, "heat"), Checkpoint("x")])
    assert out == Drain(1, "heat") and [c[0] for c in t2.calls] == ["checkpoint_now", "drain"]
