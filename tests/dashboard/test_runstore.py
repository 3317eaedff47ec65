"""A run as the dashboard reads it: the report equals `mixfleet report`, incremental reads
equal a fresh read, and a huge run answers fast with a bounded number of points."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mixfleet.dashboard.runstore import RunStore
from mixfleet.report.timeline import run_report
from tests.dashboard.conftest import make_synthetic_run, step_record, write_jsonl


def _restarted_run(root: Path) -> Path:
    """Steps 1-30, a crash, steps 21-40 again (21-30 redone), a hang, a cooling pause."""
    make_synthetic_run(root, n_steps=30)
    write_jsonl(root / "events.jsonl", [
        {"t": 1001.2, "event": "thermal_warning", "rank": 1, "step": 20, "temp_c": 90.0,
         "warn_c": 83.0},
        {"t": 1001.25, "event": "thermal_resumed", "rank": 1, "step": 20, "paused_s": 0.7},
        {"t": 1001.3, "event": "hang_detected", "rank": 0, "waited_s": 3.5},
        {"t": 1001.3, "event": "hang_detected", "rank": 1, "waited_s": 3.5},
        {"t": 1005.0, "event": "run_start", "attempt": 1, "steps_lost": 10},
        {"t": 1005.0, "event": "fault_injected", "kind": "kill", "rank": 0, "step": 30}],
        mode="a")
    write_jsonl(root / "metrics.jsonl",
                [step_record(s, 1005.0 + 0.02 * s, step_s=0.02) for s in range(21, 41)],
                mode="a")
    return root


def test_report_equals_mixfleet_report_on_a_real_run(trained_run: Path) -> None:
    """ETTR, restarts, steps lost and failure time of a real run with a kill and a
    thermal pause equal `mixfleet report --json`."""
    s = RunStore(trained_run)
    s.refresh(None, None)
    ref = run_report(trained_run)
    assert ref["restarts"] >= 1 and ref["failure_time_s"]["cooling"] > 0
    assert s.report() == ref


def test_report_equals_mixfleet_report_with_redone_steps(tmp_path: Path) -> None:
    """With a restart that redoes steps, a hang and a cooling pause, the dashboard's
    report equals `mixfleet report`'s, read at once or in many small pieces."""
    run = _restarted_run(tmp_path / "r")
    ref = run_report(run)
    assert ref["failure_time_s"]["redone_steps"] > 0
    whole = RunStore(run)
    whole.refresh(None, None)
    pieces = RunStore(run)
    while True:
        pieces.refresh(300, None)
        if pieces.complete:
            break
    assert whole.report() == ref
    assert pieces.report() == ref


def test_appended_records_equal_a_fresh_read(tmp_path: Path) -> None:
    """A store that saw the file grow shows the same series as one that read it at once."""
    run = make_synthetic_run(tmp_path / "r", n_steps=20)
    live = RunStore(run)
    first = live.data(points=1000)
    assert first["series"]["loss"]["records"] == 20
    write_jsonl(run / "metrics.jsonl", [step_record(s, 1001.0 + 0.01 * s, loss=2.0 / s)
                                        for s in range(21, 31)], mode="a")
    grown = live.data(points=1000)
    fresh = RunStore(run).data(points=1000)
    assert grown["version"] > first["version"]
    assert grown["series"] == fresh["series"] and grown["report"] == fresh["report"]
    assert grown["series"]["loss"]["records"] == 30


def test_shares_per_rank_over_time_follow_the_events(tmp_path: Path) -> None:
    """Shares start as the fleet event says, change at each shares_changed event, and
    last until the newest step."""
    run = make_synthetic_run(tmp_path / "r", n_steps=40)
    d = RunStore(run).data()
    assert [(s["x"], s["shares"]) for s in d["shares"]] == [
        (1.0, [32, 32]), (1.2, [40, 24]), (1.4, [40, 24])]


