"""``mixfleet export``: a committed checkpoint's weights as sharded safetensors files equal
``final/model.pt`` tensor for tensor; bad input exits 2 and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from mixfleet.cli import main
from tests.train.test_checkpoint import run_inproc


def test_export_equals_the_final_weights_and_refuses_bad_input(tmp_path: Path) -> None:
    """The newest checkpoint (the final step) exported in several shards holds exactly the
    tensors of final/model.pt; a run without checkpoints, an unknown step and a non-empty
    --out exit 2 without writing."""
    run = tmp_path / "run"
    run_inproc(run, "train.steps=20", "checkpoint.interval=10", "launch.nproc=1",
               "launch.max_restarts=0")
    out = tmp_path / "out"
    assert main(["export", str(run), "--out", str(out), "--shard-gib", "0.00005"]) == 0
    idx = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(idx["weight_map"].values()))
    assert len(files) > 1 and idx["metadata"]["step"] == 20
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(str(out / f)))
    ref = torch.load(run / "final" / "model.pt", weights_only=True)
    assert weights.keys() == ref.keys() and all(torch.equal(weights[k], ref[k]) for k in ref)
    assert main(["export", str(run), "--out", str(out)]) == 2  # not empty
    assert main(["export", str(run), "--out", str(tmp_path / "o2"), "--step", "7"]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(empty), "--out", str(tmp_path / "o3")]) == 2
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
