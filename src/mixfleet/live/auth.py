"""Who may talk to the fleet's Ray: token authentication, private files and directories.

Ray (>= 2.52) checks a shared token on every RPC and HTTP entry point when every Ray
process runs with ``RAY_AUTH_MODE=token``; the token is read from ``RAY_AUTH_TOKEN``, else
the file named by ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``. mixfleet writes its
own token (:func:`write_token`: 64 hex digits, a 0600 file in the 0700 fleet directory;
Ray's own generator writes with the umask) and puts :func:`auth_env` into the environment
of every process that talks to the cluster: the head (``ray start``; its raylet passes it on
to the workers that run the attempts), the scheduler daemon and any other driver. See
docs/security.md.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from importlib import metadata
from pathlib import Path

from mixfleet.errors import ConfigError
from mixfleet.safefs import read_secret_file

__all__ = ["TOKEN_FILE", "MIN_RAY", "require_ray_auth", "write_token", "check_token_file",
           "auth_env", "private_dir", "AUTH_VARS"]

TOKEN_FILE = "ray-token"
MIN_RAY = (2, 52)
"""The first Ray release with token authentication."""
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def require_ray_auth() -> str:
    """The installed Ray's version, when it has token authentication; else ConfigError."""
    try:
        v = metadata.version("ray")
    except metadata.PackageNotFoundError:
        raise ConfigError("the live fleet on Ray needs Ray; pip install 'mixfleet[fleet]' "
                          "(or use --backend local)") from None
    m = re.match(r"(\d+)\.(\d+)", v)
    if m is None or (int(m[1]), int(m[2])) < MIN_RAY:
        raise ConfigError(f"Ray {v} has no token authentication, so any local user could "
                          f"run code through the fleet's cluster; install Ray >= "
                          f"{MIN_RAY[0]}.{MIN_RAY[1]} (pip install -U 'mixfleet[fleet]')")
    return v


def private_dir(path: str | Path) -> Path:
    """``path`` as a directory only its owner can enter (0700): made so, or an existing one
    of the user's set so; another user's is refused."""
    d = Path(path)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"fleet directory {str(d)!r} is a link or not a directory; pass "
                          f"--dir of a directory of your own")
    if st.st_uid != os.getuid():
        raise ConfigError(f"fleet directory {str(d)!r} belongs to uid {st.st_uid}, not to "
                          f"you (uid {os.getuid()}); pass --dir of a directory of your own")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(d, 0o700)
    return d


def write_token(fleet_dir: str | Path) -> Path:
    """A new token in ``fleet_dir/ray-token`` (0600, created, never through a link)."""
    p = Path(fleet_dir) / TOKEN_FILE
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode())
    finally:
        os.close(fd)
    return p


def check_token_file(path: str | Path) -> Path:
    """``path`` as a token file Ray may read: a regular file of the user's that nobody
    else can read, not empty; else ConfigError naming the fix."""
    p = Path(path).absolute()
    fix = "pass the file that holds the cluster's token"
    if not read_secret_file(p, "--ray-token-file", fix).strip():
        raise ConfigError(f"--ray-token-file {str(p)!r} is empty; {fix}")
    return p


def auth_env(token_file: str | Path) -> dict[str, str]:
    """The variables that switch token authentication on with the token in ``token_file``
    (merge into a copy of ``os.environ`` with ``RAY_AUTH_TOKEN`` removed: it would win)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
