"""The dashboard's settings, validated before anything binds or reads."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path

from mixfleet.config import field, require

__all__ = ["DashboardConfig", "is_loopback"]

_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{16,256}$")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True, kw_only=True)
class DashboardConfig:
    """``mixfleet dashboard`` flags."""

    runs: tuple[Path, ...] = field((), help="directories holding run directories, "
                                   "bench tables and simulation results")
    fleet: Path | None = field(None, help="a live fleet's directory (fleet.sqlite)")
    host: str = field("127.0.0.1", help="address to listen on; any non-loopback address "
                      "needs a token")
    port: int = field(8600, help="TCP port (0: any free port)")
    token: str | None = field(None, help="token every request must carry (Authorization: "
                              "Bearer, or ?token= once, then a cookie)")
    refresh_s: float = field(2.0, help="seconds between a page's live updates")

    def __post_init__(self) -> None:
        require(0 <= self.port <= 65535, f"--port must be in 0..65535 (got {self.port}); "
                f"e.g. --port 8600 (0 picks a free port)")
        require(bool(self.host) and " " not in self.host,
                f"--host {self.host!r} is not an address; e.g. --host 127.0.0.1")
        require(is_loopback(self.host) or self.token is not None,
                f"--host {self.host} is not a loopback address, so the dashboard would be "
                f"reachable from other machines; add --token (a token is generated and "
                f"printed) or bind --host 127.0.0.1")
        require(self.token is None or bool(_TOKEN.match(self.token)),
                "--token must be 16-256 characters of letters, digits and ._~+/=- ; or "
                "give --token without a value to have one generated")
        require(0.2 <= self.refresh_s <= 60, f"--refresh must be in 0.2..60 seconds (got "
                f"{self.refresh_s}); e.g. --refresh 2")
        for r in self.runs:
            require(r.is_dir(), f"RUNS_DIR {str(r)!r} is not a directory; pass a directory "
                    f"that holds run directories (e.g. runs/) or a run directory itself")
        require(self.fleet is None or self.fleet.is_dir(),
                f"--fleet {str(self.fleet)!r} is not a directory; pass the live fleet's "
                f"directory (the one holding fleet.sqlite) or leave --fleet out")
