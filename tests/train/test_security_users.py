"""Two local users (issue 24): the attacks of another account on the same machine, replayed
with a throwaway uid (``setpriv``, no account needed). Needs root; skipped elsewhere."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixfleet.cli import main
from tests.train.helpers import DIGITS
from tests.train.test_security_files import Plant

SETPRIV = shutil.which("setpriv")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None,
    reason="two-user tests act as a throwaway uid: they need root and setpriv (util-linux)")
OTHER = 60000 + os.getpid() % 5000  # no account: setpriv needs none


def as_other(*cmd: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` as the other user (its uid and gid, no supplementary groups)."""
    assert SETPRIV is not None
    return subprocess.run([SETPRIV, f"--reuid={OTHER}", f"--regid={OTHER}", "--clear-groups",
                           *cmd], capture_output=True, text=True, timeout=30)


@pytest.fixture
def pub() -> Iterator[Path]:
    """A directory both users reach, like /tmp (sticky, world-writable)."""
    d = Path(tempfile.mkdtemp(prefix="mixfleet-sec-", dir="/tmp"))
    d.chmod(0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _tree(d: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(d)), os.lstat(p).st_uid) for p in d.rglob("*"))


def _plant_checkpoint(pub: Path, run: Path, marker: Path) -> None:
    """As the other user: a forged committed checkpoint whose .metadata is a pickle."""
    meta = pickle.dumps(Plant(marker))
    manifest = json.dumps({"step": 2, "files": {".metadata": {
        "sha256": hashlib.sha256(meta).hexdigest(), "bytes": len(meta)}}}).encode()
    commit = json.dumps({"step": 2, "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
                         "files": {".metadata": len(meta)}}).encode()
    src = pub / "src"
    src.mkdir()
    for name, data in ((".metadata", meta), ("manifest.json", manifest), ("COMMIT", commit)):
        (src / name).write_bytes(data)
    src.chmod(0o755)
    d = run / "checkpoints" / "step_0000002"
    assert as_other("mkdir", "-p", str(d)).returncode == 0
    assert as_other("cp", "-a", f"{src}/.", str(d)).returncode == 0
    assert as_other("sh", "-c", f"printf '' > {run}/config.toml").returncode == 0


@pytest.mark.parametrize("mode", ["777", "755"])
def test_run_dir_of_another_user_is_never_trained_in(pub: Path, mode: str,
                                                    capsys: pytest.CaptureFixture) -> None:
    """A run directory another user pre-created (open to all, or just theirs) holding a
    planted checkpoint: `mixfleet train` exits 2 with the fix, writes nothing there and
    never runs the payload."""
    run, marker = pub / "shared", pub / "pwned"
    assert as_other("mkdir", "-m", mode, str(run)).returncode == 0
    _plant_checkpoint(pub, run, marker)
    before = _tree(run)
    assert main(["train", str(DIGITS), "--run-dir", str(run), "--set", "train.steps=2"]) == 2
    err = capsys.readouterr().err
    assert "--run-dir" in err and ("chmod" in err or "not to you" in err)
    assert _tree(run) == before and not marker.exists()


def test_teammates_planted_checkpoint_is_refused_by_export(pub: Path,
                                                          capsys: pytest.CaptureFixture
                                                          ) -> None:
    """Export reads a teammate's run, but a planted .metadata pickle in it is refused with
    one line (exit 2) and never runs."""
    run, marker = pub / "theirs", pub / "pwned"
    assert as_other("mkdir", "-m", "755", str(run)).returncode == 0
    _plant_checkpoint(pub, run, marker)
    assert main(["export", str(run), "--out", str(pub / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ".metadata refused" in err
    assert not marker.exists()


def test_clean_does_not_follow_another_users_gasp_link(pub: Path) -> None:
    """`mixfleet clean` on a directory whose gasp/ another user made a link to the
    victim's files deletes none of them."""
    victim = pub / "victim"
    victim.mkdir(mode=0o700)
    (victim / "precious.snap").write_bytes(b"x")
    trap = pub / "trap"
    assert as_other("mkdir", "-m", "755", str(trap)).returncode == 0
    assert as_other("touch", str(trap / "config.toml")).returncode == 0
    assert as_other("ln", "-s", str(victim), str(trap / "gasp")).returncode == 0
    assert main(["clean", str(trap)]) == 0
    assert (victim / "precious.snap").read_bytes() == b"x"


def test_other_user_cannot_read_a_private_run(pub: Path) -> None:
    """A run directory mixfleet creates is private: the other user can neither list it
    nor read its config."""
    from mixfleet.train.launch import prepare_run, resolve_config

    run = prepare_run(resolve_config(DIGITS, ["train.steps=2"]), pub / "mine")
    assert (run.config).is_file()
    assert as_other("ls", str(run.root)).returncode != 0
    assert as_other("cat", str(run.config)).returncode != 0
