"""Start and stop the fleet's own local Ray head, bound to 127.0.0.1.

Ray 2.60 on Linux turns ``--node-ip-address=127.0.0.1`` into the machine's interface
address and listens on every interface unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is
set for the head and every driver: :func:`ray_env` sets it, with token authentication
(:mod:`.auth`). Every port is chosen free on loopback, and every process of the head carries
the fleet's marker, so :func:`stop_head` ends exactly what :func:`start_head` started.

Ray makes its temp, session, socket and log directories mode 0777 on every start, so its
temp directory lies inside a private parent (0700, ``mkdtemp``) that other users cannot
enter; the path stays short, since Unix socket paths under it are limited to 107 bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from mixfleet.errors import LaunchError
from mixfleet.live.auth import AUTH_VARS, auth_env, require_ray_auth
from mixfleet.live.procs import FLEET_MARK, kill_pids, pids_with_env, pids_with_open_files

__all__ = ["ray_env", "start_head", "stop_head", "head_pids", "LOOPBACK", "TEMP_PREFIX"]

LOOPBACK = "127.0.0.1"
TEMP_PREFIX = "mixfleet-ray-"
SOCKET_PATH_MAX = 107
_SESSION_SOCKET = len("/session_2026-12-07_15-02-04_412730_4194304/sockets/plasma_store")


def ray_env(mark: str | None = None, token_file: str | Path | None = None
            ) -> dict[str, str]:
    """The environment of every Ray process of the fleet (head, drivers): loopback, and
    with ``token_file`` token authentication with that token (and no other)."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONSAFEPATH": "1"}  # Ray's Python processes import nothing from the cwd
    if token_file is not None:
        for k in AUTH_VARS:
            env.pop(k, None)
        env.update(auth_env(token_file))
    if mark is not None:
        env[FLEET_MARK] = mark
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _private_temp_dir(mark: str) -> Path:
    """Ray's temp directory: ``r`` inside a new 0700 directory of /tmp."""
    parent = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{mark[:8]}-", dir="/tmp"))
    tmp = parent / "r"
    if len(str(tmp)) + _SESSION_SOCKET > SOCKET_PATH_MAX:  # not with /tmp; kept as a guard
        parent.rmdir()
        raise LaunchError(f"Ray's socket paths under {tmp} would pass {SOCKET_PATH_MAX} "
                          f"bytes")
    return tmp


def start_head(resources: dict[str, float], mark: str, token_file: str | Path, *,
               num_cpus: int = 2, timeout_s: float = 120.0) -> dict[str, str]:
    """``ray start --head`` on loopback, with token authentication (the token in
    ``token_file``) and the pools' chips as custom resources; returns ``{"address",
    "temp_dir"}``."""
    require_ray_auth()
    tmp = _private_temp_dir(mark)
    port = _free_port()
    cmd = [sys.executable, "-P", "-m", "ray.scripts.scripts", "start", "--head",
           f"--node-ip-address={LOOPBACK}", f"--port={port}", f"--num-cpus={num_cpus}",
           f"--resources={json.dumps(resources)}", "--include-dashboard=false",
           "--disable-usage-stats", f"--temp-dir={tmp}",
           f"--dashboard-agent-listen-port={_free_port()}",
           f"--metrics-export-port={_free_port()}"]
    try:
        r = subprocess.run(cmd, env=ray_env(mark, token_file), capture_output=True, text=True,
                           timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        stop_head(mark, str(tmp))
        raise LaunchError(f"ray start did not finish in {timeout_s:.0f} s") from None
    if r.returncode != 0:
        stop_head(mark, str(tmp))
        tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
        raise LaunchError("ray start failed: " + " | ".join(tail))
    return {"address": f"{LOOPBACK}:{port}", "temp_dir": str(tmp)}


def _own_dir(temp_dir: str | None) -> Path | None:
    """The directory :func:`start_head` made for Ray's temp directory (its private parent;
    the temp directory itself for a fleet started before the parent existed)."""
    for d in ([Path(temp_dir).parent, Path(temp_dir)] if temp_dir else []):
        if d.name.startswith(TEMP_PREFIX):
            return d
    return None


def head_pids(mark: str, temp_dir: str | None = None) -> list[int]:
    """Processes of the fleet's head: its marker in their environment, or a file of its
    temp directory open (agents that scrub their environment)."""
    pids = set(pids_with_env(FLEET_MARK, mark))
    own = _own_dir(temp_dir)
    if own is not None:
        pids |= set(pids_with_open_files(str(own) + "/"))
    return sorted(pids)


def stop_head(mark: str, temp_dir: str | None = None) -> int:
    """End every process of the fleet's head and remove its temp directory (with the
    private parent that holds it); returns how many processes were ended."""
    pids = head_pids(mark, temp_dir)
    kill_pids(pids)
    left = head_pids(mark, temp_dir)  # agents started while the first ones were stopping
    kill_pids(left)
    own = _own_dir(temp_dir)
    if own is not None:
        shutil.rmtree(own, ignore_errors=True)
    return len(pids) + len(left)
