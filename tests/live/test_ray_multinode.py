"""A job spread over two nodes of a pool: one bundle per node, two `mixfleet train`
agents meeting at torchrun's c10d rendezvous on the first bundle's node (slow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mixfleet.live.scheduler import job_dir, run_dir
from mixfleet.live.spec import load_fleet_spec
from mixfleet.live.store import Store

from .conftest import write_job
from .raytools import job_state, live_fleet, solo_weights, submit, wait_for, weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    toml = tmp_path_factory.mktemp("fleetfile") / "two-nodes.toml"
    toml.write_text('name = "two-nodes"\nreference_chip = "nvidia-h20"\n[[pool]]\n'
                    'id = "p800"\nchip = "kunlun-p800"\nnodes = 2\nper_node = 1\n')
    yield from live_fleet(tmp_path_factory, load_fleet_spec(toml, emulated=True))


@pytest.mark.timeout(900)
def test_two_node_job_runs_as_two_bundles_and_equals_a_two_rank_run(
        fleet: tuple[Path, Any], tmp_path: Path) -> None:
    """A 2-device job on a pool of 2 nodes x 1 device runs as 2 bundles (one per node),
    finishes, and its weights match a solo 2-rank `mixfleet train` to float rounding (not
    bit for bit: each one-rank agent gives its rank the CPU threads a two-rank launch
    splits, and intra-op threading changes the order of float sums)."""
    d, _ = fleet
    jid = submit(d, write_job(tmp_path / "mn.toml", steps=10, devices=2,
                              sets=("launch.max_restarts=1",)))
    wait_for(lambda: job_state(d, jid) in ("done", "failed"), 400, "the job to end")
    assert job_state(d, jid) == "done"
    (a,) = Store(d).attempts(jid)
    assert sorted(n for n, _ in a.slots) == ["p800/0", "p800/1"]
    assert len(a.handle["actors"]) == 2
    ref = solo_weights(job_dir(d, jid) / "config.toml", tmp_path / "solo", nproc=2)
    got = weights(run_dir(d, jid))
    assert got.keys() == ref.keys()
    diff = max(float((got[k] - ref[k]).abs().max()) for k in ref)
    assert diff < 1e-4, diff
