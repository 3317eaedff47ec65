"""Helpers for training tests: run ``mixfleet train`` and read its results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from tests.conftest import EXAMPLES, REPO

DIGITS = EXAMPLES / "digits-cnn.toml"
STEPS, INTERVAL = 600, 50
BASE = (f"train.steps={STEPS}", f"checkpoint.interval={INTERVAL}", "train.log_every=100")


def train_cli(run_dir: Path, *overrides: str, nproc: int = 2, config: Path = DIGITS,
              extra: tuple[str, ...] = (), timeout: float = 240,
              env: dict[str, str] | None = None, pin_snapshots: bool = True
              ) -> dict[str, Any]:
    """Run ``mixfleet train`` in a subprocess; returns summary.json (asserts success).

    The snapshot interval is pinned (``checkpoint.snapshot_max_cost=0``: no pacing) so that
    a test's bound on steps lost is the interval it set; ``pin_snapshots=False`` runs with
    the default pacing, as a user does."""
    cmd = [sys.executable, "-m", "mixfleet", "train", str(config), "--nproc", str(nproc),
           "--run-dir", str(run_dir), "--json", *extra]
    pin = ("checkpoint.snapshot_max_cost=0",) if pin_snapshots else ()
    for o in (*pin, *overrides):
        cmd += ["--set", o]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, f"mixfleet train failed ({p.returncode}):\n{p.stderr[-4000:]}"
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return dict(torch.load(run_dir / "final" / "model.pt", weights_only=True))


def bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def events(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    out = []
    with (run_dir / "events.jsonl").open() as f:
        for line in f:
            rec = json.loads(line)
            if kind is None or rec["event"] == kind:
                out.append(rec)
    return out


def losses(run_dir: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    with (run_dir / "metrics.jsonl").open() as f:
        for line in f:
            rec = json.loads(line)
            out[rec["step"]] = rec["loss"]
    return out
