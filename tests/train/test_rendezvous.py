"""A 2-rank run on one machine: no socket beyond loopback, no rendezvous port, no module
from the working directory (docs/security.md).

One run is started from a directory holding a planted ``typing_extensions.py`` (torch
imports it at start, so any process that puts the working directory on ``sys.path`` would
run it); rank 0 pauses at a step (a short ``hang`` fault) while every process of the run,
the launcher included, is sampled from /proc.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES
from tests.sockets import Bound, bound_sockets, descendants, exposed

PLANTED = "typing_extensions.py"
# writes the marker, then hands over to the real module (so the run goes on either way)
PLANTED_CODE = """import importlib, sys
open({marker!r}, "a").write("ran\\n")
del sys.modules[__name__]
sys.path[:] = [p for p in sys.path if p not in ("", {cwd!r})]
globals().update(importlib.import_module(__name__).__dict__)
"""


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The run, its processes and their sockets while rank 0 pauses at step 5."""
    cwd = tmp_path_factory.mktemp("cwd")
    marker = cwd / "planted-module-ran"
    (cwd / PLANTED).write_text(PLANTED_CODE.format(marker=str(marker), cwd=str(cwd)))
    run = cwd / "run"
    # -P: as the installed `mixfleet` script starts, with the working directory off sys.path
    cmd = [sys.executable, "-P", "-m", "mixfleet", "train", str(EXAMPLES / "digits-cnn.toml"),
           "--nproc", "2", "--run-dir", str(run), "--json",
           "--set", "train.steps=8", "--set", "checkpoint.interval=100",
           "--set", "health.hang_floor_s=60",
           "--set", "faults.inject=['hang@rank=0,step=5,seconds=4']"]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    socks: list[Bound] = []
    pids: set[int] = set()
    store_dirs: list[str] = []
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and proc.poll() is None:
            events = run / "events.jsonl"
            if events.exists() and '"fault_injected"' in events.read_text():
                break
            time.sleep(0.1)
        for _ in range(5):  # while rank 0 pauses, every process of the run is alive
            tree = descendants(proc.pid)
            pids.update(tree)
            socks += bound_sockets(tree)
            store_dirs += [p.name for p in run.glob("rendezvous-*")]
            time.sleep(0.3)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    return {"socks": socks, "pids": pids, "marker": marker, "run": run,
            "summary": json.loads(out.strip().splitlines()[-1]), "store_dirs": store_dirs}


def test_no_socket_of_a_two_rank_run_is_bound_beyond_loopback(sampled):
    """Every socket of the launcher, torchrun and both ranks is bound to a loopback address
    (none to 0.0.0.0, ::, or the machine's other addresses): no rendezvous or store port
    and no collective listens where other machines reach it."""
    socks = sampled["socks"]
    assert len(sampled["pids"]) >= 4  # launcher, torchrun, two ranks
    assert socks, "no socket seen: gloo's loopback pair sockets should be there"
    assert not exposed(socks), exposed(socks)
    assert all(s.loopback for s in socks), [s for s in socks if not s.loopback]


def test_the_rendezvous_is_a_private_file_removed_after_the_run(sampled):
    """The stores live in a private directory of the run while it runs and are removed
    when it ends."""
    assert sampled["store_dirs"], "no rendezvous directory seen while the run was alive"
    run: Path = sampled["run"]
    assert not list(run.glob("rendezvous-*"))
    assert sampled["summary"]["steps"] == 8


def test_no_module_from_the_working_directory_is_imported(sampled):
    """A module planted in the directory the run starts from is imported by no process of
    the run (launcher, torchrun, ranks): its marker file stays absent."""
    assert not sampled["marker"].exists()
