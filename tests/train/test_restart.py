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
RUNS = 5  # the verdict is the median run's


def _quartile_of(d: Path, key: str, lo: int, hi: int, attempt_of_last: bool) -> float:
    """The lower quartile of ``key`` over steps lo..hi, from the first or the last time they
    ran. Load only adds to a step's CPU time (a busy machine's cache and memory contention,
    interrupts: bursts of 3x seen on a quiet 2-core VM), so the lower quartile is the step's
    own cost; the median moved by 15-60% between two windows of one run under load."""
    recs: dict[int, float] = {}
    for r in read_jsonl(d / "metrics.jsonl"):
        if "loss" in r and lo <= r["step"] <= hi and (attempt_of_last or r["step"] not in recs):
            recs[r["step"]] = r[key]
    return statistics.quantiles(recs.values(), n=4)[0]


def _resume_ratio(d: Path, device: str, headroom: tuple[str, ...]) -> tuple[float, str]:
    """One run killed at KILL_AT and resumed from memory: the larger of after / before
    (lower quartiles) for the CPU time of a step (what the process computes, whatever the
    machine's load and the padding) and, on an emulated chip, the step budget (the pace the
    chip sets); and each ratio in words."""
    train_cli(d, "train.steps=330", "checkpoint.interval=1000", "train.log_every=100",
              f"launch.device='{device}'", "telemetry.hz=0", *headroom,
              f"faults.inject=['kill@rank=0,step={KILL_AT}']")
    start = events(d, "run_start")[-1]
    assert start["source"] == "memory" and start["resumed_from"] >= KILL_AT - 1
    keys = ["cpu_s", "budget_s"] if device.startswith("emu:") else ["cpu_s"]
    ratios = {k: _quartile_of(d, k, KILL_AT + 30, 330, attempt_of_last=True)
              / _quartile_of(d, k, 40, KILL_AT - 1, attempt_of_last=False) for k in keys}
    return max(ratios.values()), " ".join(f"{k} {v:.3f}" for k, v in ratios.items())


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("device", ["cpu", "emu:nvidia-h20"])
def test_steps_per_s_after_a_resume_from_memory_within_10_percent(tmp_path: Path,
                                                                  device: str) -> None:
    """Rank 0 is killed at step 150 and the group resumes from memory; the CPU time of a
    step after the resume (lower quartile) is within 10% of the one before it, and so is an
    emulated chip's step budget, at headroom 1 (no spare time in the budget to hide a slower
    step). The verdict is the median of 5 runs (stopping once three agree): CPU time does
    not count the waits a shared machine's load adds, but its bursts still moved a window's
    median by up to ~30% in a single run (0.65-1.47 seen, and CI's 1.15 three times); the
    defect this guards against (~3x) is in every step of every run."""
    headroom = ("emulate.headroom=1",) if device.startswith("emu:") else ()
    runs: list[tuple[float, str]] = []
    while max(sum(r <= 1.10 for r, _ in runs), sum(r > 1.10 for r, _ in runs)) <= RUNS // 2:
        runs.append(_resume_ratio(tmp_path / f"run{len(runs)}", device, headroom))
    assert sum(r <= 1.10 for r, _ in runs) > RUNS // 2, (
        f"{device}: after the resume / before = {'; '.join(w for _, w in runs)} "
        f"(lower quartiles; limit 1.10 in the median of {RUNS} runs)")


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
