"""The GPU check script's CPU half: every check runs and passes on the CPU (so the script
that a rare, short GPU loan depends on does not rot)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_runs_every_check_on_the_cpu(tmp_path: Path) -> None:
    """`gpu_check.py --cpu` passes every check, the kill-and-resume bit for bit included."""
    out = tmp_path / "gc"
    p = subprocess.run([sys.executable, "-P", str(ROOT / "benchmarks" / "gpu_check.py"),
                        "--cpu", "--out", str(out)], capture_output=True, text=True,
                       timeout=280, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    summary = (out / "summary.txt").read_text()
    assert "FAIL" not in summary
    assert "bit-identical to the uninterrupted run: True" in summary


def test_without_an_accelerator_it_says_so_and_exits_0() -> None:
    """No GPU: one line, exit 0, nothing written."""
    p = subprocess.run([sys.executable, "-P", str(ROOT / "benchmarks" / "gpu_check.py"),
                        "--out", "/nonexistent/never-written"], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    import torch

    if torch.accelerator.is_available():
        pytest.skip("this machine has an accelerator")
    assert p.returncode == 0 and p.stdout.strip().startswith("gpu-check: no accelerator")
    assert len(p.stdout.strip().splitlines()) == 1
