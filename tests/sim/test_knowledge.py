"""What the fleet knows versus what the simulator draws (mixfleet.sim.knowledge)."""

import dataclasses

import pytest
from sim_helpers import fleet

from mixfleet.errors import ConfigError
from mixfleet.fleet.model import Job
from mixfleet.fleet.policies import make_policy
from mixfleet.fleet.policies.base import pool_views
from mixfleet.sim import SimConfig, simulate
from mixfleet.sim.knowledge import FleetKnowledge, Truth, estimate_rate, misspecified_truth

QUIET = SimConfig(failures=False, throttles=False, estimates="oracle")


def job(i, work, arrival=0.0, devices=1):
    return Job(id=i, workload="a", arrival_s=arrival, devices=devices, work=work, mem_gib=8)


@pytest.mark.parametrize("name", ["goodput", "srtf", "nvidia-sparing"])
def test_decisions_follow_the_table_while_progress_follows_the_truth(name):
    """The table says pool 0 is 2x faster, the truth says it is 2x slower: the policy puts
    the job on pool 0 all the same, and it runs at the true speed there (1000 / 0.5 s)."""
    f = fleet([(1, 80, False), (1, 80, False)])
    table = {"a": (2.0, 1.0)}
    truth = Truth(speed={"a": (0.5, 1.0)},
                  reliability=tuple(p.reliability for p in pool_views(f)))
    known = simulate(f, [job("x", 1000.0)], make_policy(name), table, QUIET)
    drawn = simulate(f, [job("x", 1000.0)], make_policy(name), table, QUIET, truth=truth)
    assert known.jobs[0].pools == drawn.jobs[0].pools == (0,)
    assert known.jobs[0].end_s == pytest.approx(500.0)
    assert drawn.jobs[0].end_s == pytest.approx(2000.0)


class Spy:
    """goodput, recording the speeds and pool profiles of every snapshot it is given."""

    name, round_s, preemptive, moves = "spy", None, False, True

    def __init__(self):
        self.inner = make_policy("goodput")
        self.seen = []

    def allocate(self, snap):
        self.seen.append((snap.speed, tuple(p.reliability for p in snap.pools)))
        return self.inner.allocate(snap)


def test_policies_see_the_table_and_estimates_never_the_truth():
    """Under a truth with 3x the failure rate and speeds off by up to 30%, every snapshot
    carries the table's speeds and reliability estimated from the failures seen: the prior
    at first, then estimates that move toward the true MTBF, never the true profile."""
    f = fleet([(8, 80, False), (8, 80, True)], reliability={"mtbf_h": 200.0})
    table = {"a": (1.0, 0.8)}
    truth = misspecified_truth(pool_views(f), table, seed=3)
    jobs = [job(f"j{i}", 40_000.0 + 500 * i, arrival=600.0 * i, devices=2) for i in range(60)]
    spy = Spy()
    simulate(f, jobs, spy, table, SimConfig(seed=1, estimates="oracle"), truth=truth)
    prior = pool_views(f)[0].reliability
    assert spy.seen[0][1][0] == prior
    assert all(speed is table for speed, _ in spy.seen)
    last = spy.seen[-1][1]
    assert all(r.mtbf_h != t.mtbf_h for _, rels in spy.seen for r, t in
               zip(rels, truth.reliability, strict=True))
    assert all(abs(r.mtbf_h - t.mtbf_h) < abs(prior.mtbf_h - t.mtbf_h)
               for r, t in zip(last, truth.reliability, strict=True))


def test_estimate_is_the_prior_until_something_is_seen_then_tracks_the_rate():
    """The gamma-Poisson estimate: the prior rate with no exposure; 30 failures in 10,000
    device-hours (true MTBF 333 h) against a 1,000 h prior worth one event give
    11,000 / 31 h; a FleetKnowledge hands out the same view until something is seen."""
    assert estimate_rate(1 / 1000, 0, 0.0, 1.0) == pytest.approx(1 / 1000)
    assert 1 / estimate_rate(1 / 1000, 30, 10_000.0, 1.0) == pytest.approx(11_000 / 31)
    f = fleet([(4, 80, False)], reliability={"mtbf_h": 1000.0})
    k = FleetKnowledge(pool_views(f), {"a": (1.0,)}, refresh_s=0.0)
    first = k.pools(0.0, [0.0])
    assert k.pools(10.0, [3.6e7]) is first
    for _ in range(30):
        k.observe_failure(0)
    est = k.pools(20.0, [3.6e7])[0].reliability
    assert est.mtbf_h == pytest.approx(11_000 / 31, rel=1e-2)
    assert dataclasses.replace(est, mtbf_h=1000.0, throttle_per_h=first[0].reliability.
                               throttle_per_h) == first[0].reliability


def test_misspecified_truth_stays_within_its_bounds():
    """Speeds within +-30% of the table's (None stays None), MTBF divided by 3."""
    f = fleet([(1, 80, False), (1, 80, True)])
    table = {"a": (1.0, 0.5), "b": (None, 2.0)}
    t = misspecified_truth(pool_views(f), table, seed=0)
    for w, row in table.items():
        for k, v in zip(row, t.speed[w], strict=True):
            assert (k is None) == (v is None)
            assert k is None or 0.7 * k <= v <= 1.3 * k
    assert [r.mtbf_h * 3 for r in t.reliability] == \
        pytest.approx([p.reliability.mtbf_h for p in pool_views(f)])


def test_a_truth_without_a_figure_the_table_has_is_refused():
    """A truth missing a speed where the table has one: ConfigError naming the workload."""
    f = fleet([(1, 80, False), (1, 80, False)])
    bad = Truth(speed={"a": (1.0, None)}, reliability=tuple(p.reliability
                                                           for p in pool_views(f)))
    with pytest.raises(ConfigError, match="'a'"):
        simulate(f, [job("x", 10.0)], make_policy("fifo"), {"a": (1.0, 1.0)}, QUIET,
                 truth=bad)
