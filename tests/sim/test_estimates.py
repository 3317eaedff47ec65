import math

import pytest
from sim_helpers import data_dir, fleet

from mixfleet.cli import main
from mixfleet.errors import ConfigError
from mixfleet.fleet.estimates import DeclaredEstimator, HistoryEstimator, relative_errors
from mixfleet.fleet.model import Job
from mixfleet.fleet.policies import POLICY_NAMES, make_policy
from mixfleet.fleet.policies.base import Snapshot, pool_views
from mixfleet.sim import SimConfig, simulate
from mixfleet.sim.cluster import JobState
from mixfleet.sim.traces import read_trace

PHILLY = data_dir() / "traces" / "philly" / "philly_jobs_sep_oct_2017.csv"


def job(i, work, declared, devices=1, arrival=0.0, workload="a"):
    return Job(id=f"j{i}", workload=workload, arrival_s=arrival, devices=devices, work=work,
               mem_gib=8, declared_work=declared)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_policies_decide_on_the_estimate_not_the_truth(name):
    """Under declared estimates, two snapshots whose jobs differ only in their true work
    (same declared limits) get the same allocation from every policy."""
    f = fleet([(2, 80, True), (2, 80, False)])
    pools = pool_views(f)
    speed = {"a": (2.0, 1.0)}
    declared = [50.0, 400.0, 3000.0, 90.0, 700.0]

    def snap(works):
        states = [JobState(job(i, w, d, devices=1 + i % 2, arrival=float(i)), i, (0, 1), 2,
                           DeclaredEstimator()) for i, (w, d) in enumerate(
                               zip(works, declared, strict=True))]
        return Snapshot(time=10.0, pools=pools, jobs=states, speed=speed)

    a = make_policy(name).allocate(snap([10.0, 5000.0, 20.0, 800.0, 1.0]))
    b = make_policy(name).allocate(snap([4000.0, 2.0, 9000.0, 3.0, 600.0]))
    assert a == b


def test_srtf_order_follows_declared_estimate():
    """One device; A is truly short but declared long, B the reverse: under declared
    estimates srtf runs B first (B ends at 1000, A at 1100); under oracle A first."""
    js = [job("A", 100.0, 1000.0), job("B", 1000.0, 100.0)]
    off = dict(failures=False, throttles=False, migration_s=0.0)
    ends = {}
    for est in ("declared", "oracle"):
        r = simulate(fleet([(1, 80, True)]), js, make_policy("srtf"), {"a": (1.0,)},
                     SimConfig(estimates=est, **off))
        ends[est] = {j.id: j.end_s for j in r.jobs}
    assert ends["declared"] == {"jB": 1000.0, "jA": 1100.0}
    assert ends["oracle"] == {"jA": 100.0, "jB": 1100.0}


def test_history_estimator_medians_by_group_and_devices():
    """History estimates are the median per-device length of finished jobs of the same
    group and size (falling back to size, then all), and a job that outlives its estimate
    gets the median of the longer finished jobs."""
    h = HistoryEstimator(prior_s=3600.0, min_samples=3)
    probe = Job(id="p", workload="a", arrival_s=0, devices=2, work=1.0, mem_gib=1, group="vc")
    assert h.estimate(probe) == 7200.0  # prior x devices
    for w in (10.0, 20.0, 30.0, 1000.0):
        h.observe(Job(id="x", workload="a", arrival_s=0, devices=2, work=2 * w, mem_gib=1,
                      group="vc"))
    assert h.estimate(probe) == 2 * 30.0  # median of [10, 20, 30, 1000] (upper)
    other = Job(id="q", workload="a", arrival_s=0, devices=2, work=1.0, mem_gib=1, group="z")
    assert h.estimate(other) == 2 * 30.0  # same size, other group: size bucket
    assert h.extend(probe, 2 * 15.0) == 2 * 30.0  # median of the longer: [20, 30, 1000]
    assert h.extend(probe, 2 * 25.0) == 2 * 2 * 25.0  # fewer than 3 longer: doubles
    assert relative_errors([(2.0, 1.0), (1.0, 1.0)])["p50"] == pytest.approx(0.5)


def test_declared_on_a_trace_without_limits_is_a_clear_error(tmp_path, capsys):
    """--estimates declared on a Philly CSV without limit_s exits 2 naming the fix."""
    t = tmp_path / "t.csv"
    t.write_text("timestamp,duration,num_gpus,gpu_time,cluster\n"
                 "2017-10-01 00:00:00,100,1,100,vc1\n")
    rc = main(["simulate", "--fleet", "examples/fleet-mixed.toml", "--trace", str(t),
               "--estimates", "declared", "--policy", "fifo"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "states no runtime limit" in err and "--estimates history" in err
    with pytest.raises(ConfigError, match="no runtime limit"):
        DeclaredEstimator().estimate(job(0, 1.0, None))


def test_limits_column_and_synthetic_limits_overestimate(tmp_path):
    """A trace's limit_s column becomes the declared limit (x devices); synthetic jobs get
    limits between 1x and 5x their true work (users over-estimate)."""
    t = tmp_path / "t.csv"
    t.write_text("timestamp,duration,num_gpus,gpu_time,cluster,limit_s\n"
                 "2017-10-01 00:00:00,100,2,200,vc1,400\n")
    jobs, _ = read_trace(t)
    assert jobs[0].declared_work == 800.0 and jobs[0].group == "vc1"
    syn, _ = read_trace("synthetic:500")
    ratio = [j.declared_work / j.work for j in syn]
    assert min(ratio) >= 1.0 and max(ratio) <= 5.0 and max(ratio) > 3.0


@pytest.mark.skipif(not PHILLY.is_file(), reason=f"{PHILLY} not present (../shared/data)")
def test_history_error_on_philly_is_reported_and_finite():
    """On the Philly Sep-Oct trace, the history estimator's median and p90 relative error
    are reported and finite (and oracle's are 0)."""
    jobs, _ = read_trace(PHILLY, limit=20000)
    f = fleet([(2000, 80, True)])
    speeds = {w: (1.0,) for w in {j.workload for j in jobs}}
    m = simulate(f, jobs, make_policy("fifo"), speeds,
                 SimConfig(failures=False, throttles=False)).metrics
    assert m["estimates"] == "history"
    assert math.isfinite(m["estimate_error_p50"]) and math.isfinite(m["estimate_error_p90"])
    assert 0 < m["estimate_error_p50"] <= m["estimate_error_p90"]
    o = simulate(f, jobs[:500], make_policy("fifo"), speeds,
                 SimConfig(failures=False, throttles=False, estimates="oracle")).metrics
    assert o["estimate_error_p90"] == 0.0
