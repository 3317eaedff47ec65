"""torchrun whose c10d rendezvous store listens on the endpoint's address only.

``python -P -m mixfleet.train.agent ARGS`` is ``python -m torch.distributed.run ARGS`` with
one change: the TCP store that hosts a multi-machine c10d rendezvous is served from a socket
bound to the address of ``--rdzv-endpoint`` (torch's own listens on every interface whatever
host it is given). One-machine runs meet through a file (mixfleet.train.rendezvous) and open
no store port at all. The rendezvous port must still be reachable only from the job's nodes
(docs/security.md): torch's agents trust what they read from it.
"""

from __future__ import annotations

import datetime
import socket
from typing import Any

import torch.distributed as dist
from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend as c10d
from torch.distributed.elastic.rendezvous.utils import (
    _matches_machine_hostname,
    parse_rendezvous_endpoint,
)

from mixfleet.train.rendezvous import bound_server

__all__ = ["bound_tcp_store", "main"]

_servers: list[socket.socket] = []  # the listening sockets, open while the agent lives


def bound_tcp_store(params: Any) -> dist.TCPStore:
    """The c10d rendezvous store of ``params`` (torch's RendezvousParameters): hosted on
    the endpoint's address only when this machine hosts it, else a client."""
    host, port = parse_rendezvous_endpoint(params.endpoint, default_port=c10d.DEFAULT_PORT)
    forced = params.get_as_bool("is_host")
    timeout = datetime.timedelta(seconds=params.get_as_int("read_timeout", 60))
    if forced if forced is not None else _matches_machine_hostname(host):
        try:
            server = bound_server(host, port)
        except OSError:
            if forced:
                raise
            server = None  # another agent of this machine hosts it: join as a client
        if server is not None:
            _servers.append(server)
            return dist.TCPStore(host, port, is_master=True, multi_tenant=True,
                                 timeout=timeout, master_listen_fd=server.fileno())
    return dist.TCPStore(host, port, is_master=False, multi_tenant=True, timeout=timeout)


def main() -> None:
    from torch.distributed.run import main as torchrun

    if not callable(getattr(c10d, "_create_tcp_store", None)):  # torch moved it: refuse
        raise SystemExit("mixfleet.train.agent: this torch has no c10d _create_tcp_store; "
                         "pin the torch version of pyproject.toml")
    c10d._create_tcp_store = bound_tcp_store
    torchrun()


if __name__ == "__main__":
    main()
