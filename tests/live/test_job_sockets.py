"""A live fleet job's processes (wrapper, mixfleet train, torchrun, ranks) are bound to
loopback only, on one node and over two nodes of this machine (docs/security.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mixfleet.live.backend import LocalBackend
from mixfleet.live.scheduler import build_bundles
from mixfleet.live.spec import load_job
from tests.sockets import Bound, bound_sockets, descendants, exposed

from .conftest import fleet3, write_job


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [1, 2])
def test_a_fleet_jobs_sockets_are_on_loopback_only(tmp_path: Path, nodes: int) -> None:
    """A 2-rank job started by the local backend as the scheduler starts it (one bundle, or
    two meeting at a c10d rendezvous): every socket of its process trees, sampled while rank
    0 pauses, is bound to loopback, and the job ends well."""
    fleet = fleet3()
    job = load_job(write_job(tmp_path / "j.toml", steps=8, devices=2, sets=(
        "launch.max_restarts=1", "health.hang_floor_s=60",
        "faults.inject=['hang@rank=0,step=5,seconds=4']")), fleet)
    pool = fleet.pools[0]
    cfg, rd = tmp_path / "config.toml", tmp_path / "run"
    cfg.write_text(job.config_toml)
    slots = [(f"{pool.id}/0", 0), (f"{pool.id}/0", 1)] if nodes == 1 else \
        [(f"{pool.id}/0", 0), (f"{pool.id}/1", 0)]
    (tmp_path / "work").mkdir()
    backend = LocalBackend(fleet, tmp_path / "work")
    handle = backend.start(1, pool, build_bundles(job, pool, slots, cfg, rd, 1),
                           tmp_path / "attempt.log", f"sockets-{time.time()}:1")
    socks: list[Bound] = []
    try:
        end = time.monotonic() + 180
        events = rd / "events.jsonl"
        while time.monotonic() < end and backend.poll(handle).state == "running":
            if events.exists() and '"fault_injected"' in events.read_text():
                break
            time.sleep(0.1)
        for _ in range(5):
            socks += bound_sockets([q for p in handle["pids"] for q in descendants(p)])
            time.sleep(0.3)
        while time.monotonic() < end and backend.poll(handle).state == "running":
            time.sleep(0.2)
        status = backend.poll(handle)
    finally:
        backend.stop(handle)
    assert status.state == "exit" and status.rc == 0, (tmp_path / "attempt.log").read_text()
    assert socks and not exposed(socks), exposed(socks)
    assert all(s.loopback for s in socks)
