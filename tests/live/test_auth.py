"""The fleet's files and Ray token without a cluster: private directory and files,
refused token files, a joined cluster without a token refused (exit 2, nothing started)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mixfleet.cli import main
from mixfleet.errors import ConfigError
from mixfleet.live.auth import check_token_file, private_dir, require_ray_auth, write_token
from mixfleet.live.head import ray_env
from mixfleet.live.store import Store

from .conftest import FLEET_TOML


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_token_and_database_are_private_and_a_link_is_refused(tmp_path: Path) -> None:
    """The fleet directory is made 0700 (an existing one of the user's too), the token
    file 0600 with 64 hex digits, fleet.db 0600; a link in place of the token or the
    database is refused, not followed."""
    d = tmp_path / "fleet"
    d.mkdir(mode=0o755)
    assert private_dir(d) == d and _mode(d) == 0o700
    tok = write_token(d)
    assert _mode(tok) == 0o600 and len(tok.read_text()) == 64
    int(tok.read_text(), 16)
    Store(d).close()
    assert _mode(d / "fleet.db") == 0o600
    victim = tmp_path / "victim"
    victim.write_text("mine")
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    (other / "ray-token").symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_token(other)
    (other / "fleet.db").symlink_to(victim)
    with pytest.raises(ConfigError, match="fleet.db"):
        Store(other)
    assert victim.read_text() == "mine"


def test_token_files_others_can_read_are_refused(tmp_path: Path) -> None:
    """A joined cluster's token file must be the user's and readable by nobody else."""
    f = tmp_path / "tok"
    f.write_text("a" * 64)
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        check_token_file(f)
    f.chmod(0o600)
    assert check_token_file(f) == f
    with pytest.raises(ConfigError, match="cannot be opened"):
        check_token_file(tmp_path / "missing")


def test_another_users_fleet_directory_is_refused(tmp_path: Path) -> None:
    """A fleet directory owned by another uid is refused and left as it is (root only)."""
    if os.getuid() != 0:
        pytest.skip("needs root to give a directory to another uid")
    d = tmp_path / "theirs"
    d.mkdir()
    d.chmod(0o777)
    os.chown(d, 54321, 54321)
    with pytest.raises(ConfigError, match="uid 54321"):
        private_dir(d)
    assert _mode(d) == 0o777 and list(d.iterdir()) == []


def test_ray_env_carries_the_fleet_token_and_no_other(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Ray process of the fleet gets RAY_AUTH_MODE=token and the fleet's token file;
    a RAY_AUTH_TOKEN of the user's (which Ray would prefer) is dropped."""
    monkeypatch.setenv("RAY_AUTH_TOKEN", "someone-elses")
    env = ray_env("m", tmp_path / "ray-token")
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "ray-token")
    assert "RAY_AUTH_TOKEN" not in env and env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"


def test_installed_ray_has_token_authentication() -> None:
    """The installed Ray is one with token authentication (>= 2.52)."""
    pytest.importorskip("ray")
    major, minor = (int(x) for x in require_ray_auth().split(".")[:2])
    assert (major, minor) >= (2, 52)


def test_joining_a_cluster_without_its_token_exits_2(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`fleet up --address` without --ray-token-file exits 2 naming the fix, and nothing
    is created."""
    d = tmp_path / "fleet"
    rc = main(["fleet", "up", "--fleet", str(FLEET_TOML), "--dir", str(d), "--address",
               "127.0.0.1:1", "--emulate", "always"])
    err = capsys.readouterr().err
    assert rc == 2 and "--ray-token-file" in err and "RAY_AUTH_MODE=token" in err
    assert not d.exists()


def test_stop_head_looks_only_in_the_directory_start_head_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes are matched by open files, and a directory removed, only under a
    ``mixfleet-ray-`` directory (the private parent, or an older fleet's temp directory),
    never under an arbitrary parent such as /tmp."""
    import mixfleet.live.head as head

    scanned: list[str] = []
    monkeypatch.setattr(head, "pids_with_open_files", lambda p: scanned.append(p) or [])
    monkeypatch.setattr(head, "pids_with_env", lambda k, v: [])
    keep = tmp_path / "keep"
    (keep / "r").mkdir(parents=True)
    assert head.stop_head("m", str(keep / "r")) == 0
    assert scanned == [] and (keep / "r").is_dir()
    own = tmp_path / "mixfleet-ray-abc-123"
    (own / "r").mkdir(parents=True)
    head.stop_head("m", str(own / "r"))
    assert scanned == [f"{own}/", f"{own}/"] and not own.exists()
