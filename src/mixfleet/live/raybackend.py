"""Attempts on Ray: one placement group per attempt, one bundle per node holding the pool's
chip resource, and in each bundle a detached actor that runs ``mixfleet train``.

The actor is detached (and the placement group too), so both outlive a killed scheduler;
a restarted one finds them by name. The actor starts the training as its own process
session with the vendor's visible-devices variable set; when the actor's worker process
dies (SIGKILL, node loss) the attempt is *lost*, and :meth:`RayBackend.stop` ends what it
left running through a task pinned to the same node (from its own process on an embedded
head, all on this machine). The actor is threaded: its
``wait_exit`` call blocks until the process ends (or a bound passes) beside ``poll`` and
``stop``, so the scheduler hears of an end when it happens (:meth:`RayBackend.wait`).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from mixfleet.live.auth import AUTH_VARS, auth_env
from mixfleet.live.backend import Bundle, NodeInfo, Status, virtual_nodes
from mixfleet.live.procs import ATTEMPT_MARK, kill_pids, pids_with_env
from mixfleet.live.spec import FleetSpec, PoolSpec

__all__ = ["RayBackend", "Runner"]

CALL_TIMEOUT_S = 20.0
WAIT_CALL_S = 30.0
"""The longest a ``wait_exit`` call blocks: a call a killed scheduler left behind holds one
of the actor's threads no longer than this."""


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=4)  # type: ignore[call-overload]
class Runner:
    """Runs one bundle of an attempt (one ``mixfleet train`` process tree)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.ended = threading.Event()

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "ip": ray.util.get_node_ip_address()}

    def free_port(self) -> int:
        with socket.socket() as s:
            s.bind(("", 0))
            return int(s.getsockname()[1])

    def start(self, argv: list[str], env: dict[str, str], log: str) -> int:
        full = dict(os.environ)
        full.pop("OMP_NUM_THREADS", None)  # Ray pins it to the actor's 0 CPUs
        full.update(env)
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-P", *argv], env=full, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        threading.Thread(target=self._reap, args=(self.proc,), daemon=True).start()
        return self.proc.pid

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self.ended.set()

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_exit(self, timeout_s: float) -> int | None:
        """The process's exit code once it has ended; None while it still runs after
        ``timeout_s``."""
        if self.ended.wait(timeout_s) and self.proc is not None:
            return self.proc.returncode
        return None


@ray.remote(num_cpus=0)
def _kill_marked(marker: str) -> int:
    pids = pids_with_env(ATTEMPT_MARK, marker)
    kill_pids(pids)
    return len(pids)


class RayBackend:
    """Attempts as Ray placement groups (see the module docstring)."""

    kind = "ray"

    def __init__(self, fleet: FleetSpec, *, address: str, namespace: str,
                 embedded: bool, token_file: str | None = None) -> None:
        self.fleet = fleet
        self.embedded = embedded
        self.namespace = namespace
        self._waits: dict[str, Any] = {}  # actor name -> ObjectRef of its wait_exit call
        self._ended: set[str] = set()  # actors whose end woke a wait
        if token_file is not None:  # this driver authenticates with the fleet's token
            for k in AUTH_VARS:
                os.environ.pop(k, None)
            os.environ.update(auth_env(token_file))
            # Ray read its config when imported: have it read the variables again (what
            # Ray's own token setup does after changing them)
            from ray._raylet import (  # type: ignore[attr-defined]
                AuthenticationTokenLoader,
                Config,
            )

            Config.initialize("")
            AuthenticationTokenLoader.instance().reset_cache()
        if not ray.is_initialized():
            ray.init(address=address, namespace=namespace, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False,
                     _node_ip_address="127.0.0.1" if embedded
                     or address.startswith(("127.", "localhost")) else None)

    def inventory(self) -> list[NodeInfo]:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if self.embedded:
            up = bool(nodes)
            return [NodeInfo(node=v.node, pool=v.pool, devices=v.devices, alive=up)
                    for v in virtual_nodes(self.fleet)]
        out = []
        for n in nodes:
            for p in self.fleet.pools:
                count = int(n.get("Resources", {}).get(p.resource, 0))
                if count:
                    out.append(NodeInfo(node=f"{n['NodeManagerAddress']}/{n['NodeID'][:12]}",
                                        pool=p.id, devices=count))
        return out

    def _bundle_resources(self, pool: PoolSpec, b: Bundle) -> dict[str, float]:
        res: dict[str, float] = dict(b.resources) or {pool.resource: float(len(b.devices))}
        if not self.embedded:
            res[f"node:{b.node.split('/')[0]}"] = 0.001
        return res

    def start(self, aid: int, pool: PoolSpec, bundles: list[Bundle], log: Path,
              marker: str) -> dict[str, Any]:
        names = [f"mixfleet-attempt-{aid}-{i}" for i in range(len(bundles))]
        handle: dict[str, Any] = {"kind": "ray", "aid": aid, "marker": marker,
                                  "actors": names, "pg": f"mixfleet-pg-{aid}"}
        pg = placement_group([self._bundle_resources(pool, b) for b in bundles],
                             strategy="PACK", name=handle["pg"], lifetime="detached")
        ray.get(pg.ready(), timeout=60)
        actors = [Runner.options(  # type: ignore[attr-defined]
            name=n, lifetime="detached",
            resources=dict(b.resources) or {pool.resource: float(len(b.devices))},
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=pg, placement_group_bundle_index=i)).remote()
            for i, (n, b) in enumerate(zip(names, bundles, strict=True))]
        infos = ray.get([a.info.remote() for a in actors], timeout=120)
        endpoint = ""
        if len(bundles) > 1:
            port = ray.get(actors[0].free_port.remote(), timeout=CALL_TIMEOUT_S)
            endpoint = f"{infos[0]['ip']}:{port}"
        pids = ray.get([a.start.remote([x.replace("{rdzv_endpoint}", endpoint) for x in b.argv],
                                       {**b.env, ATTEMPT_MARK: marker}, str(log))
                        for a, b in zip(actors, bundles, strict=True)], timeout=CALL_TIMEOUT_S)
        handle.update(worker_pids=[i["pid"] for i in infos],
                      node_ids=[i["node_id"] for i in infos], pids=pids)
        return handle

    def poll(self, handle: dict[str, Any]) -> Status:
        codes: list[int | None] = []
        for name in handle["actors"]:
            try:
                actor = ray.get_actor(name, namespace=self.namespace)
                rc: Any = ray.get(actor.poll.remote(), timeout=CALL_TIMEOUT_S)
                codes.append(None if rc is None else int(rc))
            except ray.exceptions.GetTimeoutError:
                codes.append(None)
            except (ValueError, ray.exceptions.RayActorError) as e:
                return Status(state="lost", reason=f"Ray worker of {name} died "
                              f"({type(e).__name__})")
        bad = [c for c in codes if c]
        if bad:
            return Status(state="exit", rc=bad[0])
        if codes and all(c is not None for c in codes):
            return Status(state="exit", rc=0)
        return Status(state="running")

    def wait(self, handles: list[dict[str, Any]], timeout: float) -> bool:
        """``ray.wait`` on a ``wait_exit`` call of each started attempt's actors (one
        outstanding per actor, made again when one runs out with its process running); a
        call that ends with a code or an error (the actor's worker died) wakes it once."""
        names = {n for h in handles if not h.get("pending") for n in h.get("actors", [])}
        for n in set(self._waits) - names:
            del self._waits[n]
        self._ended &= names
        for n in sorted(names - set(self._waits) - self._ended):
            try:
                actor = ray.get_actor(n, namespace=self.namespace)
                self._waits[n] = actor.wait_exit.remote(WAIT_CALL_S)
            except (ValueError, AttributeError, ray.exceptions.RayError):  # gone, or older
                self._ended.add(n)
                return True
        if not self._waits:
            time.sleep(max(timeout, 0.0))
            return False
        of = {ref: n for n, ref in self._waits.items()}
        ready, _ = ray.wait(list(of), num_returns=1, timeout=max(timeout, 0.0))
        woke = False
        for ref in ready:
            n = of[ref]
            del self._waits[n]
            try:
                rc = ray.get(ref, timeout=CALL_TIMEOUT_S)
            except ray.exceptions.RayError:
                rc = -1
            if rc is not None:
                self._ended.add(n)
                woke = True
        return woke

    def stop(self, handle: dict[str, Any]) -> None:
        marker = handle.get("marker")
        if marker is None:
            return
        # an embedded head's node is this machine: its processes are ended from here, not
        # by a task for which Ray may have to start a worker process first (~0.3 s)
        nodes = [] if self.embedded else handle.get("node_ids") or []
        tasks = [_kill_marked.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n, soft=False)
        ).remote(marker) for n in dict.fromkeys(nodes)]
        if self.embedded:
            kill_pids(pids_with_env(ATTEMPT_MARK, marker))
        try:
            ray.get(tasks, timeout=CALL_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a dead node took its processes with it
            pass
        for name in handle.get("actors", []):
            try:
                ray.kill(ray.get_actor(name, namespace=self.namespace))
            except (ValueError, ray.exceptions.RayError):
                pass
        try:
            remove_placement_group(ray.util.get_placement_group(handle["pg"]))
        except (ValueError, KeyError, ray.exceptions.RayError):
            pass
