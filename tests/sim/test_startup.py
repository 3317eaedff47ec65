"""A job's start-up cost in seconds (``Job.startup_s``): paid at every start and restart."""

import pytest
from sim_helpers import fleet

from mixfleet.errors import ConfigError
from mixfleet.fleet.model import Job, parse_jobs
from mixfleet.fleet.policies import make_policy
from mixfleet.sim import SimConfig, Simulator, simulate

OFF = SimConfig(failures=False, throttles=False, migration_s=0.0)


def job(jid="j0", work=100.0, arrival=0.0, startup=0.0, devices=1):
    return Job(id=jid, workload="a", arrival_s=arrival, devices=devices, work=work, mem_gib=8,
               startup_s=startup)


@pytest.mark.parametrize("policy", ["fifo", "goodput", "srtf"])
def test_a_lone_job_finishes_exactly_its_startup_later(policy):
    """A job of 100 on 2 devices of speed 2.5 arriving at 3 s ends at 23 s, and with a
    start-up of 7.5 s exactly 7.5 s later; the start-up is accounted as such, not as a
    migration."""
    f = fleet([(2, 80, True)])
    base = simulate(f, [job(arrival=3.0, devices=2)], make_policy(policy), {"a": (2.5,)}, OFF)
    paid = simulate(f, [job(arrival=3.0, startup=7.5, devices=2)], make_policy(policy),
                    {"a": (2.5,)}, OFF)
    assert base.jobs[0].end_s == 23.0
    assert paid.jobs[0].end_s - base.jobs[0].end_s == 7.5
    assert paid.jobs[0].start_s == base.jobs[0].start_s == 3.0  # queueing ends at placement
    assert paid.metrics["startup_device_hours"] * 3600 == pytest.approx(7.5 * 2)
    assert paid.metrics["migration_device_hours"] == 0
    assert base.metrics["startup_device_hours"] == 0


def test_the_device_is_held_during_startup():
    """fifo, works 10 and 20 on one device, start-up 4 s each: the second job starts when
    the first ends (14 s) and pays its own start-up: it ends at 14 + 4 + 20 = 38 s."""
    r = simulate(fleet([(1, 80, True)]), [job("j0", 10, startup=4), job("j1", 20, startup=4)],
                 make_policy("fifo"), {"a": (1.0,)}, OFF)
    assert {j.id: (j.start_s, j.end_s) for j in r.jobs} == {"j0": (0.0, 14.0),
                                                            "j1": (14.0, 38.0)}


def test_a_restart_after_a_preemption_pays_startup_again_before_migration():
    """srtf, start-up 3 s, migration 2 s: the 100 s job starts at 0 and is preempted at 1 s
    (still starting up) by a 5 s job, which ends at 1 + 3 + 5 = 9 s; the long one starts
    again at 9 s and pays 3 + 2 s: it ends at 114 s (107 s without the start-up)."""
    js = [job("long", 100, startup=3.0), job("short", 5, arrival=1.0, startup=3.0)]
    r = simulate(fleet([(1, 80, True)]), js, make_policy("srtf"), {"a": (1.0,)},
                 SimConfig(failures=False, throttles=False, migration_s=2.0,
                           estimates="oracle"))
    assert {j.id: j.end_s for j in r.jobs} == {"short": 9.0, "long": 114.0}
    assert r.metrics["migrations"] == 1
    # long: 1 s cut short + 3 s at its restart; short: 3 s. The migration stall stays 2 s.
    assert r.metrics["startup_device_hours"] * 3600 == pytest.approx(7.0)
    assert r.metrics["migration_device_hours"] * 3600 == pytest.approx(2.0)


def test_every_restart_after_a_failure_pays_startup_on_top_of_restart_s():
    """One long job (MTBF 20 h, restart_s 10 s, start-up 1 s): its start-up stall is
    1 s x (1 + failures) and its restart stall 10 s x failures, each counted once (the
    stalls are short next to the MTBF: no failure of this seed lands inside one)."""
    rel = {"mtbf_h": 20.0, "checkpoint_s": 60.0, "restart_s": 10.0, "throttle_per_h": 0.0}
    sim = Simulator(fleet([(1, 80, True)], rel), [job(work=2000 * 3600.0, startup=1.0)],
                    make_policy("fifo"), {"a": (1.0,)},
                    SimConfig(seed=5, failures=True, throttles=False))
    r = sim.run()
    js = sim.states[0]
    assert js.failures > 50
    assert js.startup_stall_s == pytest.approx(1.0 * (1 + js.failures))
    assert js.restart_s == pytest.approx(10.0 * js.failures)
    assert r.metrics["startup_device_hours"] * 3600 == pytest.approx(js.startup_stall_s)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_negative_or_non_finite_startup_is_refused(bad):
    """Job(startup_s < 0, NaN or inf) raises ConfigError naming the field and the fix."""
    with pytest.raises(ConfigError, match=r"startup_s must be a number >= 0.*set startup_s"):
        job(startup=bad)


def test_a_jobs_file_gives_startup_and_refuses_a_negative_one():
    """``startup_s`` of a [[job]] reaches the Job; a negative one is a ConfigError naming
    the file's field; without it the start-up is 0."""
    row = {"id": "x", "workload": "cnn", "devices": 1, "ref_seconds": 10.0}
    (j,) = parse_jobs({"job": [{**row, "startup_s": 7.0}]}, "jobs.toml")
    assert j.startup_s == 7.0
    (j,) = parse_jobs({"job": [row]}, "jobs.toml")
    assert j.startup_s == 0.0
    with pytest.raises(ConfigError, match=r"startup_s.*>= 0"):
        parse_jobs({"job": [{**row, "startup_s": -2.0}]}, "jobs.toml")
