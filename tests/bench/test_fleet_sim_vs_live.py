"""The helpers of benchmarks/fleet_sim_vs_live.py: arrival gaps, a solo run's rate, the
host's share of a chip's step, and its flags' bounds (the benchmark itself is not run)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench():
    spec = importlib.util.spec_from_file_location(
        "fleet_sim_vs_live", ROOT / "benchmarks" / "fleet_sim_vs_live.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fleet_sim_vs_live"] = mod
    spec.loader.exec_module(mod)
    return mod


def write(d: Path, recs: list[dict]) -> Path:
    d.mkdir()
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n{torn")
    return d


def test_arrivals_keep_the_minimum_gap_and_repeat_with_the_seed():
    """Every gap is at least min_gap, the exponential part has the seed's draws (the same
    seed repeats them, another does not), and gap 0 gives exactly min_gap."""
    b = bench()
    a = b.arrivals(6, 2.0, 10.0, seed=0)
    assert a[0] == 0.0 and len(a) == 6
    assert all(y - x >= 10.0 for x, y in zip(a, a[1:], strict=False))
    assert a == b.arrivals(6, 2.0, 10.0, seed=0) != b.arrivals(6, 2.0, 10.0, seed=1)
    assert b.arrivals(4, 0.0, 3.0, seed=0) == [0.0, 3.0, 6.0, 9.0]


def test_steady_rate_leaves_out_the_first_steps_and_other_records(tmp_path):
    """Steps 1-3 (slow) and event/telemetry records do not count: 10 steps of 64 samples
    at 0.5 s each after step 3, on 2 devices, are 64 samples/s per device."""
    recs = [{"step": s, "t": 100.0 + (5.0 if s > 3 else 0.0) + 0.5 * s} for s in range(1, 14)]
    recs.insert(2, {"kind": "telemetry", "t": 101.0, "step": 99})
    assert bench().steady(write(tmp_path / "r", recs), 64, 2) == pytest.approx(64.0)


def test_host_share_is_the_median_cpu_share_and_the_late_steps(tmp_path):
    """cpu_s / budget_s medians over all runs; a step over 1.1 x its budget is late;
    records without a budget (not emulated) are left out."""
    b = bench()
    r1 = write(tmp_path / "a", [{"step": 1, "t": 1, "cpu_s": 0.01, "budget_s": 1.0,
                                 "step_s": 1.0},
                                {"step": 2, "t": 2, "cpu_s": 0.03, "budget_s": 1.0,
                                 "step_s": 1.2}])
    r2 = write(tmp_path / "b", [{"step": 1, "t": 1, "cpu_s": 0.02, "budget_s": 1.0,
                                 "step_s": 1.05},
                                {"step": 2, "t": 2, "cpu_s": 0.5, "step_s": 0.5}])
    cpu, late = b.host_share([r1, r2])
    assert cpu == pytest.approx(0.02) and late == pytest.approx(1 / 3)


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--solo-steps", "3"],
                                  ["--sample-s", "0"], ["--gap", "-1"], ["--min-gap", "-2"]])
def test_out_of_range_flags_exit_2_naming_the_flag(argv, capsys):
    """A flag out of range exits 2 with a message naming it and the fix."""
    with pytest.raises(SystemExit) as e:
        bench().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err and "use" in err