def test_bad_files_are_reported_not_raised(tmp_path: Path) -> None:
    """A corrupt line, a truncated last line and a folder that is no run are named."""
    run = make_synthetic_run(tmp_path / "r", n_steps=5)
    with (run / "metrics.jsonl").open("a") as f:
        f.write("not json\n")
        f.write('{"step": 6, "lo')
    s = RunStore(run, clock=lambda: time.time() + 3600)  # idle: the torn line is final
    d = s.data()
    assert d["series"]["loss"]["records"] == 5
    text = " ".join(d["problems"])
    assert "1 corrupt line(s)" in text and "line 7" in text and "truncated" in text
    with (run / "events.jsonl").open("a") as f:
        f.write('{"event": "drain"}\n{"t": "soon", "event": "finish"}\n')
    assert "2 record(s) without a numeric" in " ".join(s.data()["problems"])
    empty = RunStore(tmp_path / "nothing-here")
    assert "not a run directory" in " ".join(empty.data()["problems"])


def _big_run(root: Path, n: int, spike_at: int) -> Path:
    root.mkdir(parents=True)
    (root / "events.jsonl").write_text(json.dumps({"t": 0.0, "event": "launch"}) + "\n")
    rec = ('{"step":%d,"loss":%s,"lr":0.05,"step_s":0.01,"samples_per_s":6400.0,'
           '"t":%.3f}\n')
    with (root / "metrics.jsonl").open("w") as f:
        for lo in range(0, n, 100_000):
            f.write("".join(rec % (i + 1, "99.0" if i == spike_at else "1.5", 0.01 * (i + 1))
                            for i in range(lo, min(n, lo + 100_000))))
    return root


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _big_run(tmp_path_factory.mktemp("big") / "run", 1_000_000, spike_at=777_777)


def test_a_million_record_run_answers_fast_with_bounded_points(million: Path) -> None:
    """The first answer for a 1,000,000-record run comes within a second or two (it reads
    a bounded part and samples the rest) and holds at most ~points points per series."""
    s = RunStore(million)
    t = time.perf_counter()
    d = s.data(points=1000)
    took = time.perf_counter() - t
    assert took < 3.0, took
    assert not d["complete"] and d["preview_points"] > 0
    n = len(d["series"]["loss"]["x"])
    assert 100 < n <= 1000 + d["preview_points"] + 2
    xs = [v for v in d["series"]["loss"]["x"] if v is not None]
    assert max(xs) > 9000  # the preview reaches the end of the run (t = 10,000 s)


@pytest.mark.slow
def test_a_million_record_run_read_to_the_end_keeps_its_spike(million: Path) -> None:
    """Read to the end in bounded pieces, the 1,000-point chart still shows the one
    spike of 1,000,000 steps, and every step is counted once."""
    s = RunStore(million)
    while not s.complete:
        s.refresh()
    d = s.data(points=1000)
    assert d["series"]["loss"]["records"] == 1_000_000
    assert max(v for v in d["series"]["loss"]["y"] if v is not None) == 99.0
    assert len(d["series"]["loss"]["x"]) <= 1000


def test_time_lost_by_cause_adds_up_to_the_time_not_spent_in_productive_steps(
        trained_run: Path) -> None:
    """On a real run with a kill and a thermal pause, the causes (start-up, warm-up,
    restart, hang, cooling, redone steps, other) add up to wall - productive within
    rounding; start-up, restart and cooling are each there, and the unattributed rest is a
    small part of the lost time."""
    s = RunStore(trained_run)
    s.refresh(None, None)
    rep = s.report()
    lost = rep["failure_time_s"]
    assert list(lost) == ["startup", "warmup", "restart_downtime", "hang_detection",
                          "cooling", "redone_steps", "other"]
    assert abs(sum(lost.values()) - (rep["wall_s"] - rep["productive_s"])) <= 0.004
    assert lost["startup"] > 0 and lost["restart_downtime"] > 0 and lost["cooling"] > 0
    assert 0 <= lost["other"] < 0.1 * (rep["wall_s"] - rep["productive_s"])
    # (productive_s and wall_s are rounded to the ms, ettr from the unrounded figures)
    assert abs(rep["ettr"] - rep["productive_s"] / rep["wall_s"]) <= 1e-4


