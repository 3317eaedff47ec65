import math

import pytest
from sim_helpers import fleet

from mixfleet.fleet.model import Job
from mixfleet.fleet.policies import make_policy
from mixfleet.sim import SimConfig, simulate

OFF = SimConfig(failures=False, throttles=False, migration_s=0.0)


def jobs(*works, devices=1):
    return [Job(id=f"j{i}", workload="a", arrival_s=0.0, devices=devices, work=w, mem_gib=8)
            for i, w in enumerate(works)]


def ends(result):
    return {j.id: j.end_s for j in result.jobs}


def test_fifo_homogeneous_hand_computation():
    """Works 10, 20, 30 on 2 devices: fifo ends them at 10, 20 and 40 (j2 starts at 10)."""
    r = simulate(fleet([(2, 80, True)]), jobs(10, 20, 30), make_policy("fifo"),
                 {"a": (1.0,)}, OFF)
    assert ends(r) == {"j0": 10.0, "j1": 20.0, "j2": 40.0}
    assert r.metrics["jct_avg_s"] == pytest.approx(70 / 3)
    assert r.metrics["queue_delay_avg_s"] == pytest.approx(10 / 3)


def test_gavel_homogeneous_hand_computation():
    """Two jobs of 10 s on one device with 1 s rounds: gavel's LP gives each half the time;
    they alternate, j0 first, so j0 ends at 19 and j1 at 20 (fifo: 10 and 20)."""
    r = simulate(fleet([(1, 80, True)]), jobs(10, 10), make_policy("gavel", round_s=1.0),
                 {"a": (1.0,)}, OFF)
    assert ends(r) == {"j0": 19.0, "j1": 20.0}
    f = simulate(fleet([(1, 80, True)]), jobs(10, 10), make_policy("fifo"),
                 {"a": (1.0,)}, OFF)
    assert ends(f) == {"j0": 10.0, "j1": 20.0}


def test_heterogeneous_speed_scales_run_time():
    """A job of 100 reference device-seconds on 2 devices of speed 2.5 takes 20 s."""
    r = simulate(fleet([(2, 80, True)]), jobs(100, devices=2), make_policy("goodput"),
                 {"a": (2.5,)}, OFF)
    assert ends(r) == {"j0": 20.0}


def test_srtf_preempts_for_a_short_job_and_pays_migration():
    """A 5 s job arriving at 1 s preempts a 100 s job on the only device; the long one
    resumes at 6 s after a 2 s migration stall and ends at 6 + 2 + 99 = 107 s."""
    js = [Job(id="long", workload="a", arrival_s=0.0, devices=1, work=100, mem_gib=8),
          Job(id="short", workload="a", arrival_s=1.0, devices=1, work=5, mem_gib=8)]
    r = simulate(fleet([(1, 80, True)]), js, make_policy("srtf"), {"a": (1.0,)},
                 SimConfig(failures=False, throttles=False, migration_s=2.0,
                           estimates="oracle"))
    assert ends(r) == {"short": 6.0, "long": 107.0}
    assert r.metrics["migrations"] == 1


def test_goodput_stops_a_long_job_only_when_the_gain_beats_its_migration_stall():
    """goodput: a 5 s job arriving at 1 s stops the 100 s job (99 s left > 5 s + the 2 s
    stall): short ends at 6 s, long at 6 + 2 + 99 = 107 s. A 98 s arrival does not stop a
    job with 99 s left (99 < 98 + 2): it waits and ends at 100 + 98 = 198 s."""
    cfg = SimConfig(failures=False, throttles=False, migration_s=2.0, estimates="oracle")

    def two(short):
        return [Job(id="long", workload="a", arrival_s=0.0, devices=1, work=100, mem_gib=8),
                Job(id="short", workload="a", arrival_s=1.0, devices=1, work=short,
                    mem_gib=8)]

    r = simulate(fleet([(1, 80, True)]), two(5), make_policy("goodput"), {"a": (1.0,)}, cfg)
    assert ends(r) == {"short": 6.0, "long": 107.0} and r.metrics["migrations"] == 1
    r = simulate(fleet([(1, 80, True)]), two(98), make_policy("goodput"), {"a": (1.0,)}, cfg)
    assert ends(r) == {"long": 100.0, "short": 198.0} and r.metrics["migrations"] == 0


def test_failures_off_lose_nothing():
    """With failures off no goodput is lost, even with throttling on."""
    r = simulate(fleet([(4, 80, False)]), jobs(*[3600.0 * k for k in range(1, 9)]),
                 make_policy("fifo"), {"a": (1.0,)},
                 SimConfig(failures=False, throttles=True))
    assert r.metrics["goodput_lost_device_hours"] == 0
    assert r.metrics["failures"] == 0


def test_lost_work_of_one_long_job_matches_young_daly():
    """One job on one device (MTBF 100 h, C = 60 s, R = 300 s) loses tau/2 + R per failure
    and fails once per MTBF of wall time: total within 10 % of wall x (tau/2 + R) / M."""
    rel = {"mtbf_h": 100.0, "checkpoint_s": 60.0, "restart_s": 300.0, "throttle_per_h": 0.0}
    f = fleet([(1, 80, True)], rel)
    r = simulate(f, jobs(200_000 * 3600.0), make_policy("fifo"), {"a": (1.0,)},
                 SimConfig(seed=3, failures=True, throttles=False))
    m = 100 * 3600.0
    tau = math.sqrt(2 * 60 * m)
    wall = r.metrics["makespan_s"]
    expected = wall / m * (tau / 2 + 300)
    lost = r.metrics["goodput_lost_device_hours"] * 3600
    assert r.metrics["failures"] > 1500
    assert lost == pytest.approx(expected, rel=0.10)
    # and the wall time is the work over the Young/Daly availability
    assert wall == pytest.approx(200_000 * 3600 / (1 - 60 / tau - (tau / 2 + 300) / m),
                                 rel=0.02)


def test_job_that_fits_nowhere_is_reported():
    """A job needing more memory than any device is listed with its reason, not dropped."""
    js = jobs(10) + [Job(id="huge", workload="a", arrival_s=0, devices=1, work=1, mem_gib=200)]
    r = simulate(fleet([(1, 80, True)]), js, make_policy("fifo"), {"a": (1.0,)}, OFF)
    assert r.metrics["jobs_unplaceable"] == 1
    assert r.unplaceable[0][0] == "huge" and "200 GiB" in r.unplaceable[0][1]
    assert r.metrics["jobs_total"] == 2
