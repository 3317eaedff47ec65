"""Mixed-kind jobs: the decision (mix now over kinds vs wait for one kind) and the
simulator's replay of it (docs/fleet-elastic.md)."""

from __future__ import annotations

import math

import pytest

from mixfleet.errors import ConfigError
from mixfleet.fleet.mixing import MixJob, mix_decision, shares_rate, splits
from mixfleet.sim.elastic import TraceEvent, TraceJob, replay


def _job(size: int = 2, remaining: float = 1000.0, options: tuple[int, ...] = (0, 1)
         ) -> MixJob:
    return MixJob(id="m", size=size, remaining=remaining, options=options)


def test_splits_use_free_devices_of_two_or_more_allowed_pools() -> None:
    """Every split sums to the job's size, stays within each pool's free devices, spans
    two or more pools, and only those allowed."""
    got = splits(3, {0: 2, 1: 1, 2: 5}, (0, 1))
    assert got == [((0, 2), (1, 1))]
    got = splits(3, {0: 2, 1: 2, 2: 2}, (0, 1, 2))
    assert all(sum(n for _, n in s) == 3 and len(s) >= 2 for s in got)
    assert ((0, 1), (1, 1), (2, 1)) in got and ((0, 2), (1, 1)) in got and len(got) == 7


def test_mixes_when_waiting_for_one_kind_never_ends() -> None:
    """One device free in each of two pools, no pool ever has two: the job is mixed at
    once over both, the gain infinite and the reason saying why."""
    d = mix_decision(_job(), 0.0, {0: 1, 1: 1}, [], shares_rate([1.0, 0.5]))
    assert d is not None and d.action == "mix" and d.split == ((0, 1), (1, 1))
    assert math.isinf(d.gain_s) and math.isinf(d.wait_s) and d.mixed_rate == 1.5
    assert "no pool it may use ever has 2 device(s) free" in d.reason
    assert d.detail()["gain_s"] is None


def test_mixes_when_the_mix_ends_sooner_than_the_wait() -> None:
    """Waiting 1000 s for a second device of pool 0 ends at 1500 s; mixed now at 1.5/s it
    ends at 667 s: mixed, by the difference."""
    d = mix_decision(_job(), 0.0, {0: 1, 1: 1}, [(0, 1000.0, 1)], shares_rate([1.0, 0.5]))
    assert d is not None and d.action == "mix"
    assert d.wait_pool == 0 and d.wait_s == 1000.0
    assert d.gain_s == pytest.approx(1500.0 - 1000.0 / 1.5)


def test_waits_when_one_kind_frees_soon() -> None:
    """A second device of pool 0 frees in 5 s: 5 + 1000/2 = 505 s beats the mix's
    1000/1.5 = 667 s, so the job waits (and the decision says by how much it would lose)."""
    d = mix_decision(_job(), 0.0, {0: 1, 1: 1}, [(0, 5.0, 1)], shares_rate([1.0, 0.5]))
    assert d is not None and d.action == "wait" and d.wait_pool == 0
    assert d.gain_s == pytest.approx(505.0 - 1000.0 / 1.5) and d.gain_s < 0
    assert "not sooner" in d.reason


def test_waits_when_one_kind_is_faster_alone() -> None:
    """Pool 0's chip is 10x pool 1's and the bridge between kinds halves a mix: two of pool
    0 after a 50 s wait (100 s) beat one of each now (1000 / 5.5 = 182 s)."""
    d = mix_decision(_job(), 0.0, {0: 1, 1: 1}, [(0, 50.0, 1)],
                     shares_rate([10.0, 1.0], efficiency=0.5))
    assert d is not None and d.action == "wait" and d.mixed_rate == pytest.approx(5.5)


def test_never_mixes_kinds_the_job_does_not_allow() -> None:
    """Free devices of a pool the job may not use are never in its split; a job allowed
    one pool is never mixed; a job with room on one allowed pool is not mixed either."""
    rate = shares_rate([1.0, 1.0, 100.0])
    d = mix_decision(_job(options=(0, 1)), 0.0, {0: 1, 1: 1, 2: 2}, [], rate)
    assert d is not None and d.action == "mix" and all(q in (0, 1) for q, _ in d.split)
    assert mix_decision(_job(options=(0,)), 0.0, {0: 1, 1: 1}, [], rate) is None
    assert mix_decision(_job(options=(0, 1)), 0.0, {0: 2, 1: 1}, [], rate) is None
    seen: list[tuple[tuple[int, int], ...]] = []
    mix_decision(_job(options=(0, 2)), 0.0, {0: 1, 1: 1, 2: 1}, [],
                 lambda s: seen.append(s) or 1.0)  # type: ignore[func-returns-value]
    assert seen and all(q in (0, 2) for s in seen for q, _ in s)


