"""Run directories and checkpoints nobody else can use to run code as the user (issue 24):
no pickle is read back, every checkpoint file is hashed, run directories are private and
refused when another user could have planted files in them, links are never followed."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import stat
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from mixfleet import safefs
from mixfleet.cli import main
from mixfleet.errors import CheckpointError
from mixfleet.train.checkpoint.dcp import committed_steps, verify
from mixfleet.train.checkpoint.safeload import SafePlanner, SafeReader
from tests.train.helpers import DIGITS, events
from tests.train.test_checkpoint import run_inproc

TINY = ("train.steps=4", "checkpoint.interval=2", "launch.nproc=1", "launch.max_restarts=0",
        "checkpoint.snapshot_interval=0")


class Plant:
    """Unpickling this creates the marker file (what a planted pickle would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-step run with committed checkpoints at steps 2 and 4."""
    d = tmp_path_factory.mktemp("sec") / "run"
    run_inproc(d, *TINY)
    return d


def _copy(done: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(done, run, symlinks=True)
    return run


def recommit(d: Path) -> None:
    """What a forger who can write the directory does: hashes, manifest and COMMIT made
    consistent with the files as they are now."""
    m = json.loads((d / "manifest.json").read_text())
    m["files"] = {f: {"sha256": hashlib.sha256((d / f).read_bytes()).hexdigest(),
                      "bytes": (d / f).stat().st_size} for f in m["files"]}
    data = json.dumps(m).encode()
    (d / "manifest.json").write_bytes(data)
    (d / "COMMIT").write_text(json.dumps({
        "step": m["step"], "manifest_sha256": hashlib.sha256(data).hexdigest(),
        "files": {f: v["bytes"] for f, v in m["files"].items()}}))


def _newest(run: Path) -> Path:
    return committed_steps(run / "checkpoints")[0][0][1]


def test_every_file_is_private_and_hashed_in_the_manifest(done: Path) -> None:
    """A new run directory and everything in it are private (0700 / 0600), and every file
    of a checkpoint is in its manifest with the right sha256."""
    for p in [done, *done.rglob("*")]:
        mode = stat.S_IMODE(os.lstat(p).st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
    d = _newest(done)
    files = json.loads((d / "manifest.json").read_text())["files"]
    on_disk = {p.name for p in d.iterdir()} - {"manifest.json", "COMMIT"}
    assert set(files) == on_disk and ".metadata" in files
    for name, h in files.items():
        assert h["sha256"] == hashlib.sha256((d / name).read_bytes()).hexdigest()


def test_share_with_group_gives_0750_and_0640(tmp_path: Path) -> None:
    """[checkpoint] share_with_group = true: the run directory 0750, its files 0640."""
    from mixfleet.train.launch import prepare_run, resolve_config

    cfg = resolve_config(DIGITS, [*TINY, "checkpoint.share_with_group=true"])
    run = prepare_run(cfg, tmp_path / "run")
    run.emit("x")
    safefs.make_dir(run.pids)
    assert stat.S_IMODE(run.root.stat().st_mode) == 0o750
    assert stat.S_IMODE(run.pids.stat().st_mode) == 0o750
    assert stat.S_IMODE(run.config.stat().st_mode) == 0o640
    assert stat.S_IMODE(run.events_path.stat().st_mode) == 0o640


def test_planted_metadata_pickle_is_refused_and_never_run(done: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture
                                                          ) -> None:
    """A pickle in .metadata (with hashes and COMMIT forged to match) is refused naming the
    file: by verify, by `mixfleet export` (exit 2, one line), and on resume, which falls
    back to the older checkpoint with an event saying why; the payload never runs."""
    run = _copy(done, tmp_path)
    marker = tmp_path / "pwned"
    d = _newest(run)
    (d / ".metadata").write_bytes(pickle.dumps(Plant(marker)))
    recommit(d)
    with pytest.raises(CheckpointError, match=r"\.metadata refused"):
        verify(d)
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ".metadata" in err and "Traceback" not in err
    run_inproc(run, *TINY[1:], "train.steps=6")
    skipped = events(run, "checkpoint_skipped")
    assert any(".metadata refused" in e["reason"] for e in skipped)
    assert [e["resumed_from"] for e in events(run, "run_start")][-1] == 2
    assert not marker.exists()


@pytest.mark.parametrize("name", ["manifest.json", "COMMIT"])
def test_pickle_in_place_of_json_is_refused(done: Path, tmp_path: Path, name: str) -> None:
    """A pickle in place of the manifest or COMMIT marker is not a committed checkpoint
    and is never unpickled."""
    run = _copy(done, tmp_path)
    marker = tmp_path / "pwned"
    d = _newest(run)
    (d / name).write_bytes(pickle.dumps(Plant(marker)))
    assert d not in [p for _, p in committed_steps(run / "checkpoints")[0]]
    with pytest.raises(CheckpointError):
        verify(d)
    assert not marker.exists()


def test_pickled_entry_in_a_data_file_is_refused(tmp_path: Path) -> None:
    """A non-tensor entry of a DCP data file holding a pickle payload is refused by the
    safe planner (weights_only), while DCP's default planner would have run it."""
    marker = tmp_path / "pwned"
    d = tmp_path / "ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"w": torch.ones(3), "extra": Plant(marker)}, checkpoint_id=str(d),
                 no_dist=True)
        state = {"w": torch.zeros(3), "extra": None}
        with pytest.raises(CheckpointException, match="Weights only load failed"):
            dcp.load(state, storage_reader=SafeReader(d), planner=SafePlanner(), no_dist=True)
        assert not marker.exists()
        dcp.load({"w": torch.zeros(3), "extra": None}, checkpoint_id=str(d), no_dist=True)
    assert marker.exists()  # the attack the safe planner stops is real


