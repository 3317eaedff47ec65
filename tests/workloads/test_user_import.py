"""Where a user workload ``package.module:function`` is imported from: an installed
package, ``[workload] path``, or the config file's folder when it is the user's own and not
writable by group or others; never the working directory (docs/security.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mixfleet.errors import WorkloadError
from mixfleet.train.launch import resolve_config
from mixfleet.workloads import load_workload

MODULE = """import torch
from pathlib import Path
Path({marker!r}).write_text("imported")

def build():
    x = torch.randn(8, 3)
    return {{"model": torch.nn.Linear(3, 2), "dataset": (x, torch.zeros(8, dtype=torch.long)),
            "loss": lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="sum")}}
"""


@pytest.fixture(autouse=True)
def _own_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))


def _plant(d: Path, mod: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    marker = d / f"{mod}.imported"
    (d / f"{mod}.py").write_text(MODULE.format(marker=str(marker)))
    return marker


def _config(d: Path, name: str, extra: str = "") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / "cfg.toml"
    p.write_text(f'[workload]\nname = "{name}"\n{extra}\n[train]\nsteps = 1\nglobal_batch = 4\n')
    return p


def _load(cfg_path: Path) -> None:
    cfg = resolve_config(cfg_path, [])
    load_workload(cfg.workload.name, cfg.workload.options, cfg.workload.path)


def test_a_module_in_the_working_directory_is_never_imported(tmp_path, monkeypatch):
    """With the module only in the working directory, loading fails with the fix named and
    the module never runs (its marker stays absent)."""
    cwd = tmp_path / "cwd"
    marker = _plant(cwd, "uw_cwd")
    monkeypatch.chdir(cwd)
    sys.path[:] = [p for p in sys.path if p not in ("", str(cwd))]  # as under -P
    with pytest.raises(WorkloadError, match="working directory is never searched"):
        _load(_config(tmp_path / "cfg", "uw_cwd:build"))
    assert not marker.exists()


def test_the_config_files_folder_is_appended_when_it_is_trusted(tmp_path):
    """The config file's own folder (the user's, mode 0755) is searched, after the installed
    packages (appended to sys.path, never first)."""
    d = tmp_path / "proj"
    marker = _plant(d, "uw_beside")
    _load(_config(d, "uw_beside:build"))
    assert marker.exists()
    assert sys.path.index(str(d)) == len(sys.path) - 1


@pytest.mark.parametrize("mode", [0o775, 0o757])
def test_a_folder_others_can_write_is_not_searched(tmp_path, mode):
    """A config folder writable by group or others is not searched (anyone could have
    planted the module): loading fails and the module never runs."""
    d = tmp_path / "shared"
    marker = _plant(d, f"uw_shared{mode:o}")
    cfg = _config(d, f"uw_shared{mode:o}:build")
    d.chmod(mode)
    with pytest.raises(WorkloadError, match="cannot import"):
        _load(cfg)
    assert not marker.exists()


def test_an_explicit_path_is_used_relative_to_the_config(tmp_path):
    """``[workload] path`` (relative: to the config file) is where the module is found."""
    marker = _plant(tmp_path / "code", "uw_explicit")
    cfg = _config(tmp_path / "cfg", "uw_explicit:build", 'path = "../code"')
    assert resolve_config(cfg, []).workload.path == str(tmp_path / "cfg" / "../code")
    _load(cfg)
    assert marker.exists()


def test_a_path_that_is_no_directory_is_refused(tmp_path):
    """``[workload] path`` naming no directory is bad input naming the field."""
    from mixfleet.errors import ConfigError

    with pytest.raises(ConfigError, match="workload.path"):
        resolve_config(_config(tmp_path, "m:build", 'path = "nowhere"'), [])
