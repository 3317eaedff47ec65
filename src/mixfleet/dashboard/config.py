"""The dashboard's settings, validated before anything binds or reads, and its token.

Every dashboard has a token, on every host (127.0.0.1 included, as notebook servers do):
generated at start, or read from a private ``--token-file`` (never a value on the command
line, which every local user sees in ``ps``). See docs/dashboard.md.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import secrets
from pathlib import Path

from mixfleet.config import Section, field, require
from mixfleet.safefs import read_secret_file

__all__ = ["DashboardConfig", "is_loopback", "new_token", "read_token_file"]

_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{16,256}$")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh token (32 random bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


def read_token_file(path: str | Path) -> str:
    """The token kept in ``path``: a regular file of the user's, readable by nobody else
    (opened without following a link, checked on the descriptor); else ConfigError."""
    p = str(path)
    data = read_secret_file(p, "--token-file", f"pass a file holding the token, e.g. python "
                            f"-c 'import secrets; print(secrets.token_urlsafe(32))' > {p}; "
                            f"chmod 600 {p}")
    token = data.decode("utf-8", "replace").strip()
    require(bool(_TOKEN.match(token)), f"--token-file {p!r} must hold one token of 16-256 "
            f"letters, digits and ._~+/=- (got {len(token)} characters); e.g. python -c "
            f"'import secrets; print(secrets.token_urlsafe(32))' > {p}")
    return token


@dataclasses.dataclass(frozen=True, kw_only=True)
class DashboardConfig(Section):
    """``mixfleet dashboard`` flags."""

    token: str = field(help="token every request must carry (Authorization: Bearer, or "
                       "?token= once, exchanged for an HttpOnly cookie)")
    runs: tuple[Path, ...] = field((), help="directories holding run directories, "
                                   "bench tables and simulation results")
    fleet: Path | None = field(None, help="a live fleet's directory (fleet.db)")
    host: str = field("127.0.0.1", help="address to listen on (loopback by default)")
    port: int = field(8600, help="TCP port (0: any free port)", ge=0, le=65535, flag="--port")
    refresh_s: float = field(2.0, help="seconds between a page's live updates", ge=0.2, le=60,
                             flag="--refresh")

    def __post_init__(self) -> None:
        require(bool(self.host) and " " not in self.host,
                f"--host {self.host!r} is not an address; e.g. --host 127.0.0.1")
        require(bool(_TOKEN.match(self.token)),
                "the dashboard token must be 16-256 characters of letters, digits and "
                "._~+/=- ; leave --token-file out to have one generated")
        for r in self.runs:
            require(r.is_dir(), f"RUNS_DIR {str(r)!r} is not a directory; pass a directory "
                    f"that holds run directories (e.g. runs/) or a run directory itself")
        require(self.fleet is None or self.fleet.is_dir(),
                f"--fleet {str(self.fleet)!r} is not a directory; pass the live fleet's "
                f"directory (the one holding fleet.db) or leave --fleet out")
