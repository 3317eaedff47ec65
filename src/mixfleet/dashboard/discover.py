"""Finding what to show under the directories a user gave: run directories, throughput
tables (``mixfleet bench --out``) and simulation results (``mixfleet simulate --out``).

A link under a given directory may lead anywhere; what it leads to outside the given
directories is shown only when it belongs to the user running the dashboard (its
``st_uid``), so a link cannot expose another user's runs (docs/dashboard.md)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from mixfleet.dashboard.runstore import is_run_dir

__all__ = ["Found", "discover", "item_id", "MAX_DEPTH"]

MAX_DEPTH = 4
"""How deep below a given directory to look."""

_SKIP = {"checkpoints", "final", "gasp", "stacks", "pids", "__pycache__", ".git", ".venv",
         "node_modules"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Found:
    """What lies under the given directories."""

    runs: list[Path]
    tables: list[Path]
    results: list[Path]
    notes: list[str]
    """A given directory that holds nothing to show, in words."""


def item_id(path: Path) -> str:
    """A stable, URL-safe id for a found path."""
    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def _shown(path: Path, roots: list[Path]) -> bool:
    """``path`` lies inside a given directory (links resolved), or is the user's own."""
    try:
        if _inside(path.resolve(strict=True), roots):
            return True
        return path.stat().st_uid == os.getuid()
    except (OSError, RuntimeError):
        return False


def discover(roots: list[Path]) -> Found:
    real = [r.resolve() for r in roots]
    runs: list[Path] = []
    tables: list[Path] = []
    results: list[Path] = []
    notes: list[str] = []
    for root in roots:
        before = len(runs) + len(tables) + len(results)
        if not root.is_dir():
            notes.append(f"{root} is no longer a directory")
            continue
        stack = [(root, 0)]
        while stack:
            d, depth = stack.pop()
            if is_run_dir(d):
                runs.append(d)
                continue  # a run's own sub-folders hold checkpoints, not runs
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError:
                continue
            for e in entries:
                if e.is_file():
                    if e.name in ("throughput.json", "throughput.csv"):
                        if not (e.name == "throughput.csv" and
                                (Path(d) / "throughput.json").is_file()):
                            tables.append(Path(e.path))
                    elif e.name == "results.json":
                        results.append(Path(e.path))
                elif e.is_dir() and depth < MAX_DEPTH and e.name not in _SKIP:
                    stack.append((Path(e.path), depth + 1))
        if len(runs) + len(tables) + len(results) == before:
            notes.append(f"{root} holds no run directory (events.jsonl or metrics.jsonl), "
                         f"no throughput table and no results.json within {MAX_DEPTH} "
                         f"levels")
    def keep(paths: list[Path]) -> list[Path]:
        """The shown ones, each place once (two links to one run are one run)."""
        out: dict[Path, Path] = {}
        for p in sorted(set(paths)):
            if _shown(p, real):
                out.setdefault(p.resolve(), p)
        return sorted(out.values())

    return Found(runs=keep(runs), tables=keep(tables), results=keep(results), notes=notes)
