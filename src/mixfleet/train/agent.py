"""torchrun whose rendezvous store listens on the endpoint's address only.

``python -P -m mixfleet.train.agent ARGS`` is ``python -m torch.distributed.run ARGS`` with
one change: the TCP store that hosts a multi-machine rendezvous (the ``c10d`` and ``static``
backends) is served from a socket bound to the address of ``--rdzv-endpoint`` /
``--master-addr`` (torch's own store listens on every interface whatever host it is given;
only an already-bound socket, ``master_listen_fd``, restricts it). One-machine runs meet
through a file (mixfleet.train.rendezvous) and open no store port at all. The rendezvous
port must still be reachable only from the job's nodes (docs/security.md):
torch's agents trust what they read from it.

torchrun's own output (its log records, such as ``E... failed (exitcode: -9)`` after a
rank was killed, and the traceback of a group that failed for good) goes to the run's
``torchrun.log`` (``TORCHRUN_LOG_VAR``), not to the console: a restart is mixfleet's
to report, in one line. The ranks inherit the console's file descriptors and print there.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any, TextIO

import torch.distributed as dist
from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend, static_tcp_rendezvous

from mixfleet import safefs
from mixfleet.train.rendezvous import TORCHRUN_LOG_VAR, bound_server

__all__ = ["bound_tcp_store", "route_output", "main"]

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


def route_output(log: TextIO) -> None:
    """Send this process's console output to ``log``: every logging handler that writes to
    the console (torch's, set up at import) and ``sys.stderr`` (logging's last resort,
    warnings, an uncaught traceback). File descriptors are left alone, so the worker
    processes started later still print to the console."""
    console = {id(s) for s in (sys.stderr, sys.__stderr__, sys.stdout, sys.__stdout__)}
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for lg in loggers:
        for h in lg.handlers:
            if (isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                    and id(h.stream) in console):
                h.setStream(log)
    sys.stderr = log


def main() -> None:
    from torch.distributed.run import main as torchrun

    if path := os.environ.get(TORCHRUN_LOG_VAR):
        route_output(open(safefs.open_append(Path(path)), "a", buffering=1,  # noqa: SIM115
                          encoding="utf-8", errors="replace"))

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
