import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_helpers import fleet

from mixfleet.errors import ConfigError
from mixfleet.fleet.model import Job
from mixfleet.fleet.policies import POLICY_NAMES, make_policy
from mixfleet.fleet.policies.base import fit_options, pool_views
from mixfleet.sim import SimConfig, simulate


@st.composite
def cases(draw):
    n = draw(st.integers(1, 3))
    pools = [(draw(st.integers(1, 8)), draw(st.sampled_from([16, 64, 96])), draw(st.booleans()))
             for _ in range(n)]
    speeds = {w: tuple(draw(st.floats(0.25, 4.0)) for _ in range(n)) for w in ("a", "b")}
    jobs = [Job(id=f"j{i}", workload=draw(st.sampled_from(["a", "b"])),
                arrival_s=draw(st.floats(0, 2000)), devices=draw(st.integers(1, 8)),
                work=draw(st.floats(1, 20000)), mem_gib=draw(st.sampled_from([8, 40, 72])))
            for i in range(draw(st.integers(1, 12)))]
    rel = {"mtbf_h": draw(st.sampled_from([0.5, 5.0, 500.0])), "throttle_per_h": 2.0,
           "throttle_s": 300.0, "throttle_slowdown": 0.5}
    return fleet(pools, rel), jobs, speeds, draw(st.integers(0, 2**16))


@pytest.mark.parametrize("name", POLICY_NAMES)
@settings(max_examples=15, deadline=None)
@given(case=cases())
def test_capacity_memory_work_and_determinism(name, case):
    """Under failures and throttling: no pool over capacity, every placement fits memory,
    each completed job's kept work equals its work, every job completes or is reported, and
    the same seed gives the same result."""
    f, jobs, speeds, seed = case
    cfg = SimConfig(seed=seed, migration_s=30.0)
    try:
        r = simulate(f, jobs, make_policy(name), speeds, cfg)
    except ConfigError:  # only when no job fits anywhere
        pools = pool_views(f)
        assert not any(fit_options(pools, speeds[j.workload], j.devices, j.mem_gib)[0]
                       for j in jobs)
        return
    assert all(b <= c for b, c in zip(r.peak_busy, r.capacity, strict=True))
    mem = {j.id: j.mem_gib for j in jobs}
    for rec in r.jobs:
        for p in rec.pools:
            assert mem[rec.id] <= f.pools[p].mem_gib
        assert sum(rec.work_by_pool) == pytest.approx(rec.work, rel=1e-9, abs=1e-6)
        assert rec.end_s >= rec.start_s >= rec.arrival_s
    assert len(r.jobs) + len(r.unplaceable) == len(jobs)
    again = simulate(f, jobs, make_policy(name), speeds, cfg)
    assert again.metrics == r.metrics
    assert [(j.id, j.end_s) for j in again.jobs] == [(j.id, j.end_s) for j in r.jobs]
