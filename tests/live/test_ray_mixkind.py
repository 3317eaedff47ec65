"""A mixed-kind job on a real local Ray fleet (slow: a Ray head and two runs on 2 cores):
started over h20 and p800 in one placement group holding both kinds' chip resources, it
trains to the end bit-identical to the same ranks run by hand (docs/fleet-elastic.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mixfleet.live.scheduler import job_dir, run_dir
from mixfleet.live.store import Store

from .conftest import write_job
from .raytools import job_state, live_fleet, same, submit, wait_for, weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    yield from live_fleet(tmp_path_factory)


@pytest.mark.timeout(600)
def test_a_mixed_job_runs_on_ray_over_two_kinds_as_the_same_ranks_run_by_hand(
        fleet: tuple[Path, Any], tmp_path: Path) -> None:
    """One device of h20 and of p800 blocked: a 2-device digits job allowing both runs on
    one of each (one attempt, its `mixed` event), finishes with no restart, and its final
    weights equal those of `mixfleet train --ranks emu:nvidia-h20,emu:kunlun-p800` run by
    hand with the same config (one CPU thread per rank, as the fleet runs it)."""
    d, _ = fleet
    store = Store(d)
    store.block("h20", "h20/0", 0, None, "maintenance")
    store.block("p800", "p800/0", 0, None, "maintenance")
    try:
        job = write_job(tmp_path / "mix.toml", steps=12, devices=2,
                        extra='kinds = ["nvidia-h20", "kunlun-p800"]')
        jid = submit(d, job)
        wait_for(lambda: job_state(d, jid) in ("done", "failed"), 400, "the job to end")
    finally:
        store.unblock("h20", "h20/0", 0, "test over")
        store.unblock("p800", "p800/0", 0, "test over")
    j = store.job(jid)
    assert j is not None and j.state == "done" and j.restarts == 0, j
    (a,) = store.attempts(jid)
    assert a.handle["pools"] == ["h20", "p800"]
    assert [e for e in store.events(jid) if e["kind"] == "mixed"]
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-P", "-m", "mixfleet", "train",
                    str(job_dir(d, jid) / "config.toml"), "--nproc", "2", "--ranks",
                    "emu:nvidia-h20,emu:kunlun-p800", "--run-dir", str(ref)], check=True,
                   capture_output=True, env={**os.environ, "MIXFLEET_CPU_THREADS": "1",
                                             "MIXFLEET_EMULATED": "1"})
    assert same(weights(run_dir(d, jid)), weights(ref))
