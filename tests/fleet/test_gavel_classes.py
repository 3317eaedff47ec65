"""gavel solves its LP over classes of interchangeable jobs and reuses the solution while
the multiset of classes is unchanged."""

import dataclasses

import pytest

from mixfleet.fleet.policies import PoolView, Snapshot, make_policy
from mixfleet.fleet.policies.gavel import solve_max_min
from mixfleet.fleet.reliability import default_profile


@dataclasses.dataclass
class J:
    id: str
    workload: str
    devices: int
    options: tuple[int, ...]
    run_s: list[float]
    mem_gib: float = 8.0
    remaining: float = 100.0
    priority: int = 0
    arrival_s: float = 0.0
    pool: int | None = None
    eta: float = float("inf")


POOLS = tuple(PoolView(index=i, id=f"p{i}", chip=f"c{i}", is_nvidia=i == 0, capacity=c,
                       mem_gib=80, reliability=default_profile(i == 0))
              for i, c in enumerate((4, 6)))
SPEED = {"a": (2.0, 1.0), "b": (1.0, 1.5)}


def test_class_lp_has_the_per_job_optimum():
    """Three 'a' and two 'b' jobs: the class LP (counts 3 and 2) reaches the same max-min
    t as the LP over the five jobs, and its shares fit every pool."""
    jobs = [({0: 2.0, 1: 1.0}, 1)] * 3 + [({0: 1.0, 1: 1.5}, 2)] * 2
    t_jobs, _ = solve_max_min([s for s, _ in jobs], [d for _, d in jobs], [4.0, 6.0])
    t_cls, x = solve_max_min([{0: 2.0, 1: 1.0}, {0: 1.0, 1: 1.5}], [1, 2], [4.0, 6.0],
                             [3, 2])
    assert t_cls == pytest.approx(t_jobs, rel=1e-7)
    for p, cap in enumerate((4.0, 6.0)):
        assert 3 * 1 * x[0].get(p, 0) + 2 * 2 * x[1].get(p, 0) <= cap + 1e-7


def test_same_composition_reuses_the_solution():
    """A second round with other jobs of the same classes (and other run times) solves no
    new LP; members of a class get identical shares; a new class triggers a solve."""
    pol = make_policy("gavel")
    jobs = [J(f"j{i}", "a" if i % 2 else "b", 1 + i % 2, (0, 1), [0.0, 0.0])
            for i in range(6)]
    s1 = pol.shares(Snapshot(time=10, pools=POOLS, jobs=jobs, speed=SPEED))
    assert pol.solves == 1
    assert s1["j1"] == s1["j3"] == s1["j5"]
    moved = [dataclasses.replace(j, id=f"k{i}", run_s=[5.0, 1.0]) for i, j in
             enumerate(reversed(jobs))]
    s2 = pol.shares(Snapshot(time=20, pools=POOLS, jobs=moved, speed=SPEED))
    assert pol.solves == 1
    assert s2["k0"] == s1["j5"]
    pol.shares(Snapshot(time=30, pools=POOLS, jobs=[*jobs, J("new", "a", 4, (1,), [0, 0])],
                        speed=SPEED))
    assert pol.solves == 2
