"""A live fleet on a private local Ray head for the tests (one per test module)."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mixfleet.live.control import down, up
from mixfleet.live.head import head_pids
from mixfleet.live.store import Store

from .conftest import fleet3

pytest.importorskip("ray")


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``cond`` until it returns something truthy (fails after ``timeout_s``)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def listening(pids: list[int]) -> list[str]:
    """Local addresses on which any of ``pids`` listens (TCP)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    addrs = []
    for line in out.splitlines():
        found = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if found & set(pids):
            addrs.append(line.split()[3])
    return addrs


def bound_addresses(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state held by ``pids``, read from
    /proc (each process's socket inodes matched in /proc/net/tcp and tcp6)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out = []
    for name, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(name).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A: LISTEN
                continue
            hexip, hexport = f[1].split(":")
            raw = bytes.fromhex(hexip)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, width // 2, 4))
            ip = str(ipaddress.ip_address(raw))
            out.append((ip, int(hexport, 16)))
    return out


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or ::ffff:127.x (an IPv6 socket bound to a v4 loopback address)."""
    a = ipaddress.ip_address(ip)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return a.is_loopback


def live_fleet(tmp_path_factory: pytest.TempPathFactory, fleet: Any = None
               ) -> Iterator[tuple[Path, Any]]:
    """Start an embedded Ray fleet (default: 3 emulated pools) and stop it after the
    module, checking that nothing it started is left."""
    old = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    d = tmp_path_factory.mktemp("live") / "fleet"
    state = up(fleet or fleet3(), d, backend="ray", num_cpus=1)
    try:
        yield d, state
    finally:
        down(d)
        if old is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = old
    assert head_pids(state["mark"], state["temp_dir"]) == []
    assert not Path(state["temp_dir"]).parent.exists()


def submit(d: Path, job: Path) -> str:
    from mixfleet.live.control import load_state
    from mixfleet.live.spec import load_job

    return Store(d).submit(load_job(job, load_state(d).fleet))


def job_state(d: Path, jid: str) -> str:
    j = Store(d).job(jid)
    assert j is not None
    return j.state


def solo_weights(config: Path, out: Path, nproc: int = 1, device: str = "cpu") -> Any:
    """Final weights of a plain `mixfleet train` of ``config``, with one CPU thread per rank
    as the fleet runs a job on an emulated pool (another thread count sums in another
    order: not bit-identical)."""
    import os

    import torch

    subprocess.run([sys.executable, "-m", "mixfleet", "train", str(config), "--nproc",
                    str(nproc), "--device", device, "--run-dir", str(out)], check=True,
                   capture_output=True, env={**os.environ, "MIXFLEET_CPU_THREADS": "1"})
    return torch.load(out / "final" / "model.pt", weights_only=True)


def weights(run: Path) -> Any:
    import torch

    return torch.load(run / "final" / "model.pt", weights_only=True)


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
