"""After a restart the job runs as fast as before it (a resume from memory brings back
everything that sets the pace, an emulated chip's calibration included), and ``restarts``
counts every attempt after the first, one killed during start-up included."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from mixfleet.train.rundir import read_jsonl
from tests.conftest import REPO
from tests.train.helpers import DIGITS, events, train_cli

KILL_AT = 150


def _fast_step_s(d: Path, lo: int, hi: int, attempt_of_last: bool) -> float:
    """The lower quartile of the step times of steps lo..hi, from the first or the last
    time they ran: a slower process moves every quantile, while the load of other
    processes on a shared machine mostly inflates the upper ones."""
    recs: dict[int, float] = {}
    for r in read_jsonl(d / "metrics.jsonl"):
        if "loss" in r and lo <= r["step"] <= hi and (attempt_of_last or r["step"] not in recs):
            recs[r["step"]] = r["step_s"]
    return statistics.quantiles(recs.values(), n=4)[0]


@pytest.mark.parametrize("device", ["cpu", "emu:nvidia-h20"])
def test_steps_per_s_after_a_resume_from_memory_within_10_percent(tmp_path: Path,
                                                                  device: str) -> None:
    """Rank 0 is killed at step 150 and the group resumes from memory; the fast step
    time after the resume is within 10% of the one before it (lower quartiles). A slower
    process after a resume (the defect this guards against made it ~3x) is slower in every
    run; the load of a shared machine comes and goes within seconds, so a run whose two
    phases met different load is run again (at most 5 runs; one within 10% passes: on a
    2-core VM a single run of an unchanged loop lands above 1.10 in about one run in four)."""
    ratios = []
    for attempt in range(5):
        d = tmp_path / f"run{attempt}"
        train_cli(d, "train.steps=330", "checkpoint.interval=1000", "train.log_every=100",
                  f"launch.device='{device}'", "telemetry.hz=0",
                  f"faults.inject=['kill@rank=0,step={KILL_AT}']")
        start = events(d, "run_start")[-1]
        assert start["source"] == "memory" and start["resumed_from"] >= KILL_AT - 1
        before = _fast_step_s(d, 40, KILL_AT - 1, attempt_of_last=False)
        after = _fast_step_s(d, KILL_AT + 30, 330, attempt_of_last=True)
        ratios.append(after / before)
        if after <= 1.10 * before:
            return
    pytest.fail(f"{device}: step time after the resume / before = "
                f"{', '.join(f'{r:.3f}' for r in ratios)} in {len(ratios)} runs (limit 1.10)")


def test_restarts_count_an_attempt_killed_during_start_up(tmp_path: Path) -> None:
    """Rank 1 is killed while starting (before it resumed) and rank 0 later at step 60:
    three attempts, so restarts = 2."""
    d = tmp_path / "run"
    s = train_cli(d, "train.steps=100", "checkpoint.interval=50", "train.log_every=100",
                  "telemetry.hz=0",
                  "faults.inject=['kill-in-startup@rank=1', 'kill@rank=0,step=60']")
    kinds = [e["kind"] for e in events(d, "fault_injected")]
    assert kinds == ["kill-in-startup", "kill"]
    assert len(events(d, "run_start")) == 2  # the first attempt never got to resume
    assert s["restarts"] == 2


TORCH_LOG_LINE = re.compile(r"^\[?[IWEF]\d{4} \d\d:\d\d:\d\d")  # glog style: E1207 17:42:21.5


def test_a_kill_prints_mixfleets_lines_and_logs_torchruns(tmp_path: Path) -> None:
    """After an expected kill the console (stdout and stderr) carries no line of
    torchrun's own (``E... failed (exitcode: ...)``, its traceback) and mixfleet reports the
    restart in its own line; the run's torchrun.log has torchrun's line."""
    d = tmp_path / "run"
    p = subprocess.run([sys.executable, "-P", "-m", "mixfleet", "train", str(DIGITS),
                        "--nproc", "2", "--run-dir", str(d), "--set", "train.steps=60",
                        "--set", "checkpoint.interval=20", "--set", "telemetry.hz=0",
                        "--set", "faults.inject=['kill@rank=1,step=30']"],
                       cwd=REPO, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-4000:]
    console = (p.stdout + p.stderr).splitlines()
    assert not [x for x in console if TORCH_LOG_LINE.match(x) or "ChildFailedError" in x
                or x.startswith("Traceback")], p.stdout + p.stderr
    assert [x for x in console if "resumed from step" in x and "restart #1" in x], console
    log = (d / "torchrun.log").read_text().splitlines()
    assert [x for x in log if TORCH_LOG_LINE.match(x) and "failed (exitcode: " in x], log
