"""Bad config or flags: exit code 2, one message naming the field and the fix, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixfleet.cli import main
from tests.train.helpers import DIGITS

CASES = [
    # (extra args, words the message must contain)
    (["--set", "workload.name=resnet-9000"], ["workload.name", "resnet-9000", "digits-cnn"]),
    (["--set", "checkpoint.interval=-5"], ["checkpoint.interval", "-5", "interval = 100"]),
    (["--device", "tpu"], ["launch.device", "tpu", "auto"]),
    (["--device", "cuda"], ["launch.device", "cuda", "not available"]),
    (["--device", "emu:nope-9"], ["emu:nope-9", "unknown chip id", "kunlun-p800"]),
    (["--set", "telemetry.hz=-1"], ["telemetry.hz", "-1", "in [0, 100]", "hz = 1.0"]),
    (["--set", "train.steps=many"], ["train.steps", "many", "integer"]),
    (["--set", "train.lr=true"], ["train.lr", "number"]),
    (["--set", "train.stepz=10"], ["train.stepz", "known keys"]),
    (["--set", "nonsense"], ["nonsense", "section.key=value"]),
    (["--nproc", "0"], ["launch.nproc", "0", "--nproc"]),
    (["--set", "faults.inject=['explode@step=3']"], ["faults.inject[0]", "explode", "kill"]),
    (["--set", "train.global_batch=5000"], ["train.global_batch", "5000"]),
    (["--set", "emulate.headroom=0.5"], ["emulate.headroom", "0.5", "headroom = 1.5"]),
]


@pytest.mark.parametrize(("args", "words"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_config_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                               args: list[str], words: list[str]) -> None:
    """Each bad input exits 2 with one line naming the field and value; no run dir appears."""
    run_dir = tmp_path / "run"
    rc = main(["train", str(DIGITS), "--run-dir", str(run_dir), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 or rc is None
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    assert not run_dir.exists()


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A config path that does not exist exits 2 naming the path."""
    rc = main(["train", str(tmp_path / "nope.toml"), "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.toml" in err and "does not exist" in err
    assert not (tmp_path / "r").exists()


def test_malformed_toml(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A file that is not TOML exits 2 and says so."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 3\n")
    rc = main(["train", str(bad), "--run-dir", str(tmp_path / "r")])
    assert rc == 2 and "not valid TOML" in capsys.readouterr().err


def test_wrong_section_type(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A section given as a value exits 2 naming the section."""
    bad = tmp_path / "bad.toml"
    bad.write_text('workload = "digits-cnn"\n[train]\nsteps = 3\n')
    rc = main(["train", str(bad), "--run-dir", str(tmp_path / "r")])
    assert rc == 2 and "[workload] must be a table" in capsys.readouterr().err


def test_unknown_passthrough_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A flag that is neither mixfleet's nor a torchrun multi-node flag exits 2."""
    with pytest.raises(SystemExit) as e:
        main(["train", str(DIGITS), "--run-dir", str(tmp_path / "r"), "--frobnicate"])
    assert e.value.code == 2 and "--frobnicate" in capsys.readouterr().err


def test_resume_never_refuses_a_run_dir_with_checkpoints(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """--resume never on a directory holding checkpoints exits 2 and deletes nothing."""
    ck = tmp_path / "r" / "checkpoints" / "step_0000100"
    ck.mkdir(parents=True)
    (ck / "x").write_text("keep me")
    rc = main(["train", str(DIGITS), "--run-dir", str(tmp_path / "r"), "--resume", "never"])
    assert rc == 2 and "--resume auto" in capsys.readouterr().err
    assert (ck / "x").read_text() == "keep me"
    assert not (tmp_path / "r" / "config.toml").exists()
