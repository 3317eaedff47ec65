"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain progress lines (no rich live display) in tests."""
    monkeypatch.setenv("MIXFLEET_PROGRESS", os.environ.get("MIXFLEET_PROGRESS", "plain"))


@pytest.fixture
def one_thread():
    """One intra-op thread: on a loaded 2-core box two threads spin against each other."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
