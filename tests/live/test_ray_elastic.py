"""An elastic job on a real local Ray fleet (slow: minutes on 2 cores): a drained chip
under a running 2-rank job shrinks it to 1 rank without a requeue, and the freed device
grows it back to 2; for digits-cnn under dp and the llama debug preset under fsdp."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mixfleet.config import dumps_toml
from mixfleet.live.scheduler import job_dir, run_dir
from mixfleet.live.store import Store

from .conftest import DIGITS, write_job
from .raytools import job_state, live_fleet, solo_weights, submit, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    yield from live_fleet(tmp_path_factory)


def _losses(rd: Path) -> dict[int, float]:
    out = {}
    for line in (rd / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") is None and "loss" in rec:
            out[int(rec["step"])] = float(rec["loss"])  # a replayed step: the last one
    return out


LLAMA = Path(__file__).resolve().parents[2] / "examples" / "llama-debug.toml"
CASES = {
    "digits": (None, 80, 10, ()),
    "llama-fsdp": (LLAMA, 30, 8, ("parallel.mode='fsdp'", "train.warmup_steps=2",
                                  "telemetry.hz=0")),
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("case", list(CASES))
def test_drained_chip_shrinks_a_running_job_and_a_freed_device_grows_it_back(
        fleet: tuple[Path, Any], tmp_path: Path, case: str) -> None:
    """Critical heat on rank 1 of a 2-rank elastic job (1-2 devices; digits-cnn under dp,
    llama debug under fsdp): the job goes on with 1 rank in the same attempt (never
    queued); the device taken off the block list, it is relaunched on 2; it finishes with
    no restart counted, its losses within rel 1e-4 of an uninterrupted 2-rank run (the
    fsdp resume tests' tolerance: the rank count changes the float summation order)."""
    d, _ = fleet
    config, steps, at, extra = CASES[case]
    sets = (*extra, "launch.max_restarts=2", 'health.thermal_action="drain"',
            f"faults.inject=['overheat@rank=1,step={at}']", "train.log_every=1",
            "checkpoint.interval=5")
    # restart_s = 0: the test job is tens of steps (digits: seconds in all), and at its
    # measured pace any real relaunch cost would (rightly) never pay for the grow that this
    # test is about
    job = write_job(tmp_path / "el.toml", steps=steps, devices=2, sets=sets,
                    extra='pool = "h20"\nmin_devices = 1\nmax_devices = 2\nrestart_s = 0')
    if config is not None:
        job.write_text(job.read_text().replace(str(DIGITS), str(config)))
    jid = submit(d, job)
    store = Store(d)
    (r,) = wait_for(lambda: store.resizes(jid), 400, "the shrink")
    assert (r.action, r.old, r.new) == ("shrink", 2, 1)
    assert job_state(d, jid) == "running" and len(store.attempts(jid)) == 1
    (blocked,) = [b for b in store.blocklist() if b["job_id"] == jid]
    assert store.unblock(blocked["pool"], blocked["node"], blocked["device"], "cooled")
    wait_for(lambda: [x for x in store.resizes(jid) if x.action == "grow"
                      and x.state == "done"], 120, "the grow")
    wait_for(lambda: job_state(d, jid) in ("done", "failed"), 600, "the job to end")
    j = store.job(jid)
    assert j is not None and j.state == "done" and j.restarts == 0, j
    atts = store.attempts(jid)
    assert [a.state for a in atts] == ["resized", "done"] and len(atts[1].slots) == 2
    assert not [e for e in store.events(jid) if e["kind"] == "attempt_lost"]
    cfg = tomllib.loads((job_dir(d, jid) / "config.toml").read_text())
    cfg["faults"]["inject"] = []  # the uninterrupted reference
    (tmp_path / "ref.toml").write_text(dumps_toml(cfg))
    solo_weights(tmp_path / "ref.toml", tmp_path / "solo", nproc=2)
    got, ref = _losses(run_dir(d, jid)), _losses(tmp_path / "solo")
    assert sorted(got) == sorted(ref) == list(range(1, steps + 1))
    assert max(abs(got[k] - ref[k]) / abs(ref[k]) for k in ref) <= 1e-4