def test_changed_file_fails_its_hash_and_resume_falls_back(done: Path, tmp_path: Path
                                                          ) -> None:
    """A data file changed after commit (same size) is refused by its sha256; resume uses
    the previous committed checkpoint and says why in an event."""
    run = _copy(done, tmp_path)
    d = _newest(run)
    f = next(d.glob("*.distcp"))
    data = bytearray(f.read_bytes())
    data[-9] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        verify(d)
    run_inproc(run, *TINY[1:], "train.steps=6")
    assert any("sha256" in e["reason"] for e in events(run, "checkpoint_skipped"))
    assert [e["resumed_from"] for e in events(run, "run_start")][-1] == 2


@pytest.mark.parametrize("name", ["config.toml", "last_step", "events.jsonl",
                                  "metrics.jsonl"])
def test_link_in_place_of_a_run_file_is_refused(done: Path, tmp_path: Path,
                                                name: str) -> None:
    """A link where a run file should be makes `mixfleet train` exit 2; the file it points
    to is neither written nor read."""
    run = _copy(done, tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    (run / name).unlink()
    (run / name).symlink_to(victim)
    argv = ["train", str(DIGITS), "--run-dir", str(run)]
    for o in (*TINY[1:], "train.steps=6"):
        argv += ["--set", o]
    assert main(argv) == 2
    assert victim.read_bytes() == b"precious\n"


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_writable_run_dir_is_refused_and_nothing_written(tmp_path: Path, mode: int,
                                                        capsys: pytest.CaptureFixture
                                                        ) -> None:
    """An existing run directory others may write is refused with exit 2 and the fix,
    and nothing is written in it."""
    run = tmp_path / "shared"
    run.mkdir()
    run.chmod(mode)
    assert main(["train", str(DIGITS), "--run-dir", str(run), "--set", "train.steps=2"]) == 2
    assert "chmod go-w" in capsys.readouterr().err
    assert list(run.iterdir()) == []


def test_foreign_run_dir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run directory owned by another user is refused (exit 2), nothing written."""
    run = tmp_path / "theirs"
    run.mkdir(mode=0o700)
    real = os.geteuid()
    monkeypatch.setattr(safefs, "_euid", lambda: real + 1)
    assert main(["train", str(DIGITS), "--run-dir", str(run), "--set", "train.steps=2"]) == 2
    assert list(run.iterdir()) == []


def test_gasp_link_is_not_followed_by_clean_or_the_dying_gasp(tmp_path: Path) -> None:
    """With gasp/ a link to another directory, `mixfleet clean RUN` deletes nothing there
    and a dying gasp writes nothing there."""
    from mixfleet.train.checkpoint.snapshot import MemorySnapshot, SnapshotRefused

    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    (run / "config.toml").write_text("")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.snap").write_bytes(b"x")
    (run / "gasp").symlink_to(outside)
    assert main(["clean", str(run)]) == 0
    assert (outside / "keep.snap").read_bytes() == b"x"
    snap = MemorySnapshot(tmp_path / "s.snap", [("w", torch.zeros(4))])
    snap.write(1)
    with pytest.raises(SnapshotRefused):
        snap.persist(run / "gasp" / "r0.snap")
    assert sorted(p.name for p in outside.iterdir()) == ["keep.snap"]


def test_clean_skips_dangling_links_with_a_note(tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """A dangling link among snapshot files (in the run's gasp/ and in /dev/shm) is
    skipped with a note; clean does not fail."""
    from mixfleet.train.checkpoint.snapshot import legacy_snapshot_path

    run = tmp_path / "run"
    (run / "gasp").mkdir(parents=True, mode=0o700)
    (run / "config.toml").write_text("")
    (run / "gasp" / "r0.snap").symlink_to(tmp_path / "nowhere")
    shm = legacy_snapshot_path(tmp_path / f"dangling-{os.getpid()}", 1, 0)
    shm.symlink_to(tmp_path / "nowhere")
    try:
        assert main(["clean", str(run)]) == 0
        assert main(["clean", "--dry-run"]) == 0
    finally:
        shm.unlink()
    out = capsys.readouterr().out
    assert "dangling link" in out and str(run / "gasp" / "r0.snap") in out
    assert os.path.islink(run / "gasp" / "r0.snap")


def test_pickle_in_place_of_a_data_file_is_refused(done: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """A data file replaced by a pickle (hashes forged to match) is refused by export
    (exit 2, one line) and on resume (the older checkpoint is used); it never runs."""
    run = _copy(done, tmp_path)
    marker = tmp_path / "pwned"
    d = _newest(run)
    next(d.glob("*.distcp")).write_bytes(pickle.dumps(Plant(marker)) * 64)
    recommit(d)
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "out")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    run_inproc(run, *TINY[1:], "train.steps=6")
    assert [e["resumed_from"] for e in events(run, "run_start")][-1] == 2
    assert events(run, "checkpoint_skipped") and not marker.exists()
