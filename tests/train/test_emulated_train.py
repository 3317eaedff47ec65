"""Training on an emulated chip: the same math as the CPU, paced and labeled ``emulated``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.train.helpers import bit_identical, final_weights
from tests.train.test_checkpoint import run_inproc


def test_emulated_chip_trains_the_same_model_and_labels_everything(tmp_path: Path) -> None:
    """emu:kunlun-p800 gives bit-identical weights to a CPU run; summary, step records and
    telemetry samples are all marked emulated."""
    common = ("train.steps=120", "telemetry.hz=20")
    s_emu = run_inproc(tmp_path / "emu", *common, "launch.device='emu:kunlun-p800'")
    run_inproc(tmp_path / "cpu", *common, "launch.device='cpu'")
    assert bit_identical(final_weights(tmp_path / "emu"), final_weights(tmp_path / "cpu"))
    assert s_emu["emulated"] is True and s_emu["device"] == "emu:kunlun-p800"
    recs = [json.loads(x) for x in (tmp_path / "emu" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "loss" in r]
    samples = [r for r in recs if r.get("kind") == "telemetry"]
    assert len(steps) == 120 and all(r["emulated"] is True for r in steps)
    assert samples and all(r["emulated"] is True and r["source"] == "emulated" for r in samples)
    assert all(r["device"] == "emu:kunlun-p800" for r in samples)
    manifest = json.loads((tmp_path / "emu" / "checkpoints" / "step_0000100" /
                           "manifest.json").read_text())
    assert manifest["per_rank"][0]["emulated"] == "emu:kunlun-p800"
