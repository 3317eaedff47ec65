"""Find and end this fleet's processes by a marker in their environment.

Every process the fleet starts (the Ray head's daemons, Ray workers, each attempt's
``mixfleet train`` and torchrun's ranks) inherits an environment variable whose value is
unique to the fleet or the attempt. Stopping by that marker ends what the fleet started and
nothing else (``ray stop`` would end every Ray process on the machine).
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["FLEET_MARK", "ATTEMPT_MARK", "pids_with_env", "pids_with_open_files", "kill_pids",
           "alive", "ExitWatch"]

FLEET_MARK = "MIXFLEET_FLEET_MARK"
ATTEMPT_MARK = "MIXFLEET_ATTEMPT_MARK"


def _other_procs() -> list[Path]:
    """``/proc/<pid>`` of every process on this machine but this one."""
    me = str(os.getpid())
    return [d for d in Path("/proc").iterdir() if d.name.isdigit() and d.name != me]


def pids_with_env(key: str, value: str) -> list[int]:
    """Pids of this machine's processes whose environment holds ``key=value``."""
    needle = f"{key}={value}".encode()
    out = []
    for d in _other_procs():
        try:
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            out.append(int(d.name))
    return out


def pids_with_open_files(prefix: str) -> list[int]:
    """Pids of processes holding a file under ``prefix`` open (Ray agents that scrub their
    environment still write their logs into the head's own temp directory)."""
    out = []
    for d in _other_procs():
        try:
            fds = list((d / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd).startswith(prefix):
                    out.append(int(d.name))
                    break
            except OSError:
                continue
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_pids(pids: Iterable[int], grace_s: float = 3.0) -> None:
    """SIGTERM, then SIGKILL whatever still runs after ``grace_s``."""
    pids = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        end = time.monotonic() + grace_s
        while time.monotonic() < end and any(alive(p) for p in pids):
            time.sleep(0.05)
        pids = [p for p in pids if alive(p)]
        if not pids:
            return


def spawn_detached(argv: list[str], env: dict[str, str], log: str | Path) -> int:
    """Start ``argv`` in its own session with stdout and stderr appended to ``log``;
    returns its pid (no Popen object to outlive: the process may outlive its starter)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, str(log), flags, 0o600),
               (os.POSIX_SPAWN_DUP2, 1, 2)]
    return os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)


def reap(pid: int) -> int | None:
    """The exit code of our child ``pid`` once it has ended (None while it runs, or when
    it is not our child)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


class ExitWatch:
    """Waits for the end of any of a set of processes, ours or not, without polling: a
    pidfd per process (Linux 5.3+), readable once it has ended. Each end is reported once;
    a process that cannot be watched (already gone, no pidfd) counts as ended at once."""

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}  # pid -> its pidfd
        self._ended: set[int] = set()  # pids whose end was reported

    def wait(self, pids: Iterable[int], timeout: float) -> bool:
        """Block until one of ``pids`` ends (True) or ``timeout`` seconds pass (False)."""
        want = set(pids)
        for p in set(self._fds) - want:
            os.close(self._fds.pop(p))
        self._ended &= want
        for p in sorted(want - set(self._fds) - self._ended):
            try:
                self._fds[p] = os.pidfd_open(p)
            except OSError:
                self._ended.add(p)
                return True
        if not self._fds:
            time.sleep(max(timeout, 0.0))
            return False
        ready, _, _ = select.select(list(self._fds.values()), [], [], max(timeout, 0.0))
        for p, fd in list(self._fds.items()):
            if fd in ready:
                os.close(self._fds.pop(p))
                self._ended.add(p)
        return bool(ready)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
