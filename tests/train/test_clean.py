"""``mixfleet clean``: snapshot files of a run that no process uses are removed; a file a
running process has mapped is kept; a directory that is not a run is bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from mixfleet.cli import main
from mixfleet.train.checkpoint.snapshot import MemorySnapshot, snapshot_path


def test_clean_removes_abandoned_snapshots_and_keeps_mapped_ones(tmp_path: Path,
                                                                capsys: object) -> None:
    """Of a run's two snapshot files, the one mapped by a live process stays; the other
    is removed; --dry-run removes nothing."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("")
    t = torch.zeros(1000)
    free, held = snapshot_path(run, 2, 0), snapshot_path(run, 2, 1)
    MemorySnapshot(free, [("w", t)]).write(1)
    MemorySnapshot(held, [("w", t)]).write(1)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import mmap,sys,time;f=open(sys.argv[1],'rb');m=mmap.mmap(f.fileno(),0,"
        "access=mmap.ACCESS_READ);print('ok',flush=True);time.sleep(60)"), str(held)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        assert main(["clean", str(run), "--dry-run"]) == 0
        assert free.exists() and held.exists()
        assert main(["clean", str(run)]) == 0
        assert not free.exists() and held.exists()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
        held.unlink(missing_ok=True)
        free.unlink(missing_ok=True)


def test_clean_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    """A directory without config.toml exits 2 and removes nothing."""
    assert main(["clean", str(tmp_path)]) == 2
