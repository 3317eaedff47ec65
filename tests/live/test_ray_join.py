"""Joining an existing Ray cluster: its nodes declare the chips, `fleet up --address`
schedules on them, `fleet down` leaves the cluster running (slow: a minute or more)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mixfleet.live.auth import write_token
from mixfleet.live.control import down, scheduler_pid, up
from mixfleet.live.head import head_pids, start_head, stop_head
from mixfleet.live.procs import alive
from mixfleet.live.store import Store

from .conftest import fleet3, write_job
from .raytools import job_state, submit, wait_for

pytestmark = pytest.mark.slow


def test_fleet_joins_a_cluster_and_down_leaves_it_running(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """On a cluster whose node declares the pools' chips, a joined fleet places a job on
    that node (pinned by node resource) and runs it; `fleet down` stops the scheduler but
    not the cluster it did not start."""
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    fleet = fleet3()
    mark = "join" + uuid.uuid4().hex
    token = write_token(tmp_path)
    head = start_head({p.resource: float(p.capacity) for p in fleet.pools}, mark, token,
                      num_cpus=1)
    d = tmp_path / "fleet"
    try:
        state = up(fleet, d, address=head["address"], ray_token_file=token)
        assert not state["embedded"]
        jid = submit(d, write_job(tmp_path / "j.toml", steps=6))
        wait_for(lambda: job_state(d, jid) in ("done", "failed"), 240, "the job to end")
        assert job_state(d, jid) == "done"
        (a,) = Store(d).attempts(jid)
        assert a.slots[0][0].startswith("127.0.0.1/")  # the cluster's node, not a virtual one
        sched = scheduler_pid(d, state)
        assert sched is not None
        down(d)
        assert not alive(sched)
        assert head_pids(mark), "fleet down stopped a cluster it did not start"
    finally:
        stop_head(mark, head["temp_dir"])
    assert head_pids(mark, head["temp_dir"]) == []
