"""An emulated pipeline chip's chunks (emulate/stagepace.py): each forward and backward of
a micro-batch lasts its paced time (plus the step's own costs once per step), slowed by
the clock factor; the busy time is the chip's modeled time."""

from __future__ import annotations

from typing import Any

import pytest

from mixfleet.emulate.device import EmulatedDevice
from mixfleet.emulate.stagepace import ChunkPace, ChunkPacer
from tests.emulate.fakeclock import FakeClock


class Stage:
    """A stand-in PipelineStage whose chunks take ``real`` seconds of the fake clock."""

    def __init__(self, clock: FakeClock, real: float) -> None:
        self.clock, self.real = clock, real

    def forward_one_chunk(self, *a: Any, **k: Any) -> str:
        self.clock.now += self.real
        return "fwd"

    def backward_one_chunk(self, *a: Any, **k: Any) -> str:
        self.clock.now += 2 * self.real
        return "bwd"


def _run(pacer: ChunkPacer, stage: Stage, clock: FakeClock, micro: int) -> float:
    t0 = clock.now
    for _ in range(micro):
        assert stage.forward_one_chunk() == "fwd"
    for _ in range(micro):
        assert stage.backward_one_chunk() == "bwd"
    return clock.now - t0


def test_chunks_last_their_paced_time_and_the_step_costs_come_once_per_step() -> None:
    """4 micro-batches of forward 1 s + send 0.5 s and backward 2 s + send 0.25 s, a 3 s
    all-gather before the first chunk and a 5 s reduce-scatter after the last: a step takes
    4 x (1.5 + 2.25) + 3 + 5 = 23 s, twice that at half clock; the busy time is that."""
    clock = FakeClock()
    pace = ChunkPace(fwd_s=1.0, bwd_s=2.0, send_fwd_s=0.5, send_bwd_s=0.25, pre_step_s=3.0,
                     post_step_s=5.0)
    factor = [1.0]
    pacer = ChunkPacer({0: pace}, clock_factor=lambda: factor[0], clock=clock,
                       sleep=clock.sleep)
    pacer.per_step = 4
    stage = Stage(clock, real=0.01)
    pacer.wrap(stage, 0)
    assert _run(pacer, stage, clock, 4) == pytest.approx(23.0)
    factor[0] = 0.5
    assert _run(pacer, stage, clock, 4) == pytest.approx(46.0)
    assert pacer.busy_s == pytest.approx(69.0)


def test_the_first_forward_of_a_step_waits_for_the_gathers_issued_at_its_start() -> None:
    """fsdp's gathers (6 s) start with the step: a first forward reached 2 s in (the stage
    waited for its input) starts at 6 s, so the step's first forward ends at 7 s; one
    reached 8 s in does not wait; later forwards never do; the wait is not chip work."""
    clock = FakeClock()
    pacer = ChunkPacer({0: ChunkPace(fwd_s=1.0, bwd_s=2.0, gather_s=6.0)}, clock=clock,
                       sleep=clock.sleep)
    pacer.per_step = 2
    stage = Stage(clock, real=0.01)
    pacer.wrap(stage, 0)
    for late, first_end in ((2.0, 7.0), (8.0, 9.0)):
        t0 = clock.now
        pacer.begin_step()
        clock.now += late
        stage.forward_one_chunk()
        assert clock.now - t0 == pytest.approx(first_end)
        stage.forward_one_chunk()
        assert clock.now - t0 == pytest.approx(first_end + 1.0)
        stage.backward_one_chunk()
        stage.backward_one_chunk()
    assert pacer.busy_s == pytest.approx(2 * (2 * 1.0 + 2 * 2.0))


def test_without_a_pace_a_chip_stretches_the_real_time_by_its_speed() -> None:
    """No as_model: a chip of relative speed 0.5 takes twice the real computation; a real
    device (speed 1, no pace) is only timed."""
    clock = FakeClock()
    slow = ChunkPacer(speed=0.5, clock=clock, sleep=clock.sleep)
    stage = Stage(clock, real=0.1)
    slow.wrap(stage, 0)
    assert _run(slow, stage, clock, 3) == pytest.approx(2 * (3 * 0.1 + 3 * 0.2))
    real = ChunkPacer(clock=clock, sleep=clock.sleep)
    other = Stage(clock, real=0.1)
    real.wrap(other, 0)
    assert _run(real, other, clock, 3) == pytest.approx(0.9)
    assert real.busy_s == pytest.approx(0.9)


def test_an_injected_throttle_survives_the_chips_state_round_trip() -> None:
    """An emulated chip saved mid-throttle resumes throttled, for the steps left."""
    a = EmulatedDevice("nvidia-h20")
    a.force_throttle(50, 0.5)
    b = EmulatedDevice("nvidia-h20")
    b.load_state_dict(a.state_dict())
    assert b.clock_factor() == pytest.approx(0.5)
    assert EmulatedDevice("nvidia-h20").clock_factor() == pytest.approx(1.0)