def test_the_cooling_pause_is_lost_time_not_productive(tmp_path: Path) -> None:
    """A 0.7 s pause inside a step's time is taken out of the productive time, once even
    when another rank paused at the same time; the start-up before the first step is its
    own cause."""
    run = tmp_path / "r"
    make_synthetic_run(run, n_steps=10)  # launch at 1000, steps of 0.01 s from 1001.0
    write_jsonl(run / "metrics.jsonl", [step_record(11, 1001.81, step_s=0.71)], mode="a")
    write_jsonl(run / "events.jsonl", [
        {"t": 1001.75, "event": "thermal_resumed", "rank": 0, "step": 10, "paused_s": 0.5},
        {"t": 1001.8, "event": "thermal_resumed", "rank": 1, "step": 10, "paused_s": 0.7}],
        mode="a")
    rep = run_report(run)
    lost = rep["failure_time_s"]
    assert lost["cooling"] == 0.7 and lost["startup"] == 1.0
    assert rep["productive_s"] == 0.11 and rep["wall_s"] == 1.81
    assert abs(sum(lost.values()) - (rep["wall_s"] - rep["productive_s"])) <= 0.004


def test_a_pipeline_runs_stages_are_on_the_run_page(tmp_path: Path) -> None:
    """A pipeline run's page data holds the stages of its newest attempt (chip, ranks,
    blocks, predicted time and memory, bubble), and a re-split is marked on the axis."""
    run = make_synthetic_run(tmp_path / "r", n_steps=10)
    first = [{"chip": "kunlun-p800", "ranks": 2, "blocks": 7, "predicted_s": 0.84,
              "predicted_gib": 49.0},
             {"chip": "nvidia-h20", "ranks": 2, "blocks": 9, "predicted_s": 0.85,
              "predicted_gib": 60.1}]
    second = [dict(first[0], blocks=6), dict(first[1], blocks=10)]
    common = {"microbatches": 32, "lanes": 2, "schedule": "1f1b", "virtual_stages": 1,
              "stage_mode": "fsdp", "bubble": 0.0303, "basis": "predicted", "order": [0, 1]}
    write_jsonl(run / "events.jsonl", [
        {"t": 1001.0, "event": "stages", "attempt": 0, "stages": first, **common},
        {"t": 1001.1, "event": "stages_changed", "old": first, "new": second, "step": 5},
        {"t": 1001.2, "event": "stages", "attempt": 0, "stages": second, **common}], mode="a")
    d = RunStore(run).data()
    assert d["stages"]["stages"] == second and d["stages"]["bubble"] == 0.0303
    assert [e["event"] for e in d["events"]].count("stages_changed") == 1
    assert RunStore(make_synthetic_run(tmp_path / "dp", n_steps=3)).data()["stages"] is None


def test_a_pipeline_runs_measured_stage_times_are_those_of_its_last_split(
        tmp_path: Path) -> None:
    """The measured time per micro-batch shown beside each stage is the newest
    ``stage_times`` after the newest ``stages`` event (a re-split's old measurements are
    not shown under the new split), divided by an emulated run's time scale and labelled
    emulated."""
    run = make_synthetic_run(tmp_path / "r", n_steps=10)
    st = [{"chip": "kunlun-p800", "ranks": 1, "blocks": 2, "predicted_s": 0.8},
          {"chip": "nvidia-h20", "ranks": 1, "blocks": 2, "predicted_s": 0.7}]
    common = {"microbatches": 8, "lanes": 1, "schedule": "1f1b", "virtual_stages": 1,
              "stage_mode": "dp", "bubble": 0.1111, "basis": "predicted", "order": [0, 1]}
    times = {"event": "stage_times", "steps": 4, "bubble": 0.2, "emulated": True}
    write_jsonl(run / "events.jsonl", [
        {"t": 1000.5, "event": "emulated_as", "emulated_as": "llama3-8b", "time_scale": 0.001},
        {"t": 1001.0, "event": "stages", "attempt": 0, "stages": st, **common},
        {"t": 1001.1, "event": "stage_times", "step": 4, "measured_s": [0.002, 0.0007],
         **times}], mode="a")
    d = RunStore(run).data()["stages"]
    assert [s["measured_s"] for s in d["stages"]] == [2.0, 0.7]
    assert d["measured_bubble"] == 0.2 and d["measured_step"] == 4
    assert d["measured_label"].startswith("emulated")
    write_jsonl(run / "events.jsonl", [
        {"t": 1001.2, "event": "stages", "attempt": 1, "stages": st, **common}], mode="a")
    d = RunStore(run).data()["stages"]
    assert "measured_bubble" not in d and all("measured_s" not in s for s in d["stages"])
