import json
import math

import pytest
from sim_helpers import fleet

from mixfleet.cli import main
from mixfleet.errors import ConfigError
from mixfleet.fleet.model import Job
from mixfleet.fleet.policies import make_policy
from mixfleet.fleet.policies.gavel import solve_max_min
from mixfleet.fleet.policies.goodput import GoodputPolicy
from mixfleet.sim import SimConfig, simulate
from mixfleet.sim.gavel import gavel_style_jobs, read_gavel_throughputs, read_gavel_trace


def res(n):
    """goodput with ``n`` reservations and stops off (the reservation tests' subject)."""
    return GoodputPolicy(reservations=n, preempt_gain=math.inf)


ORACLE = SimConfig(failures=False, throttles=False, migration_s=60.0, estimates="oracle")


def J(i, arrival, devices, work):
    return Job(id=i, workload="a", arrival_s=arrival, devices=devices, work=work, mem_gib=8)


def runs(result):
    return {j.id: (j.start_s, j.end_s, j.pools) for j in result.jobs}


def test_fitting_job_backfills_ahead_of_a_reservation_it_does_not_delay():
    """goodput with a reservation (stops off): R (4 devices) holds the fast pool from
    t=1000; S (done by t=102 there) starts at once on the reserved devices, L (which would
    run past t=1000) does not take them and starts on the slow pool; R still starts at
    1000."""
    f = fleet([(4, 80, True), (4, 80, False)])
    js = [J("X", 0.0, 2, 6000.0), J("R", 1.0, 4, 4000.0), J("S", 2.0, 1, 300.0),
          J("L", 3.0, 1, 30000.0)]
    r = runs(simulate(f, js, res(1), {"a": (3.0, 0.1)}, ORACLE))
    assert r["S"][:2] == (2.0, 2.0 + 100.0) and r["S"][2] == (0,)
    assert r["L"][0] == 3.0 and 1 in r["L"][2]
    assert r["R"][0] == pytest.approx(1000.0) and r["R"][2] == (0,)


def test_strict_reservation_would_have_left_devices_idle():
    """Reference for the test above: without backfilling (S may not use held devices),
    S could only start on the slow pool or wait; with it, S uses idle reserved devices."""
    f = fleet([(4, 80, True), (4, 80, False)])
    js = [J("X", 0.0, 2, 6000.0), J("R", 1.0, 4, 4000.0), J("S", 2.0, 1, 300.0)]
    with_bf = runs(simulate(f, js, res(1), {"a": (3.0, 0.1)}, ORACLE))
    no_res = runs(simulate(f, js, res(0), {"a": (3.0, 0.1)}, ORACLE))
    assert with_bf["S"][1] <= no_res["S"][1]
    assert with_bf["R"][1] < no_res["R"][1]  # the reservation pays for R


@pytest.mark.parametrize("name", ["srtf", "goodput"])
def test_job_moves_to_a_3x_faster_pool_when_it_frees_and_the_move_pays(name):
    """B starts on the 3x slower pool while A holds the fast one; when A ends at t=100, B
    (2,901 s left there, 967 s on the fast pool) moves, pays 60 s, and ends at
    100 + 60 + 2901/3; a job whose gain is below 2 migration stalls (111 s left at t=50:
    74 s saved < 120 s) stays."""
    f = fleet([(1, 80, True), (1, 80, False)])
    sp = {"a": (3.0, 1.0)}
    r = runs(simulate(f, [J("A", 0.0, 1, 300.0), J("B", 1.0, 1, 3000.0)],
                      make_policy(name), sp, ORACLE))
    assert r["B"][0] == 1.0 and r["B"][2] == (0, 1)
    assert r["B"][1] == pytest.approx(100.0 + 60.0 + 2901.0 / 3.0)
    r = runs(simulate(f, [J("A", 0.0, 1, 150.0), J("B", 1.0, 1, 160.0)],
                      make_policy(name), sp, ORACLE))
    assert r["B"][2] == (1,) and r["B"][1] == pytest.approx(161.0)


