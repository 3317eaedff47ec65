"""The addresses a process tree's sockets are bound to, read from /proc (Linux).

Reads ``/proc/<pid>/fd`` (links ``socket:[inode]``) of each process and the kernel's socket
tables ``/proc/<pid>/net/{tcp,tcp6,udp,udp6}``; sends nothing anywhere.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"  # TCP state in /proc/net/tcp


@dataclass(frozen=True)
class Bound:
    pid: int
    proto: str  # tcp, tcp6, udp, udp6
    addr: str
    port: int
    listening: bool

    @property
    def loopback(self) -> bool:
        ip = ipaddress.ip_address(self.addr)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (alive now)."""
    parent: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        parent[int(p.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += [c for c, pp in parent.items() if pp == p]
    return out


def _inodes(pid: int) -> set[str]:
    found = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            found.add(link[8:-1])
    return found


def _addr(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    # the kernel prints each 32-bit word in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def bound_sockets(pids: list[int]) -> list[Bound]:
    """Every TCP/UDP socket the processes hold, with the local address it is bound to."""
    out = []
    for pid in pids:
        inodes = _inodes(pid)
        for proto in ("tcp", "tcp6", "udp", "udp6"):
            try:
                lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                f = line.split()
                if f[9] not in inodes:
                    continue
                addr, port = f[1].split(":")
                out.append(Bound(pid, proto, _addr(addr), int(port, 16),
                                 proto.startswith("tcp") and f[3] == LISTEN))
    return out


def exposed(socks: list[Bound]) -> list[Bound]:
    """Sockets others beyond this machine could reach: listening TCP or bound UDP on an
    address that is not loopback (``0.0.0.0`` and ``::`` included)."""
    return [s for s in socks if (s.listening or s.proto.startswith("udp")) and not s.loopback]
