"""SIGKILL of a rank (at a random step, or while a checkpoint is being written) ends with
parameters bit-identical to an uninterrupted run; 1 and 2 ranks follow the same loss curve.

These start real torchrun jobs with 2 gloo ranks on the CPU (deterministic algorithms on).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from mixfleet.train.rundir import read_jsonl
from tests.train.helpers import (
    BASE,
    INTERVAL,
    STEPS,
    bit_identical,
    events,
    final_weights,
    losses,
    train_cli,
)

RNG = random.Random(20261128)  # the "random" steps, reproducible from run to run


def _lost_bound(run_dir: Path, kill_step: int) -> int:
    """Steps lost allowed: back to the checkpoint at or before the kill, or one interval
    more when that checkpoint was still being written when the rank died."""
    ckpt = (kill_step // INTERVAL) * INTERVAL
    committed_before_kill = False
    for e in events(run_dir):
        if e["event"] == "checkpoint_committed" and e["step"] == ckpt:
            committed_before_kill = True
        if e["event"] in ("fault_injected", "peer_lost"):
            break
    return kill_step - ckpt + (0 if committed_before_kill or ckpt == 0 else INTERVAL)


@pytest.mark.parametrize("rank", [0, 1])
def test_kill_at_random_step_matches_uninterrupted(tmp_path: Path, reference: Path,
                                                   rank: int) -> None:
    """SIGKILL of rank 0 or 1 at a random step: restart, resume from the in-memory
    snapshot (at most snapshot_interval = 1 step lost), bit-identical weights."""
    step = RNG.randrange(1, STEPS)
    d = tmp_path / "run"
    s = train_cli(d, *BASE, f"faults.inject=['kill@rank={rank},step={step}']")
    assert s["restarts"] == 1, f"kill at step {step}"
    assert bit_identical(final_weights(d), final_weights(reference)), f"kill at step {step}"
    assert events(d, "run_start")[-1]["source"] == "memory"
    assert s["steps_lost"] <= 1, f"kill at step {step}"


def test_kill_from_disk_only_loses_at_most_an_interval(tmp_path: Path, reference: Path) -> None:
    """With memory snapshots off, a kill resumes from the last disk checkpoint (at most one
    interval back, one more if that checkpoint was still being written) and still ends
    bit-identical."""
    step = RNG.randrange(1, STEPS)
    d = tmp_path / "run"
    s = train_cli(d, *BASE, "checkpoint.snapshot_interval=0",
                  f"faults.inject=['kill@rank=1,step={step}']")
    assert s["restarts"] == 1
    assert events(d, "run_start")[-1]["source"] in ("disk", None)
    assert bit_identical(final_weights(d), final_weights(reference)), f"kill at step {step}"
    assert s["steps_lost"] <= _lost_bound(d, step) <= 2 * INTERVAL, f"kill at step {step}"


def test_paced_snapshots_lose_at_most_the_interval_in_effect(tmp_path: Path,
                                                              reference: Path) -> None:
    """With the default pacing, as a user runs it (no snapshot setting), the interval the
    ranks agreed on and in effect at the kill (read from the run's events) bounds the steps
    lost, and the result is still bit-identical."""
    d = tmp_path / "run"
    s = train_cli(d, *BASE, "faults.inject=['kill@rank=1,step=500']",
                  pin_snapshots=False)
    every = events(d)
    starts = [i for i, e in enumerate(every) if e["event"] == "run_start"]
    assert len(starts) == 2
    # the first attempt's intervals (the restarted one paces afresh from its own start)
    paced = [e for e in every[: starts[1]] if e["event"] == "snapshot_interval"]
    assert paced, "digits-cnn's snapshots cost over 0.5% of its steps: the interval must grow"
    assert all(b["interval"] > a["interval"] for a, b in zip(paced, paced[1:], strict=False))
    kill = [e["step"] for e in every if e["event"] == "fault_injected"]
    assert kill == [500]
    agreed = [e["interval"] for e in paced if e["step"] <= kill[0]]
    assert agreed, f"no interval agreed before the kill at step 500: {paced}"
    in_effect = agreed[-1]
    assert s["restarts"] == 1 and events(d, "run_start")[-1]["source"] == "memory"
    assert 0 <= s["steps_lost"] <= in_effect, (s["steps_lost"], in_effect, paced)
    assert bit_identical(final_weights(d), final_weights(reference))


@pytest.mark.parametrize("snapshots", [0, 1])
def test_kill_while_checkpoint_is_written_matches_uninterrupted(tmp_path: Path,
                                                                reference: Path,
                                                                snapshots: int) -> None:
    """SIGKILL after a rank wrote its checkpoint files but before the commit: the torn
    checkpoint is never used (resume from the previous one, or from memory), and the
    result is still bit-identical."""
    step = INTERVAL * RNG.randrange(2, STEPS // INTERVAL)
    d = tmp_path / "run"
    s = train_cli(d, *BASE, f"checkpoint.snapshot_interval={snapshots}",
                  f"faults.inject=['kill-in-checkpoint@rank=1,step={step}']")
    assert s["restarts"] == 1
    start = events(d, "run_start")[-1]
    if snapshots:
        assert start["source"] == "memory" and start["resumed_from"] >= step
        assert s["steps_lost"] <= 1
    else:
        assert start["resumed_from"] == step - INTERVAL  # the torn one was not used
        assert s["steps_lost"] <= 2 * INTERVAL
    assert bit_identical(final_weights(d), final_weights(reference))


@pytest.mark.slow
def test_external_sigkill_matches_uninterrupted(tmp_path: Path, reference: Path) -> None:
    """A SIGKILL sent from outside (as an OOM killer would) to rank 1 mid-run."""
    d = tmp_path / "run"
    target = RNG.randrange(100, STEPS - 100)
    done = threading.Event()

    def killer() -> None:
        while not done.is_set():
            last = max((r["step"] for r in read_jsonl(d / "metrics.jsonl") if "loss" in r),
                       default=0)
            pid = d / "pids" / "rank1"
            if last >= target and pid.exists():
                os.kill(int(pid.read_text()), signal.SIGKILL)
                return
            time.sleep(0.01)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    s = train_cli(d, *BASE)
    done.set()
    assert s["restarts"] == 1
    assert bit_identical(final_weights(d), final_weights(reference))


def test_one_and_two_ranks_follow_the_same_loss_curve(tmp_path: Path, reference: Path) -> None:
    """1 rank and 2 ranks: the same global batches, so the same losses up to float rounding
    (rel. 1e-3 over the first 100 steps, where rounding has not yet compounded)."""
    d = tmp_path / "one"
    train_cli(d, *BASE, "launch.max_restarts=0", nproc=1)
    one, two = losses(d), losses(reference)
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    for step in range(1, 101):
        assert one[step] == pytest.approx(two[step], rel=1e-3, abs=1e-6), step
    assert one[1] != one[100]  # the curve moves


@pytest.mark.slow
def test_sigterm_gasps_and_the_run_matches(tmp_path: Path, reference: Path) -> None:
    """SIGTERM to a rank (a preemption): it persists its snapshot (dying gasp) before it
    exits; the restarted run is bit-identical."""
    d = tmp_path / "run"
    target = RNG.randrange(100, STEPS - 100)
    done = threading.Event()

    def terminator() -> None:
        while not done.is_set():
            last = max((r["step"] for r in read_jsonl(d / "metrics.jsonl") if "loss" in r),
                       default=0)
            pid = d / "pids" / "rank1"
            if last >= target and pid.exists():
                os.kill(int(pid.read_text()), signal.SIGTERM)
                return
            time.sleep(0.01)

    t = threading.Thread(target=terminator, daemon=True)
    t.start()
    s = train_cli(d, *BASE)
    done.set()
    assert s["restarts"] == 1
    assert any(e["rank"] == 1 for e in events(d, "dying_gasp"))
    assert s["steps_lost"] <= 1
    assert bit_identical(final_weights(d), final_weights(reference))
