"""Failures on a real local Ray fleet: a killed worker, a killed scheduler, a drained
chip; and six jobs on three pools equal to their solo runs (all slow: minutes on 2
cores)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mixfleet.live.control import load_state, scheduler_pid, up
from mixfleet.live.estimate import last_step
from mixfleet.live.scheduler import job_dir, run_dir
from mixfleet.live.store import Store

from .conftest import fleet3, write_job
from .raytools import (
    job_state,
    live_fleet,
    same,
    solo_weights,
    submit,
    wait_for,
    weights,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    yield from live_fleet(tmp_path_factory)


def _done(d: Path, ids: list[str], timeout_s: float) -> None:
    wait_for(lambda: all(job_state(d, j) in ("done", "failed", "cancelled") for j in ids),
             timeout_s, f"jobs {ids} to end")
    assert [job_state(d, j) for j in ids] == ["done"] * len(ids)


def test_killed_ray_worker_is_requeued_and_finishes_bit_identical(
        fleet: tuple[Path, Any], tmp_path: Path) -> None:
    """SIGKILL of the Ray worker process running a job: the attempt is lost, the job is
    placed again, resumes from its snapshot or checkpoint and ends with the weights of an
    uninterrupted solo run."""
    d, _ = fleet
    jid = submit(d, write_job(tmp_path / "kill.toml", steps=60))
    store = Store(d)
    rd = run_dir(d, jid)
    wait_for(lambda: last_step(rd) >= 12, 180, "step 12")
    (a,) = store.attempts(jid)
    os.kill(a.handle["worker_pids"][0], signal.SIGKILL)
    _done(d, [jid], 300)
    atts = store.attempts(jid)
    assert atts[0].state == "lost" and "died" in atts[0].reason
    assert atts[-1].state == "done" and len(atts) >= 2
    ref = solo_weights(job_dir(d, jid) / "config.toml", tmp_path / "solo")
    assert same(weights(rd), ref)


def test_killed_scheduler_restarted_completes_every_job_exactly_once(
        fleet: tuple[Path, Any], tmp_path: Path) -> None:
    """SIGKILL of the scheduler while jobs run, then a new one: every job completes
    exactly once, attempts of a job never overlap, and the attempts that ran at the kill
    are the ones that finish (their Ray actors outlived the scheduler)."""
    d, _ = fleet
    ids = [submit(d, write_job(tmp_path / f"s{i}.toml", steps=40)) for i in range(3)]
    store = Store(d)

    def started() -> list[int]:
        got = [a.id for a in store.attempts(states=("running",)) if a.handle.get("pids")]
        return got if len(got) >= 2 else []

    running = wait_for(started, 120, "2 started attempts")
    state = load_state(d)
    pid = scheduler_pid(d, state)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: scheduler_pid(d, state) is None, 20, "the scheduler to die")
    up(fleet3(), d)  # a fleet that is up: restarts its scheduler only
    assert scheduler_pid(d, state) not in (None, pid)
    _done(d, ids, 400)
    for j in ids:
        atts = store.attempts(j)
        assert [a.state for a in atts].count("done") == 1, atts
        for x, y in zip(atts, atts[1:], strict=False):
            assert x.ended is not None and x.ended <= y.started
    done = {a.id for j in ids for a in store.attempts(j) if a.state == "done"}
    assert set(running) <= done


def test_drained_chip_is_blocked_and_the_next_placement_avoids_it(
        fleet: tuple[Path, Any], tmp_path: Path) -> None:
    """An injected overheat drains rank 1 of a 2-device job on pool p800: its device goes
    on the fleet block list, the job finishes, and the next p800 job runs on the other
    device."""
    d, _ = fleet
    hot = write_job(tmp_path / "hot.toml", steps=30, devices=2, extra='pool = "p800"',
                    sets=("launch.max_restarts=2", 'health.thermal_action="drain"',
                          "faults.inject=['overheat@rank=1,step=8']"))
    jid = submit(d, hot)
    _done(d, [jid], 400)
    store = Store(d)
    (a,) = store.attempts(jid)
    assert store.blocked() == {("p800", *a.slots[1])}
    nxt = submit(d, write_job(tmp_path / "next.toml", steps=5, extra='pool = "p800"'))
    _done(d, [nxt], 200)
    assert store.attempts(nxt)[0].slots == [a.slots[0]]


@pytest.mark.timeout(1200)
def test_six_jobs_on_three_pools_equal_their_solo_runs(fleet: tuple[Path, Any],
                                                       tmp_path: Path) -> None:
    """Six digits-cnn jobs (1 and 2 devices, different seeds) on the 3 emulated pools all
    complete; each one's final weights equal a solo `mixfleet train` of its config with
    the same rank count, bit for bit."""
    d, _ = fleet
    jobs = [write_job(tmp_path / f"six{i}.toml", steps=20, devices=1 + i % 2,
                      sets=(f"train.seed={i}", "launch.max_restarts=1"))
            for i in range(6)]
    ids = [submit(d, j) for j in jobs]
    _done(d, ids, 900)
    store = Store(d)
    for i, jid in enumerate(ids):
        ref = solo_weights(job_dir(d, jid) / "config.toml", tmp_path / f"solo{i}",
                           nproc=1 + i % 2)
        assert same(weights(run_dir(d, jid)), ref), jid
    assert len({store.attempts(j)[-1].pool for j in ids}) >= 2
