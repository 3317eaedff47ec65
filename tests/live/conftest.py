"""Helpers of the live-fleet tests: a fleet directory without a scheduler, job files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mixfleet.live.control import STATE_FILE
from mixfleet.live.spec import FleetSpec, load_fleet_spec
from mixfleet.live.store import Store

ROOT = Path(__file__).resolve().parents[2]
FLEET_TOML = ROOT / "examples" / "fleet-live.toml"
DIGITS = ROOT / "examples" / "digits-cnn.toml"


def fleet3() -> FleetSpec:
    """The 3-pool example fleet (2 devices per pool), emulated."""
    return load_fleet_spec(FLEET_TOML, emulated=True)


def write_job(path: Path, *, steps: int = 20, devices: int = 1, extra: str = "",
              sets: tuple[str, ...] = ()) -> Path:
    """A job file running digits-cnn for ``steps`` steps, one rank process per job
    (max_restarts = 0 runs a single rank in-process: the fastest launch)."""
    s = [f"train.steps={steps}", "launch.max_restarts=0", "train.log_every=5",
         "checkpoint.interval=5", *sets]
    path.write_text(f'[job]\nname = "{path.stem}"\nconfig = "{DIGITS}"\n'
                    f"set = {json.dumps(s)}\ndevices = {devices}\n{extra}\n")
    return path


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    """A fleet directory as `fleet up --backend local` leaves it, without its daemon."""
    d = tmp_path / "fleet"
    d.mkdir()
    (d / STATE_FILE).write_text(json.dumps({
        "spec": fleet3().to_json(), "backend": "local", "mark": "test-" + str(time.time()),
        "policy": "goodput", "embedded": True, "address": None, "started": time.time()}))
    Store(d).close()
    return d