def test_replay_mixes_a_job_no_single_pool_can_hold_and_shrinks_it_on_a_drain() -> None:
    """Pools of 2 devices with one blocked each: a 2-device job that allows both runs
    mixed from 0 at 1 + 0.5 samples/s; a drain of its pool-1 device at 100 s leaves it on
    pool 0 alone (restart 30 s): it ends at 100 + 30 + 150 / 1 = 280 s. Without a rate
    it can never run."""
    job = TraceJob(id="m", size=2, lo=2, hi=2, work=300.0, per_device=(1.0, 0.5),
                   options=(0, 1), elastic=False, rate=shares_rate([1.0, 0.5]))
    res = replay([2, 2], [job], [TraceEvent(t=100.0, kind="drain", job="m", pool=1)],
                 blocked=[1, 1])
    assert [(t, d.key()) for t, d in res.mixes] == [(0.0, ("m", "mix", ((0, 1), (1, 1))))]
    assert res.jct["m"] == pytest.approx(280.0)
    plain = TraceJob(id="m", size=2, lo=2, hi=2, work=300.0, per_device=(1.0, 0.5),
                     options=(0, 1), elastic=False)
    with pytest.raises(ConfigError, match="can never run"):
        replay([2, 2], [plain], [], blocked=[1, 1])


def _splits_by_product(size: int, free: dict[int, int], options: tuple[int, ...]
                       ) -> list[tuple[tuple[int, int], ...]]:
    """The reference: every count vector of the allowed pools, filtered (no cap)."""
    import itertools

    pools = [q for q in sorted(set(options)) if free.get(q, 0) > 0]
    return [tuple((q, c) for q, c in zip(pools, cs, strict=True) if c > 0)
            for cs in itertools.product(*[range(min(free[q], size) + 1) for q in pools])
            if sum(cs) == size and sum(c > 0 for c in cs) >= 2]


def test_splits_match_every_composition_in_order_and_never_walk_a_huge_fleet() -> None:
    """The splits are exactly the brute-force ones, in the same order, on small fleets;
    on 4 pools of 1000 free devices a 4000-device job (10^12 count vectors, one split)
    is answered at once, as is a small job on 40 large pools (capped at MAX_SPLITS)."""
    from mixfleet.fleet.mixing import MAX_SPLITS

    for size, free in ((3, {0: 2, 1: 2, 2: 2}), (5, {0: 4, 1: 1, 2: 3, 3: 2}),
                       (2, {0: 1, 1: 0, 2: 1}), (4, {0: 9, 1: 9})):
        opts = tuple(free)
        assert splits(size, free, opts) == _splits_by_product(size, free, opts)
    big = {q: 1000 for q in range(4)}
    assert splits(4000, big, (0, 1, 2, 3)) == [tuple((q, 1000) for q in range(4))]
    assert splits(4001, big, (0, 1, 2, 3)) == []
    many = splits(64, {q: 512 for q in range(40)}, tuple(range(40)))
    assert len(many) == MAX_SPLITS and all(sum(n for _, n in s) == 64 for s in many)


def test_a_job_no_split_can_run_gets_a_wait_with_its_reason_not_none() -> None:
    """Every split priced 0 (the cost model refuses them all): the decision is a wait
    with an empty split that says so, never None (a job must not wait unexplained)."""
    d = mix_decision(_job(), 0.0, {0: 1, 1: 1}, [], lambda s: 0.0)
    assert d is not None and d.action == "wait" and d.split == () and d.mixed_rate == 0.0
    assert "no split of the free devices over its kinds is predicted to run" in d.reason
    assert d.detail()["gain_s"] is None and d.key() == ("m", "wait", ())


def test_replay_counts_a_mixed_run_on_each_pool_it_holds_when_a_drain_asks() -> None:
    """A short 5-device job runs mixed on 1 + 4 devices of pools 0 and 1 (capacity 1, 4)
    and a long elastic job on pool 2's 2 devices (it may use pool 1 too). A drain under
    the long job at 1 s: pool 1 frees 4 devices when the mixed run ends (~10 s), so the
    long job requeues for 2 devices rather than shrink to 1; the mixed run counted on
    pool 0 alone would leave pool 1 never freeing and make it shrink."""
    mixed = TraceJob(id="m", size=5, lo=5, hi=5, work=50.0, per_device=(1.0, 1.0, 1.0),
                     options=(0, 1), elastic=False, rate=shares_rate([1.0, 1.0, 1.0]))
    long = TraceJob(id="e", size=2, lo=1, hi=2, work=10_000.0, per_device=(1.0, 1.0, 1.0),
                    options=(2, 1))
    res = replay([1, 4, 2], [mixed, long], [TraceEvent(t=1.0, kind="drain", job="e",
                                                       pool=2)])
    assert [(t, d.key()) for t, d in res.mixes] == [(0.0, ("m", "mix", ((0, 1), (1, 4))))]
    (t, d), *_ = res.decisions
    assert (t, d.job, d.action) == (1.0, "e", "requeue"), d.reason
