"""``mixfleet clean [RUN_DIR ...]``: remove in-memory snapshot files that no running process
uses — those of the given run directories, or (no argument) every mixfleet snapshot file of
this user. A finished run removes its own; a run that crashed and was abandoned leaves
them in shared memory until reboot. ``--dry-run`` lists them only.

Only regular files of this user are removed, found in the run directory's ``gasp/`` or in
this user's own snapshot directories, never through a link: a link (dangling or not) is
skipped with a note (docs/security.md)."""

from __future__ import annotations

import argparse
import hashlib
import os
import stat
from pathlib import Path

from mixfleet.errors import ConfigError

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clean", help="remove abandoned in-memory snapshot files",
                       description=__doc__)
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                   help="run directories whose snapshots to remove (default: all of them)")
    p.add_argument("--dry-run", action="store_true", help="list, do not remove")
    p.set_defaults(func=cmd_clean)


def _lstat(p: Path) -> os.stat_result | None:
    try:
        return os.lstat(p)
    except OSError:
        return None


def _files(d: Path, pattern: str, notes: list[str]) -> list[Path]:
    """Regular files of this user in ``d`` matching ``pattern``; links are noted, skipped."""
    out = []
    for p in sorted(d.glob(pattern)):
        st = _lstat(p)
        if st is None:
            continue
        if stat.S_ISLNK(st.st_mode):
            what = "dangling link" if not os.path.exists(p) else "link"
            notes.append(f"skipped {p}: a {what} (not followed)")
        elif stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
            out.append(p)
    return out


def _run_files(root: Path, notes: list[str]) -> list[Path]:
    from mixfleet.safefs import is_owned_dir
    from mixfleet.train.checkpoint.snapshot import (
        legacy_snapshot_path,
        recorded_snapshot_dirs,
        user_snapshot_dirs,
    )

    st = _lstat(root / "config.toml")
    if st is None or not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"run_dir {str(root)!r} holds no config.toml; pass a directory "
                          f"written by `mixfleet train --run-dir`")
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    files: list[Path] = []
    for d in dict.fromkeys(recorded_snapshot_dirs(root) + user_snapshot_dirs()):
        files += _files(d, f"{key}-w*-r*.snap", notes)
    files += _files(legacy_snapshot_path(root, 1, 0).parent, f"mixfleet-{key}-w*-r*.snap",
                    notes)
    gasp = root / "gasp"
    if is_owned_dir(gasp):
        files += _files(gasp, "*.snap", notes)
    elif _lstat(gasp) is not None:
        notes.append(f"skipped {gasp}: a link or not your directory (not followed)")
    return files


def cmd_clean(args: argparse.Namespace) -> int:
    from mixfleet.safefs import remove_owned_file
    from mixfleet.train.checkpoint.hostmem import stale_snapshots
    from mixfleet.train.checkpoint.snapshot import legacy_snapshot_path, user_snapshot_dirs

    notes: list[str] = []
    files: list[Path] = []
    for d in args.run_dirs:
        files += _run_files(Path(d), notes)
    if not args.run_dirs:
        for sd in user_snapshot_dirs():
            files += _files(sd, "*.snap", notes)
        files += _files(legacy_snapshot_path(Path("."), 1, 0).parent, "mixfleet-*.snap", notes)
    files = list(dict.fromkeys(files))
    stale = stale_snapshots(files)
    busy = len(files) - len(stale)
    total = 0
    for f in stale:
        st = _lstat(f)
        size = st.st_size if st is not None else 0
        why = None if args.dry_run else remove_owned_file(f)
        if why is not None:
            notes.append(f"skipped {f}: {why}")
            continue
        total += size
        print(f"{'would remove' if args.dry_run else 'removed'} {f} ({size / 2**20:.1f} MiB)")
    for note in notes:
        print(note)
    print(f"{len(stale)} snapshot file(s), {total / 2**20:.1f} MiB"
          f"{' to free' if args.dry_run else ' freed'}; {busy} in use by a running process "
          f"(kept)")
    return 0
