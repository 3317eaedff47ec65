"""Where attempts run: the interface the scheduler drives, and a local fake.

A backend reports the fleet's nodes (:meth:`Backend.inventory`), starts one attempt as
one process per bundle (a node's share of the job's devices), tells whether it still runs,
and stops it. :class:`RayBackend` (:mod:`mixfleet.live.raybackend`) runs each bundle in a
Ray placement group; :class:`LocalBackend` runs the same commands as local processes (the
fake that tests the scheduler without a cluster, and a fleet on one machine without Ray).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Protocol

from mixfleet.live.procs import (
    ATTEMPT_MARK,
    ExitWatch,
    alive,
    kill_pids,
    pids_with_env,
    reap,
    spawn_detached,
)
from mixfleet.live.spec import FleetSpec, PoolSpec

__all__ = ["NodeInfo", "Bundle", "Status", "Backend", "LocalBackend", "virtual_nodes",
           "has_env", "pick_devices"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeInfo:
    """Devices of one pool on one node."""

    node: str
    pool: str
    devices: int
    alive: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class Bundle:
    """One node's share of an attempt: the process to start there and its devices."""

    node: str
    devices: tuple[int, ...]
    argv: tuple[str, ...]
    """Arguments after the Python interpreter; ``{rdzv_endpoint}`` is filled in by the
    backend with the first bundle's node address and a free port there."""
    env: dict[str, str]
    resources: dict[str, float] = dataclasses.field(default_factory=dict)
    """The Ray resources it holds (empty: its devices of the attempt's pool's chip; a
    mixed-kind attempt names each kind's, docs/fleet-elastic.md)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Status:
    state: str  # running | exit | lost
    rc: int | None = None
    reason: str = ""


class Backend(Protocol):
    def inventory(self) -> list[NodeInfo]: ...

    def start(self, aid: int, pool: PoolSpec, bundles: list[Bundle], log: Path,
              marker: str) -> dict[str, Any]:
        """Start the attempt; returns a JSON-able handle (kept in SQLite)."""
        ...

    def poll(self, handle: dict[str, Any]) -> Status: ...

    def wait(self, handles: list[dict[str, Any]], timeout: float) -> bool:
        """Block until one of the attempts ``handles`` may have ended (True: poll them) or
        ``timeout`` seconds pass (False); each end wakes one call. Started attempts only:
        a pending handle is left out."""
        ...

    def stop(self, handle: dict[str, Any]) -> None:
        """End every process of the attempt and release its resources (idempotent)."""
        ...


def pick_devices(nodes: dict[str, list[int]], n: int) -> list[tuple[str, int]] | None:
    """``n`` free devices: on one node when one has room (the fullest that fits), else
    spread over the nodes with the most free devices. Taken devices leave ``nodes``."""
    if sum(len(v) for v in nodes.values()) < n:
        return None
    fits = [k for k, v in nodes.items() if len(v) >= n]
    if fits:
        k = min(fits, key=lambda x: (len(nodes[x]), x))
        got = [(k, d) for d in nodes[k][:n]]
        nodes[k] = nodes[k][n:]
        return got
    got = []
    for k in sorted(nodes, key=lambda x: (-len(nodes[x]), x)):
        take = min(n - len(got), len(nodes[k]))
        got += [(k, d) for d in nodes[k][:take]]
        nodes[k] = nodes[k][take:]
        if len(got) == n:
            break
    return got


def virtual_nodes(fleet: FleetSpec) -> list[NodeInfo]:
    """The nodes a fleet file declares (``nodes`` x ``per_node`` per pool), all on this
    machine: the embedded fleet's view."""
    return [NodeInfo(node=f"{p.id}/{k}", pool=p.id, devices=p.per_node)
            for p in fleet.pools for k in range(p.nodes)]


def has_env(pid: int, key: str, value: str) -> bool:
    """Whether process ``pid`` runs with ``key=value`` in its environment."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{key}={value}".encode() in env.split(b"\0") and alive(pid)


class LocalBackend:
    """Attempts as local process trees (one wrapper process per bundle)."""

    def __init__(self, fleet: FleetSpec, work_dir: str | Path) -> None:
        self.fleet = fleet
        self.work_dir = Path(work_dir)
        self._exits = ExitWatch()

    def inventory(self) -> list[NodeInfo]:
        return virtual_nodes(self.fleet)

    def start(self, aid: int, pool: PoolSpec, bundles: list[Bundle], log: Path,
              marker: str) -> dict[str, Any]:
        pids, rcfiles = [], []
        port = _free_port()
        log.parent.mkdir(parents=True, exist_ok=True)
        for i, b in enumerate(bundles):
            rc = self.work_dir / f"attempt-{aid}.{i}.rc"
            argv = [a.replace("{rdzv_endpoint}", f"127.0.0.1:{port}") for a in b.argv]
            env = {**os.environ, **b.env, ATTEMPT_MARK: marker}
            pids.append(spawn_detached([sys.executable, "-P", "-m", "mixfleet.live.wrap",
                                        str(rc), "--", sys.executable, "-P", *argv], env,
                                       log))
            rcfiles.append(str(rc))
        return {"kind": "local", "pids": pids, "rcfiles": rcfiles, "marker": marker}

    def poll(self, handle: dict[str, Any]) -> Status:
        for p in handle["pids"]:  # reap our own children (a restarted scheduler has none)
            reap(p)
        codes: list[int | None] = []
        for pid, rcf in zip(handle["pids"], handle["rcfiles"], strict=True):
            path = Path(rcf)
            if path.exists():
                codes.append(int(path.read_text().strip() or 1))
            elif has_env(pid, ATTEMPT_MARK, handle["marker"]):
                codes.append(None)
            else:
                return Status(state="lost", reason=f"process {pid} vanished")
        bad = [c for c in codes if c]
        if bad:
            return Status(state="exit", rc=bad[0])
        if all(c is not None for c in codes):
            return Status(state="exit", rc=0)
        return Status(state="running")

    def wait(self, handles: list[dict[str, Any]], timeout: float) -> bool:
        """An attempt's wrapper writes its rc file and exits: its end wakes this."""
        return self._exits.wait([p for h in handles if not h.get("pending")
                                 for p in h.get("pids", [])], timeout)

    def stop(self, handle: dict[str, Any]) -> None:
        if "marker" in handle:
            kill_pids(pids_with_env(ATTEMPT_MARK, handle["marker"]))
        for p in handle.get("pids", []):
            reap(p)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
