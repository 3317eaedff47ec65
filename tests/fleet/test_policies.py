import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixfleet.errors import ConfigError
from mixfleet.fleet.policies import POLICY_NAMES, PoolView, Snapshot, make_policy
from mixfleet.fleet.policies.base import STOP, fit_options
from mixfleet.fleet.policies.gavel import solve_max_min
from mixfleet.fleet.reliability import default_profile


@dataclasses.dataclass
class J:
    id: str
    workload: str
    devices: int
    mem_gib: float
    remaining: float
    options: tuple[int, ...]
    run_s: list[float]
    priority: int = 0
    arrival_s: float = 0.0
    pool: int | None = None
    eta: float = float("inf")


def pools(caps, mems, nvidia):
    return tuple(PoolView(index=i, id=f"p{i}", chip=f"c{i}", is_nvidia=nv, capacity=c,
                          mem_gib=m, reliability=default_profile(nv))
                 for i, (c, m, nv) in enumerate(zip(caps, mems, nvidia, strict=True)))


def test_lp_matches_hand_solved_heterogeneous_optimum():
    """Speeds (1, 4) and (1, 2) on two 1-device pools: the unique optimum is every share
    0.5 with normalized throughput t = 1 (hand-solved: b1 >= .5 and b2 >= .5 force it)."""
    t, x = solve_max_min([{0: 1.0, 1: 4.0}, {0: 1.0, 1: 2.0}], [1, 1], [1.0, 1.0])
    assert t == pytest.approx(1.0, abs=1e-7)
    for xs in x:
        assert xs[0] == pytest.approx(0.5, abs=1e-7)
        assert xs[1] == pytest.approx(0.5, abs=1e-7)


def test_lp_homogeneous_shares_equally():
    """Three 1-device jobs on a 2-device pool each get 2/3 of the time."""
    t, x = solve_max_min([{0: 1.0}] * 3, [1, 1, 1], [2.0])
    assert t == pytest.approx(2 / 3)
    assert [xs[0] for xs in x] == pytest.approx([2 / 3] * 3)


def test_lp_respects_device_counts():
    """A 2-device job and a 1-device job on 2 devices: shares 2/3 and 2/3 (2x + y <= 2)."""
    t, x = solve_max_min([{0: 1.0}, {0: 1.0}], [2, 1], [2.0])
    assert t == pytest.approx(2 / 3)
    assert 2 * x[0][0] + x[1][0] <= 2 + 1e-9


def test_unknown_policy_lists_known():
    """An unknown policy name is bad input listing the valid ones."""
    with pytest.raises(ConfigError, match="gavel"):
        make_policy("best-effort")


def test_sparing_keeps_nvidia_for_memory_and_slow_jobs():
    """nvidia-sparing sends a small job to the non-Nvidia pool, a 72 GiB job and a job 3x
    slower elsewhere to Nvidia."""
    ps = pools([8, 8], [80, 64], [True, False])
    speed = {"a": (1.0, 0.8), "b": (1.0, 0.3)}
    jobs = [J("small", "a", 1, 16, 10, (0, 1), [0, 0]),
            J("big", "a", 1, 72, 10, (0,), [0, 0]),
            J("slow", "b", 1, 16, 10, (0, 1), [0, 0])]
    alloc = make_policy("nvidia-sparing").allocate(Snapshot(time=0, pools=ps, jobs=jobs,
                                                            speed=speed))
    assert alloc == {"small": 1, "big": 0, "slow": 0}


def test_goodput_avoids_a_pool_that_fails_often():
    """Equal speeds: goodput picks the pool whose failures cost less."""
    ps = pools([4, 4], [80, 80], [False, False])
    bad = dataclasses.replace(ps[0], reliability=ps[0].reliability.with_overrides(
        {"mtbf_h": 2.0}, "t"))
    snap = Snapshot(time=0, pools=(bad, ps[1]), jobs=[J("j", "a", 4, 16, 1e5, (0, 1), [0, 0])],
                    speed={"a": (1.0, 1.0)})
    assert make_policy("goodput").allocate(snap) == {"j": 1}