def test_gavel_weights_each_job_by_its_devices():
    """On one 4-device pool, a 1-device and a 4-device job: with Gavel's device weighting
    the 1-device job gets its full time (X=1) and the 4-device one at least 1/4; without
    it both get the same share 0.8."""
    _, x = solve_max_min([{0: 1.0}, {0: 1.0}], [1, 4], [4.0], weights=[1.0, 4.0])
    assert x[0][0] == pytest.approx(1.0) and x[1][0] >= 0.25 - 1e-9
    _, y = solve_max_min([{0: 1.0}, {0: 1.0}], [1, 4], [4.0])
    assert y[0][0] == pytest.approx(0.8) and y[1][0] == pytest.approx(0.8)


def test_every_job_unplaceable_is_an_error_not_zeros(tmp_path, capsys):
    """A trace none of whose jobs fits the fleet raises ConfigError (the CLI exits 2)
    instead of reporting an average JCT of 0."""
    f = fleet([(2, 16, True)])
    with pytest.raises(ConfigError, match="none of the 2 jobs fits"):
        simulate(f, [J("a", 0.0, 4, 10.0), J("b", 1.0, 8, 10.0)], make_policy("fifo"),
                 {"a": (1.0,)}, ORACLE)
    fl = tmp_path / "f.toml"
    fl.write_text('reference_chip = "nvidia-h800"\n[[pool]]\nchip = "nvidia-t4"\n'
                  'nodes = 1\nper_node = 1\n')
    rc = main(["simulate", "--fleet", str(fl), "--trace", "synthetic:20", "--policy", "fifo",
               "--seed", "3"])
    assert rc == 2 and "fits any pool" in capsys.readouterr().err


def write_gavel(tmp_path):
    tp = {"v100": {"('ResNet-50 (batch size 64)', 1)": {"null": 4.0},
                   "('LM (batch size 20)', 4)": {"null": 10.0, "('LM (batch size 20)', 4)":
                                                [5.0, 5.0]}},
          "p100": {"('ResNet-50 (batch size 64)', 1)": {"null": 1.0},
                   "('LM (batch size 20)', 4)": {"null": 5.0}}}
    (tmp_path / "tp.json").write_text(json.dumps(tp))
    lines = ["ResNet-50 (batch size 64)\tpython main.py\tdir\t--num_steps\t1\t4000\t1\t1\t-1"
             "\t0", "LM (batch size 20)\tpython lm.py\tdir\t--steps\t1\t20000\t4\t1\t-1\t30"]
    (tmp_path / "trace.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "fleet.toml").write_text(
        'name = "gavel"\nreference_chip = "nvidia-v100"\n'
        '[[pool]]\nchip = "nvidia-v100"\nnodes = 1\nper_node = 4\n'
        '[[pool]]\nchip = "nvidia-p100"\nnodes = 1\nper_node = 4\n')


