"""The fault-free 2-rank reference run that fault tests compare against (once a session)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.train.helpers import BASE, train_cli


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ref") / "run"
    s = train_cli(d, *BASE)
    assert s["restarts"] == 0 and s["steps_lost"] == 0
    return d


@pytest.fixture(autouse=True)
def _drop_snapshot_dirs(tmp_path: Path) -> Iterator[None]:
    """Remove the (empty) private snapshot directories that runs under ``tmp_path``
    recorded, so tests leave nothing in /dev/shm."""
    yield
    for rec in tmp_path.rglob("snapshots.*"):
        with contextlib.suppress(OSError):
            d = Path(rec.read_text().strip())
            if d.name.startswith(f"mixfleet-{os.geteuid()}-"):
                d.rmdir()
