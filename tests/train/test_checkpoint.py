"""Checkpoints: torn ones are skipped, failures keep the last good one, nothing is deleted
before a newer one is committed (single in-process rank; fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixfleet.train.checkpoint.dcp import committed_steps, validate_step_dir
from mixfleet.train.launch import launch, prepare_run, resolve_config
from tests.train.helpers import DIGITS, bit_identical, events, final_weights

BASE = ["train.steps=300", "checkpoint.interval=100", "launch.nproc=1",
        "launch.max_restarts=0", "train.log_every=100"]


def run_inproc(run_dir: Path, *overrides: str) -> dict:
    cfg = resolve_config(DIGITS, BASE + list(overrides))
    return launch(cfg, prepare_run(cfg, run_dir), progress="plain")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ref") / "run"
    run_inproc(d)
    return d


def _truncate(d: Path) -> None:
    f = max(d.glob("*.distcp"), key=lambda p: p.stat().st_size)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _no_commit(d: Path) -> None:
    (d / "COMMIT").unlink()


def _bad_manifest(d: Path) -> None:
    m = json.loads((d / "manifest.json").read_text())
    m["step"] = 12345
    (d / "manifest.json").write_text(json.dumps(m))


def _garbled_manifest(d: Path) -> None:
    (d / "manifest.json").write_bytes(b"\x00{not json")


TORN = {"truncated-file": _truncate, "missing-commit": _no_commit,
        "edited-manifest": _bad_manifest, "garbled-manifest": _garbled_manifest}


@pytest.mark.parametrize("kind", list(TORN))
def test_torn_checkpoint_is_skipped_and_resume_matches(tmp_path: Path, reference: Path,
                                                       kind: str) -> None:
    """A torn newest checkpoint is never valid; resume uses the previous one and ends
    bit-identical to the uninterrupted run."""
    d = tmp_path / "run"
    run_inproc(d)
    newest = d / "checkpoints" / "step_0000300"
    assert validate_step_dir(newest) is None
    TORN[kind](newest)
    assert validate_step_dir(newest) is not None
    valid, torn = committed_steps(d / "checkpoints")
    assert [s for s, _ in valid] == [200, 100] and [p for p, _ in torn] == [newest]

    s = run_inproc(d)  # --resume auto: the same config continues
    skipped = events(d, "checkpoint_skipped")
    assert skipped and skipped[-1]["dir"] == str(newest)
    assert events(d, "run_start")[-1]["resumed_from"] == 200
    assert s["restarts"] == 1
    assert bit_identical(final_weights(d), final_weights(reference))


def test_disk_full_keeps_last_good_checkpoint(tmp_path: Path, reference: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    """A failed checkpoint write is reported (event and screen), the previous checkpoint is
    kept, training goes on, and the result equals the fault-free run."""
    d = tmp_path / "run"
    s = run_inproc(d, "faults.inject=['disk-full@step=200']", "checkpoint.keep=1")
    failed = events(d, "checkpoint_failed")
    assert [e["step"] for e in failed] == [200] and failed[0]["kept"] == 100
    assert "No space left" in failed[0]["error"]
    assert "WARNING checkpoint at step 200 failed" in capsys.readouterr().out
    committed = [e["step"] for e in events(d, "checkpoint_committed")]
    assert committed == [100, 300]
    assert s["checkpoint_failures"] == 1
    assert [p.name for p in (d / "checkpoints").glob("step_*")] == ["step_0000300"]
    assert bit_identical(final_weights(d), final_weights(reference))


def test_keep_last_k_and_latest_points_to_newest(tmp_path: Path) -> None:
    """With keep=2 only the two newest committed checkpoints stay; LATEST names the newest."""
    d = tmp_path / "run"
    run_inproc(d, "checkpoint.keep=2", "checkpoint.interval=50")
    names = sorted(p.name for p in (d / "checkpoints").glob("step_*"))
    assert names == ["step_0000250", "step_0000300"]
    assert (d / "checkpoints" / "LATEST").read_text().strip() == "step_0000300"


def test_manifest_holds_what_resume_needs(tmp_path: Path, reference: Path) -> None:
    """The manifest records step, sampler cursor, RNG states, LR schedule, config hash and
    the ranks with their devices."""
    m = json.loads((reference / "checkpoints" / "step_0000300" / "manifest.json").read_text())
    assert m["step"] == 300 and m["sampler"]["cursor_step"] == 300
    assert m["lr_schedule"]["last_epoch"] == 300
    assert len(m["config_hash"]) == 16
    (r0,) = m["per_rank"]
    assert r0["device"] == "cpu" and r0["rank"] == 0
    assert {"python", "numpy", "torch"} <= set(r0["rng"])


def test_synchronous_checkpoints_give_the_same_result(tmp_path: Path, reference: Path) -> None:
    """Writing checkpoints synchronously or asynchronously does not change the training."""
    d = tmp_path / "run"
    run_inproc(d, "checkpoint.asynchronous=false")
    assert bit_identical(final_weights(d), final_weights(reference))
