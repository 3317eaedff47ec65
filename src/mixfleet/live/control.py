"""The fleet directory and the commands on it: up, down, the scheduler daemon's life.

``FLEET_DIR/fleet.json`` says what ``up`` started (the pools, the backend, the Ray address,
the fleet's marker, the policy, the Ray token's file); ``fleet.db`` is the state
(:mod:`.store`); ``ray-token`` the embedded head's token (:mod:`.auth`; the directory is
0700, the token and the database 0600);
``scheduler.pid`` / ``scheduler.log`` belong to the daemon; ``jobs/<id>/`` holds each job's
config, run directory and attempt logs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from mixfleet.errors import ConfigError, LaunchError
from mixfleet.live.backend import Backend, LocalBackend
from mixfleet.live.procs import FLEET_MARK, alive, kill_pids, pids_with_env, reap, spawn_detached
from mixfleet.live.spec import FleetSpec

__all__ = ["FleetState", "up", "down", "load_state", "start_scheduler", "scheduler_pid",
           "make_backend", "STATE_FILE"]

STATE_FILE = "fleet.json"


class FleetState(dict[str, Any]):
    """The content of ``fleet.json``."""

    @property
    def fleet(self) -> FleetSpec:
        return FleetSpec.from_json(self["spec"])

    @property
    def one_machine(self) -> bool:
        """Whether all its nodes are on this machine (local processes or the embedded Ray
        head): the only fleet a job is mixed over kinds on."""
        return self["backend"] == "local" or bool(self.get("embedded"))


def load_state(fleet_dir: str | Path) -> FleetState:
    p = Path(fleet_dir) / STATE_FILE
    if not p.is_file():
        raise ConfigError(f"no fleet in {str(fleet_dir)!r} (no {STATE_FILE}); start one with "
                          f"`mixfleet fleet up --fleet FLEET.toml --dir {fleet_dir}` or pass "
                          f"--dir of a running fleet")
    return FleetState(json.loads(p.read_text()))


def _write_state(fleet_dir: Path, state: dict[str, Any]) -> None:
    tmp = fleet_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    tmp.replace(fleet_dir / STATE_FILE)


def scheduler_pid(fleet_dir: str | Path, state: FleetState) -> int | None:
    """The running scheduler daemon's pid, None when none runs."""
    p = Path(fleet_dir) / "scheduler.pid"
    try:
        pid = int(p.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    if f"{FLEET_MARK}={state['mark']}".encode() in env and alive(pid):
        return pid
    return None


def start_scheduler(fleet_dir: str | Path, state: FleetState, wait_s: float = 60.0) -> int:
    """Start the scheduler daemon (detached); returns its pid once it has connected."""
    from mixfleet.live.head import ray_env

    d = Path(fleet_dir).resolve()
    ready = d / "scheduler.ready"
    ready.unlink(missing_ok=True)
    pid = spawn_detached([sys.executable, "-P", "-m", "mixfleet.live.daemon", str(d)],
                         ray_env(state["mark"], state.get("ray_token")), d / "scheduler.log")
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        if ready.exists():
            return pid
        rc = reap(pid)
        if rc is not None:
            raise LaunchError(f"the scheduler exited with code {rc}; see "
                              f"{d / 'scheduler.log'}")
        time.sleep(0.1)
    raise LaunchError(f"the scheduler did not start within {wait_s:.0f} s; see "
                      f"{d / 'scheduler.log'}")


def make_backend(fleet_dir: str | Path, state: FleetState) -> Backend:
    if state["backend"] == "local":
        return LocalBackend(state.fleet, Path(fleet_dir) / "attempts")
    from mixfleet.live.raybackend import RayBackend

    return RayBackend(state.fleet, address=state["address"],
                      namespace=f"mixfleet-{state['mark']}", embedded=state["embedded"],
                      token_file=state.get("ray_token"))


def up(fleet: FleetSpec, fleet_dir: str | Path, *, backend: str = "ray",
       address: str | None = None, policy: str = "goodput", num_cpus: int = 2,
       ray_token_file: str | Path | None = None) -> FleetState:
    """Start the fleet (or, when ``fleet_dir`` holds a running one, restart its scheduler
    if it is not running); returns its state. A joined cluster (``address``) must run with
    token authentication, its token in ``ray_token_file``."""
    from mixfleet.fleet.policies import make_policy
    from mixfleet.live.auth import TOKEN_FILE, check_token_file, private_dir, write_token

    make_policy(policy)  # unknown name -> ConfigError before anything starts
    if backend not in ("ray", "local"):
        raise ConfigError(f"--backend {backend!r} is unknown; use ray or local")
    embedded = address in (None, "", "local")
    token = None
    if backend == "ray" and not embedded:
        if ray_token_file is None:
            raise ConfigError(f"--address {address}: joining a Ray cluster needs its token; "
                              f"start its nodes with RAY_AUTH_MODE=token and "
                              f"RAY_AUTH_TOKEN_PATH=FILE, and pass --ray-token-file FILE")
        token = check_token_file(ray_token_file)
    d = private_dir(Path(fleet_dir).resolve())
    if (d / STATE_FILE).exists():
        state = load_state(d)
        if scheduler_pid(d, state) is None:
            start_scheduler(d, state)
        return state
    (d / "attempts").mkdir(mode=0o700, exist_ok=True)
    mark = uuid.uuid4().hex
    state = FleetState(spec=fleet.to_json(), backend=backend, mark=mark, policy=policy,
                       embedded=embedded, address=None, started=time.time())
    if backend == "ray":
        if state["embedded"]:
            from mixfleet.live.head import start_head

            (d / TOKEN_FILE).unlink(missing_ok=True)  # a fleet that went down: a new token
            token = write_token(d)
            state["ray_token"] = str(token)
            res = {p.resource: float(p.capacity) for p in fleet.pools}
            state.update(start_head(res, mark, token, num_cpus=num_cpus))
        else:
            state["address"] = address
            state["ray_token"] = str(token)
    from mixfleet.live.store import Store

    Store(d).close()
    _write_state(d, state)
    try:
        start_scheduler(d, state)
    except BaseException:
        down(d)
        raise
    return state


def down(fleet_dir: str | Path, grace_s: float = 5.0) -> dict[str, int]:
    """Stop the scheduler, every running attempt and, for an embedded fleet, its Ray head;
    nothing else. The fleet directory (state, run directories) stays."""
    d = Path(fleet_dir).resolve()
    state = load_state(d)
    out = {"scheduler": 0, "attempts": 0, "ray_processes": 0}
    pid = scheduler_pid(d, state)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + grace_s
        while alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
        kill_pids([pid], grace_s=1.0)
        reap(pid)
        out["scheduler"] = 1
    from mixfleet.live.procs import ATTEMPT_MARK
    from mixfleet.live.store import Store

    store = Store(d)
    try:
        running = store.attempts(states=("running",))
        if running and not (state["backend"] == "ray" and state["embedded"]):
            try:
                backend = make_backend(d, state)
                for a in running:
                    backend.stop(a.handle)
            except Exception:  # noqa: BLE001 - an unreachable cluster: stop what is local
                pass
        for a in running:  # whatever runs here under the attempts' markers
            kill_pids(pids_with_env(ATTEMPT_MARK, f"{state['mark']}:{a.id}"))
            store.end_attempt(a.id, state="lost", rc=None, reason="fleet down",
                              job_state="queued")
            out["attempts"] += 1
        store.event("fleet_down")
    finally:
        store.close()
    if state["backend"] == "ray" and state["embedded"]:
        from mixfleet.live.head import stop_head

        out["ray_processes"] = stop_head(state["mark"], state.get("temp_dir"))
    kill_pids(pids_with_env(FLEET_MARK, state["mark"]))
    (d / STATE_FILE).replace(d / "fleet.down.json")
    (d / "scheduler.pid").unlink(missing_ok=True)
    return out
