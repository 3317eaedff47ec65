"""Start and stop the fleet's own local Ray head, bound to 127.0.0.1.

Ray 2.60 on Linux turns ``--node-ip-address=127.0.0.1`` into the machine's interface
address and listens on every interface unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is
set for the head and every driver: :func:`ray_env` sets it. Every port is chosen free on
loopback, the temp directory is the fleet's own, and every process of the head carries the
fleet's marker, so :func:`stop_head` ends exactly what :func:`start_head` started.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from mixfleet.errors import LaunchError
from mixfleet.live.procs import FLEET_MARK, kill_pids, pids_with_env, pids_with_open_files

__all__ = ["ray_env", "start_head", "stop_head", "head_pids", "LOOPBACK"]

LOOPBACK = "127.0.0.1"


def ray_env(mark: str | None = None) -> dict[str, str]:
    """The environment of every Ray process of the fleet (head, drivers)."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONSAFEPATH": "1"}  # Ray's Python processes import nothing from the cwd
    if mark is not None:
        env[FLEET_MARK] = mark
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def temp_dir_for(mark: str) -> Path:
    """Ray's temp directory of a fleet (short: Ray puts unix sockets under it)."""
    return Path("/tmp") / f"mixfleet-ray-{mark[:12]}"


def start_head(resources: dict[str, float], mark: str, *, num_cpus: int = 2,
               timeout_s: float = 120.0) -> dict[str, str]:
    """``ray start --head`` on loopback with the pools' chips as custom resources; returns
    ``{"address", "temp_dir"}``."""
    tmp = temp_dir_for(mark)
    port = _free_port()
    cmd = [sys.executable, "-P", "-m", "ray.scripts.scripts", "start", "--head",
           f"--node-ip-address={LOOPBACK}", f"--port={port}", f"--num-cpus={num_cpus}",
           f"--resources={json.dumps(resources)}", "--include-dashboard=false",
           "--disable-usage-stats", f"--temp-dir={tmp}",
           f"--dashboard-agent-listen-port={_free_port()}",
           f"--metrics-export-port={_free_port()}"]
    try:
        r = subprocess.run(cmd, env=ray_env(mark), capture_output=True, text=True,
                           timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        stop_head(mark)
        raise LaunchError(f"ray start did not finish in {timeout_s:.0f} s") from None
    if r.returncode != 0:
        stop_head(mark)
        tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
        raise LaunchError("ray start failed: " + " | ".join(tail))
    return {"address": f"{LOOPBACK}:{port}", "temp_dir": str(tmp)}


def head_pids(mark: str) -> list[int]:
    """Processes of the fleet's head: its marker in their environment, or a file of its
    temp directory open (agents that scrub their environment)."""
    pids = set(pids_with_env(FLEET_MARK, mark))
    pids |= set(pids_with_open_files(str(temp_dir_for(mark)) + "/"))
    return sorted(pids)


def stop_head(mark: str) -> int:
    """End every process of the fleet's head and remove its temp directory; returns how
    many processes were ended."""
    pids = head_pids(mark)
    kill_pids(pids)
    left = head_pids(mark)  # agents started while the first ones were stopping
    kill_pids(left)
    shutil.rmtree(temp_dir_for(mark), ignore_errors=True)
    return len(pids) + len(left)
