"""torchrun whose rendezvous store listens on the endpoint's address only.

``python -P -m mixfleet.train.agent ARGS`` is ``python -m torch.distributed.run ARGS`` with
one change: the TCP store that hosts a multi-machine rendezvous (the ``c10d`` and ``static``
backends) is served from a socket bound to the address of ``--rdzv-endpoint`` /
``--master-addr`` (torch's own store listens on every interface whatever host it is given;
only an already-bound socket, ``master_listen_fd``, restricts it). One-machine runs meet
through a file (mixfleet.train.rendezvous) and open no store port at all. The rendezvous
port must still be reachable only from the job's nodes (docs/security.md):
torch's agents trust what they read from it.
"""

from __future__ import annotations

import datetime
import socket
import sys
from typing import Any

import torch.distributed as dist
from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend, static_tcp_rendezvous

from mixfleet.train.rendezvous import bound_server

__all__ = ["bound_tcp_store", "main"]

_servers: list[socket.socket] = []  # the listening sockets, open while the agent lives
_DEFAULT_TIMEOUT = datetime.timedelta(seconds=300)


def bound_tcp_store(host_name: str, port: int, world_size: int | None = None,
                    is_master: bool = False, timeout: datetime.timedelta = _DEFAULT_TIMEOUT,
                    **kwargs: Any) -> dist.TCPStore:
    """``dist.TCPStore(...)`` (same arguments), whose server, when this process hosts it,
    listens on ``host_name``'s address only."""
    if not is_master:
        return dist.TCPStore(host_name, port, world_size, False, timeout, **kwargs)
    try:
        server = bound_server(host_name, port)
    except OSError as e:  # torch's callers treat RuntimeError as "someone else hosts it"
        raise RuntimeError(f"cannot listen on {host_name}:{port}: {e}") from e
    _servers.append(server)
    return dist.TCPStore(host_name, port, world_size, True, timeout,
                         master_listen_fd=server.fileno(), **kwargs)


def main() -> None:
    from torch.distributed.run import main as torchrun

    file_store = any("store_type=file" in a for a in sys.argv[1:])  # one machine: no TCP
    for mod in (c10d_rendezvous_backend, static_tcp_rendezvous):
        if getattr(mod, "TCPStore", None) is dist.TCPStore:
            mod.TCPStore = bound_tcp_store  # type: ignore[attr-defined]
        elif not file_store:  # torch changed how it builds the store: refuse, never expose
            raise SystemExit(f"mixfleet.train.agent: {mod.__name__} builds its TCP store "
                             f"another way in this torch ({dist.__file__}), so it cannot be "
                             f"bound to the rendezvous address; use the torch version of "
                             f"constraints-cpu.txt for multi-machine runs")
    torchrun()


if __name__ == "__main__":
    main()
