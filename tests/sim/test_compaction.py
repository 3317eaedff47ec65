import functools
import math
import random

import pytest
from sim_helpers import fleet

from mixfleet.fleet.model import Job
from mixfleet.fleet.policies import make_policy
from mixfleet.sim import SimConfig, events, simulate
from mixfleet.sim.events import EventQueue


def _case():
    rng = random.Random(3)
    f = fleet([(6, 80, True), (4, 64, False), (3, 96, True)],
              {"mtbf_h": 2.0, "throttle_per_h": 3.0, "throttle_s": 200.0,
               "throttle_slowdown": 0.5})
    speeds = {"a": (1.0, 0.6, 1.4), "b": (1.0, 1.2, 0.8)}
    jobs = [Job(id=f"j{i}", workload=rng.choice("ab"), arrival_s=rng.uniform(0, 20000),
                devices=rng.choice([1, 1, 2, 3]), work=rng.uniform(500, 60000),
                mem_gib=rng.choice([8, 40])) for i in range(80)]
    return f, jobs, speeds


@pytest.mark.parametrize("name", ["gavel", "goodput", "fifo"])
def test_compacting_the_queue_changes_nothing(name, monkeypatch):
    """A run that compacts its event queue as often as it can gives the same jobs, times,
    timelines and metrics (event count included) as one that never compacts."""
    f, jobs, speeds = _case()
    cfg = SimConfig(seed=5, migration_s=30.0)
    monkeypatch.setattr(events, "EventQueue",
                        functools.partial(EventQueue, compact_floor=math.inf))
    never = simulate(f, jobs, make_policy(name), speeds, cfg)
    dropped = []
    real = EventQueue.compact

    def counting(self, outdated):
        n = real(self, outdated)
        dropped.append(n)
        return n

    monkeypatch.setattr(EventQueue, "compact", counting)
    monkeypatch.setattr(events, "EventQueue", functools.partial(EventQueue, compact_floor=8))
    often = simulate(f, jobs, make_policy(name), speeds, cfg)
    assert sum(dropped) > 0
    assert often.metrics == never.metrics
    assert often.jobs == never.jobs
    assert often.timelines == never.timelines