def test_fit_options_reports_why_nothing_fits():
    """A job needing more memory than any device gets no options and a reason."""
    ps = pools([8], [64], [False])
    opts, why = fit_options(ps, (1.0,), 1, 72)
    assert opts == ()
    assert "72 GiB" in why and "64" in why


@st.composite
def snapshots(draw):
    n = draw(st.integers(1, 4))
    caps = draw(st.lists(st.integers(1, 16), min_size=n, max_size=n))
    mems = draw(st.lists(st.sampled_from([16.0, 64.0, 96.0]), min_size=n, max_size=n))
    nv = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    ps = pools(caps, mems, nv)
    speed = {w: tuple(draw(st.one_of(st.none(), st.floats(0.1, 4.0))) for _ in range(n))
             for w in ("a", "b")}
    jobs = []
    used = [0] * n
    for i in range(draw(st.integers(0, 25))):
        w = draw(st.sampled_from(["a", "b"]))
        dev = draw(st.integers(1, 8))
        mem = draw(st.sampled_from([8.0, 40.0, 72.0]))
        opts, _ = fit_options(ps, speed[w], dev, mem)
        if not opts:
            continue
        pool = None
        p = draw(st.sampled_from(opts))
        if draw(st.booleans()) and used[p] + dev <= caps[p]:
            pool, used[p] = p, used[p] + dev
        jobs.append(J(f"j{i}", w, dev, mem, draw(st.floats(1, 1e5)), opts, [0.0] * n,
                      arrival_s=float(i), pool=pool,
                      eta=1e6 if pool is not None else float("inf")))
    return Snapshot(time=100.0, pools=ps, jobs=jobs, speed=speed)


@pytest.mark.parametrize("name", POLICY_NAMES)
@settings(max_examples=40, deadline=None)
@given(snap=snapshots())
def test_allocation_fits_capacity_and_memory_and_is_pure(name, snap):
    """Every policy keeps each pool within capacity, places jobs only where they fit, and
    returns the same allocation for the same snapshot (a non-preemptive policy lists only
    new placements, and moves or stops (STOP) of running jobs only if it declares
    ``moves``)."""
    pol = make_policy(name)
    alloc = pol.allocate(snap)
    by_id = {j.id: j for j in snap.jobs}
    used = [0] * len(snap.pools)
    if not pol.preemptive:  # running jobs keep their devices unless moved
        for j in snap.jobs:
            if j.pool is not None:
                if j.id in alloc:
                    assert getattr(pol, "moves", False) and alloc[j.id] != j.pool
                    continue
                used[j.pool] += j.devices
    for jid, p in alloc.items():
        j = by_id[jid]
        if p == STOP:  # a stopped running job holds no devices
            assert j.pool is not None
            continue
        assert p in j.options
        assert j.mem_gib <= snap.pools[p].mem_gib
        used[p] += j.devices
    assert all(u <= p.capacity for u, p in zip(used, snap.pools, strict=True))
    assert make_policy(name).allocate(snap) == alloc


def test_gavel_pop_partitions_still_fit():
    """With POP partitions (max_lp_jobs = 3) the allocation still respects capacity."""
    ps = pools([8, 8], [80, 80], [True, False])
    jobs = [J(f"j{i}", "a", 1 + i % 3, 16, 100, (0, 1), [0, 0]) for i in range(12)]
    alloc = make_policy("gavel", max_lp_jobs=3).allocate(
        Snapshot(time=0, pools=ps, jobs=jobs, speed={"a": (2.0, 1.0)}))
    used = [0, 0]
    for jid, p in alloc.items():
        used[p] += next(j.devices for j in jobs if j.id == jid)
    assert used[0] <= 8 and used[1] <= 8
    assert sum(used) >= 14  # work conserving: at most one device per pool left idle
