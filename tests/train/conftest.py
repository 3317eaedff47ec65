"""The fault-free 2-rank reference run that fault tests compare against (once a session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.helpers import BASE, train_cli


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ref") / "run"
    s = train_cli(d, *BASE)
    assert s["restarts"] == 0 and s["steps_lost"] == 0
    return d
