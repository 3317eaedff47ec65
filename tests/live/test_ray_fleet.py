"""The fleet on a real (local, loopback-only) Ray head: placement, the visible-devices
variable, loopback ports, clean shutdown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mixfleet.live.head import head_pids
from mixfleet.live.scheduler import run_dir
from mixfleet.live.store import Store

from .conftest import write_job
from .raytools import job_state, listening, live_fleet, submit, wait_for


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    yield from live_fleet(tmp_path_factory)


def test_ray_head_listens_on_loopback_only_and_declares_the_pools(
        fleet: tuple[Path, Any]) -> None:
    """Every port of the fleet's Ray processes is on 127.0.0.1; the raylet declares each
    pool's emulated chips as a custom resource."""
    d, state = fleet
    pids = head_pids(state["mark"])
    addrs = listening(pids)
    assert addrs, "the Ray head listens nowhere?"
    bad = [a for a in addrs if not a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:"))]
    assert bad == []
    cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes() for p in pids
                if Path(f"/proc/{p}/cmdline").exists()]
    raylet = [c for c in cmdlines if b"--static_resource_list" in c]
    assert raylet and all(f"{r},2".encode() in raylet[0] for r in
                          ("chip:emu:nvidia-h20", "chip:emu:kunlun-p800",
                           "chip:emu:ascend-910b"))


@pytest.mark.slow
def test_submitted_job_runs_in_a_placement_group_with_its_visible_devices(
        fleet: tuple[Path, Any], tmp_path: Path) -> None:
    """A submitted job is placed, runs `mixfleet train` on an emulated pool with the
    visible-devices variable naming its device, and completes with summary.json."""
    d, _ = fleet
    jid = submit(d, write_job(tmp_path / "one.toml", steps=8))
    store = Store(d)

    def train_pid() -> Any:
        atts = store.attempts(jid)
        return atts and atts[-1].handle.get("pids") and atts[-1]

    a = wait_for(train_pid, 90, "the attempt to start")
    env = dict(kv.split(b"=", 1) for kv in
               Path(f"/proc/{a.handle['pids'][0]}/environ").read_bytes().split(b"\0") if kv)
    assert env[b"MIXFLEET_EMU_VISIBLE_DEVICES"] == str(a.slots[0][1]).encode()
    assert env[b"MIXFLEET_POOL"] == a.pool.encode()
    assert a.handle["kind"] == "ray" and a.handle["worker_pids"]
    wait_for(lambda: job_state(d, jid) in ("done", "failed"), 120, "the job to end")
    assert job_state(d, jid) == "done"
    import json

    summary = json.loads((run_dir(d, jid) / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["emulated"] is True
    chips = {"h20": "nvidia-h20", "p800": "kunlun-p800", "910b": "ascend-910b"}
    assert summary["device"] == f"emu:{chips[a.pool]}"
