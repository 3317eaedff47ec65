"""The resize decisions of elastic jobs (mixfleet.fleet.elastic) and their replay in the
simulator (mixfleet.sim.elastic)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from mixfleet.errors import ConfigError
from mixfleet.fleet.elastic import ElasticJob, expected_wait, grow, loss_decision, on_loss, on_start
from mixfleet.sim.elastic import TraceEvent, TraceJob, replay


def _job(jid: str = "a", size: int = 2, remaining: float = 1000.0, lo: int = 1, hi: int = 2,
         pool: int = 0) -> ElasticJob:
    return ElasticJob(id=jid, pool=pool, size=size, lo=lo, hi=hi, remaining=remaining,
                      per_device=1.0)


def test_shrink_when_waiting_for_the_full_count_would_never_end() -> None:
    """No device will free: shrinking to the devices left is chosen, gain unbounded."""
    d = on_loss(_job(), 1, math.inf, "drained")
    assert (d.action, d.old, d.new) == ("shrink", 2, 1) and math.isinf(d.gain_s)
    assert "drained" in d.reason


def test_requeue_when_the_full_count_frees_soon() -> None:
    """Devices free at once: requeue (waiting 0 s then 2 devices beats 1 device)."""
    d = on_loss(_job(), 1, 0.0, "drained")
    assert d.action == "requeue" and d.gain_s > 0


def test_requeue_below_min_devices() -> None:
    """A loss that leaves fewer than min_devices requeues whatever the wait."""
    assert on_loss(_job(lo=2), 1, math.inf, "lost").action == "requeue"


def test_shrink_beats_waiting_exactly_when_predicted_earlier() -> None:
    """The switch point: shrink ends at R + W/1, waiting at wait + R + W/2 (per_device 1)."""
    j = _job(remaining=1000.0)
    assert on_loss(j, 1, 499.0, "x").action == "requeue"
    assert on_loss(j, 1, 501.0, "x").action == "shrink"


def test_expected_wait_adds_up_devices_freed_by_running_jobs() -> None:
    """The wait for n devices is the ETA at which frees first add up to n."""
    assert expected_wait(10.0, 2, 2, []) == 0.0
    assert expected_wait(10.0, 2, 1, [(50.0, 1), (30.0, 1)]) == 20.0
    assert expected_wait(10.0, 3, 0, [(30.0, 1)]) == math.inf
    d = loss_decision(_job(), 1, 0.0, {0: 0, 1: 2}, [], [0, 1], "x")
    assert d.action == "requeue"  # another allowed pool has 2 free devices now


def test_grow_gives_free_devices_to_the_job_that_gains_most() -> None:
    """One free device, two jobs: the one with more work left gets it; a job whose gain
    does not pay the restart is never grown."""
    big, small = _job("big", 1, 5000.0), _job("small", 1, 2000.0)
    (d,) = grow([small, big], {0: 1})
    assert (d.job, d.action, d.old, d.new) == ("big", "grow", 1, 2)
    assert d.gain_s == pytest.approx(5000 - 30 - 2500)
    assert grow([_job("tiny", 1, 40.0)], {0: 1}) == []
    assert grow([_job("full", 2, 5000.0)], {0: 4}) == []


def test_grow_by_moving_when_its_own_pool_has_nothing_to_give() -> None:
    """A job shrunk to 1 on pool 0 (nothing free there) grows by moving to pool 1 where 2
    devices are free, when that pays the restart."""
    j = ElasticJob(id="a", pool=0, size=1, lo=1, hi=2, remaining=1000.0, per_device=1.0,
                   moves={1: 1.0})
    (d,) = grow([j], {0: 0, 1: 2})
    assert (d.action, d.old, d.new, d.pool) == ("grow", 1, 2, 1) and "move" in d.reason
    assert d.gain_s == pytest.approx(1000 - 30 - 500)
    slow = ElasticJob(id="s", pool=0, size=1, lo=1, hi=2, remaining=1000.0, per_device=1.0,
                      moves={1: 0.4})
    assert grow([slow], {1: 2}) == []  # 2 x 0.4 < 1 device of its own pool


def test_replay_grows_a_shrunk_job_by_moving_it_when_a_pool_frees() -> None:
    """The drained pool never gets its device back; when the other job ends, the shrunk
    job moves to its 2 free devices (grow 1 -> 2 on pool 1), by hand: ends at 1495 s."""
    jobs = [TraceJob(id="a", size=2, lo=1, hi=2, work=2000.0, per_device=(1.0, 1.0),
                     options=(0, 1)),
            TraceJob(id="b", size=2, lo=2, hi=2, work=2400.0, per_device=(1.0, 1.0),
                     options=(1,), elastic=False)]
    res = replay([2, 2], jobs, [TraceEvent(t=300.0, kind="drain", job="a")])
    assert [(t, d.key(), d.pool) for t, d in res.decisions] == [
        (300.0, ("a", "shrink", 2, 1), None), (1200.0, ("a", "grow", 1, 2), 1)]
    assert res.jct["a"] == pytest.approx(1200 + 30 + 265)


def _trace(elastic: bool) -> tuple[list[TraceJob], list[TraceEvent]]:
    jobs = [TraceJob(id="a", size=2, lo=1, hi=2, work=2000.0, per_device=(1.0, 1.0),
                     options=(0,), elastic=elastic),
            TraceJob(id="b", size=2, lo=2, hi=2, work=4000.0, per_device=(1.0, 1.0),
                     options=(1,), elastic=False)]
    return jobs, [TraceEvent(t=300.0, kind="drain", job="a"),
                  TraceEvent(t=600.0, kind="free", pool=0, n=1)]


def test_replay_shrinks_on_a_drain_grows_back_and_beats_requeuing() -> None:
    """A drain under an elastic job shrinks it (2 -> 1), a freed device grows it back
    (1 -> 2), and it ends sooner than the same job requeued (the baseline)."""
    jobs, events = _trace(True)
    res = replay([2, 2], jobs, events)
    assert [(t, d.key()) for t, d in res.decisions] == [
        (300.0, ("a", "shrink", 2, 1)), (600.0, ("a", "grow", 1, 2))]
    # 600 done by 300; 30 s stall, 270 at 1/s; 30 s stall, 1130 at 2/s
    assert res.jct["a"] == pytest.approx(630 + 565)
    base = replay([2, 2], *_trace(False))
    assert [d.key() for _, d in base.decisions] == [("a", "requeue", 2, 0)]
    assert base.jct["a"] == pytest.approx(630 + 700)
    assert res.jct["b"] == base.jct["b"] == pytest.approx(2000)


def test_start_on_the_devices_free_when_the_full_count_never_frees() -> None:
    """One of two devices free and nothing running that frees one: start on 1 now."""
    d = on_start(_job(remaining=1000.0), 0.0, {0: 1}, [], [0])
    assert d is not None and (d.action, d.old, d.new, d.pool) == ("start", 0, 1, 0)
    assert math.isinf(d.gain_s) and "1 of 2 device(s) free now" in d.reason


def test_start_small_pays_exactly_when_the_work_while_waiting_beats_the_restart() -> None:
    """Waiting w for the second device: starting on 1 and growing then ends at w + 30 +
    (1000 - w) / 2, waiting at w + 500; so it starts when w / 2 > 30 s (restart 30 s)."""
    j = _job(remaining=1000.0)
    for w, action in ((59.0, "wait"), (61.0, "start")):
        d = on_start(j, 100.0, {0: 1}, [(0, 100.0 + w, 1)], [0], restart_s=30.0)
        assert d is not None and d.action == action, (w, d)
        assert d.gain_s == pytest.approx(w / 2 - 30.0)
    assert on_start(j, 0.0, {0: 0}, [], [0]) is None  # nothing free: nothing to decide
    assert on_start(_job(lo=2), 0.0, {0: 1}, [], [0]) is None  # below min_devices
    assert on_start(j, 0.0, {0: 2}, [], [0]) is None  # it fits whole: the policy's call


def test_start_small_ends_on_its_few_devices_when_that_comes_first() -> None:
    """A job that finishes on 1 device before the second frees is priced at 1 device."""
    d = on_start(_job(remaining=100.0), 0.0, {0: 1}, [(0, 500.0, 1)], [0])
    assert d is not None and d.action == "start"
    assert d.gain_s == pytest.approx((500 + 50) - 100)


def test_replay_starts_an_elastic_job_small_and_grows_it_when_its_pool_frees() -> None:
    """A device under maintenance: the elastic job starts on the one left and grows when
    the device comes back; it ends sooner than the same job waiting for 2."""
    jobs = [TraceJob(id="a", size=2, lo=1, hi=2, work=1000.0, per_device=(1.0,),
                     options=(0,))]
    ev = [TraceEvent(t=200.0, kind="free", pool=0)]
    res = replay([2], jobs, ev, blocked=[1])
    assert [(t, d.key()) for t, d in res.decisions] == [
        (0.0, ("a", "start", 0, 1)), (200.0, ("a", "grow", 1, 2))]
    assert res.jct["a"] == pytest.approx(200 + 30 + 400)  # 200 done, stall, 800 at 2/s
    rigid = [dataclasses.replace(jobs[0], lo=2)]
    assert replay([2], rigid, ev, blocked=[1]).jct["a"] == pytest.approx(200 + 500)


def test_replay_refuses_an_event_of_an_unknown_job() -> None:
    """A drain naming no job of the trace is a ConfigError."""
    jobs, _ = _trace(True)
    with pytest.raises(ConfigError, match="drain"):
        replay([2, 2], jobs, [TraceEvent(t=1.0, kind="drain", job="zz")])


def test_replay_never_starts_a_job_small_on_a_pool_a_job_ahead_waits_for() -> None:
    """A rigid 2-device job ahead in the queue waits for pool 0's second device: the
    elastic job behind it does not take the one free device (no backfill that delays it),
    and starts small on pool 1, which no job ahead waits for."""
    jobs = [TraceJob(id="rigid", size=2, lo=2, hi=2, work=100.0, per_device=(1.0, 1.0),
                     options=(0,), elastic=False),
            TraceJob(id="el", size=2, lo=1, hi=2, work=1000.0, per_device=(1.0, 1.0),
                     options=(0, 1))]
    res = replay([2, 2], jobs, [TraceEvent(t=50.0, kind="free", pool=0)], blocked=[1, 1])
    assert [(t, d.key(), d.pool) for t, d in res.decisions][:1] == [
        (0.0, ("el", "start", 0, 1), 1)]
    assert res.jct["rigid"] == pytest.approx(50 + 50)  # started when pool 0's device came