def test_gavel_trace_and_throughputs_replay_with_per_job_classes(tmp_path, capsys):
    """A Gavel-format trace and simulation_throughputs.json (written here) replay: each job
    has its (type, scale factor) class, its work is its steps over the V100's steps/s
    times its devices, P100 speeds are Gavel's ratios, and simulate completes both jobs."""
    write_gavel(tmp_path)
    tputs = read_gavel_throughputs(tmp_path / "tp.json")
    jobs = read_gavel_trace(tmp_path / "trace.txt", tputs, "nvidia-v100")
    assert [(j.workload, j.devices, j.work, j.arrival_s) for j in jobs] == [
        ("ResNet-50 (batch size 64) x1", 1, 1000.0, 0.0),
        ("LM (batch size 20) x4", 4, 8000.0, 30.0)]
    out = tmp_path / "out"
    rc = main(["simulate", "--fleet", str(tmp_path / "fleet.toml"), "--trace",
               f"gavel:{tmp_path / 'trace.txt'}", "--throughput",
               f"gavel:{tmp_path / 'tp.json'}", "--no-failures", "--policy", "fifo",
               "--policy", "goodput", "--estimates", "oracle", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((out / "results.json").read_text())
    assert all(p["jobs_completed"] == 2 for p in doc["policies"])
    # fifo: ResNet on the V100s for 1000 s; LM (4 devices) on the P100s at 0.5x: 4000 s
    assert doc["policies"][0]["makespan_s"] == pytest.approx(30.0 + 4000.0)
    text = capsys.readouterr().out
    assert "ORACLE" in text


def test_gavel_trace_without_throughputs_is_a_clear_error(tmp_path, capsys):
    """--trace gavel:FILE without --throughput gavel:FILE exits 2 naming the fix."""
    write_gavel(tmp_path)
    rc = main(["simulate", "--fleet", str(tmp_path / "fleet.toml"), "--trace",
               f"gavel:{tmp_path / 'trace.txt'}", "--policy", "fifo"])
    assert rc == 2 and "--throughput gavel:" in capsys.readouterr().err


def test_gavel_style_generator_matches_gavel_mix():
    """Gavel-style jobs: 70% single-device, sizes in {1, 2, 4, 8}, durations between 10^1.5
    and 10^4 minutes, arrivals at the requested rate (within 15%)."""
    jobs = gavel_style_jobs(2000, 1.0, 0, {"a": (1.0,), "b": (1.0,)})
    sizes = [j.devices for j in jobs]
    assert set(sizes) <= {1, 2, 4, 8} and 0.65 < sizes.count(1) / len(sizes) < 0.75
    mins = [j.work / j.devices / 60 for j in jobs]
    assert min(mins) >= 10 ** 1.5 - 1e-6 and max(mins) <= 10 ** 4 + 1e-6
    rate = len(jobs) / (jobs[-1].arrival_s / 3600)
    assert 0.85 < rate < 1.15


def test_goodput_gives_less_work_to_a_pool_that_fails_10x_as_often():
    """Two equally fast pools, one with 10x the failure rate: under goodput the flaky pool
    does less of the work than the reliable one, and less than under fifo (which ignores
    reliability)."""
    from sim_helpers import chip

    from mixfleet.fleet.model import parse_fleet

    cat = {"good": chip("good", 80, "nvidia"), "bad": chip("bad", 80, "other")}
    data = {"reference_chip": "good",
            "pool": [{"id": "bad", "chip": "bad", "nodes": 1, "per_node": 8,
                      "reliability": {"mtbf_h": 50.0, "throttle_per_h": 0.0}},
                     {"id": "good", "chip": "good", "nodes": 1, "per_node": 8,
                      "reliability": {"mtbf_h": 500.0, "throttle_per_h": 0.0}}]}
    f = parse_fleet(data, "t.toml", cat)
    js = [J(f"j{i}", 600.0 * i, 4, 4 * 3600.0) for i in range(40)]
    share = {}
    for name in ("fifo", "goodput"):
        r = simulate(f, js, make_policy(name), {"a": (1.0, 1.0)},
                     SimConfig(seed=1, estimates="oracle"))
        bad = sum(j.work_by_pool[0] for j in r.jobs)
        share[name] = bad / sum(j.work for j in r.jobs)
    assert share["goodput"] < 0.5 and share["goodput"] < share["fifo"]


def test_sensitivity_reports_a_ranking_per_variant():
    """--sensitivity's library call returns the baseline plus each figure halved and
    doubled, each with the policies ranked by average JCT, flagged when the ranking moves;
    doubling the MTBF of every pool really changes the fleet's profiles."""
    from mixfleet.sim.sensitivity import FIGURES, sensitivity, vary_fleet

    f = fleet([(4, 80, True), (4, 80, False)])
    js = [J(f"j{i}", 100.0 * i, 1 + i % 3, 2000.0 * (1 + i % 4)) for i in range(12)]
    vs = sensitivity(f, js, lambda: [make_policy("fifo"), make_policy("goodput")],
                     {"a": (1.0, 0.7)}, SimConfig(seed=0))
    assert len(vs) == 1 + 2 * len(FIGURES) and vs[0].figure is None
    for v in vs:
        assert sorted(v.ranking) == ["fifo", "goodput"]
        assert v.changed == (v.ranking != vs[0].ranking)
        assert list(v.ranking) == sorted(v.jct_avg_s, key=lambda n: (v.jct_avg_s[n], n))
    g = vary_fleet(f, "mtbf_h", 2.0)
    assert [p.reliability.mtbf_h for p in g.pools] == [2 * p.reliability.mtbf_h
                                                      for p in f.pools]


def test_simulate_sensitivity_prints_the_ranking_table(capsys):
    """`simulate --sensitivity` prints one row per variant and how many changed the
    ranking, and labels the thin reliability sources."""
    rc = main(["simulate", "--fleet", "examples/fleet-mixed.toml", "--trace", "synthetic:20",
               "--policy", "fifo", "--policy", "goodput", "--sensitivity"])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "mtbf_h" in out and "throttle_slowdown" in out and "of 12 variants" in out
    assert "unpublished report" in out
