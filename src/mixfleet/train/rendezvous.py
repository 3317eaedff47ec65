"""Where the ranks of a run meet, without a port other machines can reach.

docs/security.md says what listens and why.

On one machine torchrun's rendezvous is a ``FileStore`` in a private (0700) directory that
``mkdtemp`` makes inside the run directory, and each rank builds its process-group store as
another ``FileStore`` there (one per restart attempt): no rendezvous or store port is
opened at all, and the rendezvous state torch's agent unpickles can be written by this user
only. Gloo (and NCCL's bootstrap) are bound to the loopback interface.

Across machines (the user gives ``--rdzv-endpoint HOST:PORT``) the stores stay TCP, each
bound to one address (TCPStore on its own listens on every interface): the agent's store to
the endpoint's (mixfleet.train.agent), rank 0's process-group store to ``MASTER_ADDR``'s.
The rendezvous port must be reachable from the job's nodes only (the firewall line is in
docs/security.md).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch.distributed as dist

from mixfleet.errors import ConfigError

__all__ = ["STORE_DIR_VAR", "local_store_dir", "local_rdzv_args", "endpoint_host",
           "endpoint_is_loopback", "local_addr_towards", "launcher_env", "bound_server",
           "process_group_store", "TORCHRUN_LOG_VAR"]

# Set by the launcher for every rank of a one-machine run: the private store directory.
STORE_DIR_VAR = "MIXFLEET_STORE_DIR"
# Set by the launcher for torchrun (mixfleet.train.agent): the file its own output goes to.
TORCHRUN_LOG_VAR = "MIXFLEET_TORCHRUN_LOG"


def local_store_dir(run_root: Path) -> Path:
    """A fresh private directory (0700, made with ``mkdtemp``: no one else can have made it)
    for one torchrun invocation's rendezvous and process-group stores."""
    return Path(tempfile.mkdtemp(prefix="rendezvous-", dir=run_root))


def local_rdzv_args(store_dir: Path, run_id: str) -> list[str]:
    """torchrun's flags for a rendezvous through a file in ``store_dir`` (no TCP store)."""
    return ["--rdzv-backend=c10d", f"--rdzv-endpoint={store_dir / 'rdzv'}",
            "--rdzv-conf=store_type=file", "--local-addr=127.0.0.1", f"--rdzv-id={run_id}"]


def endpoint_host(passthrough: list[str]) -> str | None:
    """The host of torchrun's ``--rdzv-endpoint`` (``HOST[:PORT]``) or ``--master-addr`` in
    ``passthrough``; None when neither is given."""
    for i, a in enumerate(passthrough):
        name, eq, value = a.partition("=")
        if name not in ("--rdzv-endpoint", "--rdzv_endpoint", "--master-addr", "--master_addr"):
            continue
        if not eq:
            value = passthrough[i + 1] if i + 1 < len(passthrough) else ""
        if "endpoint" in name and (value.count(":") == 1 or value.startswith("[")):
            return value.rsplit(":", 1)[0].strip("[]")  # HOST:PORT, [V6]:PORT
        return value
    return None


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_is_loopback(passthrough: list[str]) -> bool:
    """Whether the rendezvous address (:func:`endpoint_host`) is a loopback address: several
    "nodes" on this machine, whose collectives then stay on loopback too."""
    host = endpoint_host(passthrough)
    return host is not None and _is_loopback(host)


def local_addr_towards(host: str) -> str | None:
    """This node's address on the route to ``host`` (the interface other nodes of the job
    reach it by; a UDP ``connect`` sends nothing); None when ``host`` does not resolve.

    Raises ConfigError when a host *name* resolves to a loopback address here (a machine
    whose /etc/hosts maps its own name to 127.0.1.1): a store bound to it could not be
    reached by the other nodes."""
    if _is_loopback(host):
        return "127.0.0.1"
    try:
        family, _, _, _, sa = socket.getaddrinfo(host, 1, type=socket.SOCK_DGRAM)[0]
    except OSError:
        return None
    if _is_loopback(str(sa[0])):
        raise ConfigError(f"--rdzv-endpoint host {host!r} resolves to {sa[0]} (loopback) on "
                          f"this machine, so the other nodes could not reach its store; give "
                          f"the address they reach it by, e.g. --rdzv-endpoint 10.0.0.1:29400")
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect(sa)
        except OSError:
            return None
        return str(s.getsockname()[0])


def launcher_env(store_dir: Path | None, *, loopback: bool = False) -> dict[str, str]:
    """The environment torchrun and its ranks get: the safe path (no module is imported
    from the working directory) and no store shared from the agent; on one machine
    (``store_dir``) the private store directory; collectives bound to loopback on one
    machine or when every node is on this one (``loopback``)."""
    env = {"PYTHONSAFEPATH": "1",
           # Workers build their own store, never a TCP store of the agent's; a fresh one
           # per restart also avoids stale keys (pytorch#135712).
           "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    if store_dir is not None:
        env[STORE_DIR_VAR] = str(store_dir)
    if store_dir is not None or loopback:
        env.update({"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"})
    return env


def bound_server(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``'s address only (not every interface)."""
    try:
        family = (socket.AF_INET6 if ipaddress.ip_address(host).version == 6
                  else socket.AF_INET)
        addr = host
    except ValueError:  # a host name: the address it resolves to on this node
        family, _, _, _, sa = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        addr = str(sa[0])
    return socket.create_server((addr, port), family=family)


def process_group_store(rank: int, world: int, attempt: int,
                        timeout: datetime.timedelta,
                        environ: dict[str, str] | None = None) -> tuple[Any, Any]:
    """This rank's process-group store and what must stay open while it is used.

    A ``FileStore`` in the launcher's private directory on one machine; across machines a
    ``TCPStore`` at ``MASTER_ADDR:MASTER_PORT`` whose server (rank 0) listens on that
    address only (with torchrun's static backend the agent hosts it, bound by
    mixfleet.train.agent); a ``HashStore`` for a single in-process rank."""
    env = os.environ if environ is None else environ
    store_dir = env.get(STORE_DIR_VAR)
    if store_dir:
        return dist.FileStore(str(Path(store_dir) / f"pg-{attempt}"), world), None
    if "MASTER_ADDR" not in env:
        return dist.HashStore(), None
    host, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
    if env.get("TORCHELASTIC_USE_AGENT_STORE") == "True":  # the static backend's agent hosts it
        client = dist.TCPStore(host, port, world, is_master=False, timeout=timeout)
        return dist.PrefixStore(f"mixfleet/attempt-{attempt}", client), None
    if rank != 0:
        return dist.TCPStore(host, port, world, is_master=False, timeout=timeout), None
    server = bound_server(host, port)
    store = dist.TCPStore(host, port, world, is_master=True, timeout=timeout,
                          master_listen_fd=server.fileno())
    return store, server
