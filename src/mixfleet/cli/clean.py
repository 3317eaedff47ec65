"""``mixfleet clean [RUN_DIR ...]``: remove in-memory snapshot files that no running process
uses — those of the given run directories, or (no argument) every mixfleet snapshot file of
this user. A finished run removes its own; a run that crashed and was abandoned leaves
them in shared memory until reboot. ``--dry-run`` lists them only."""

from __future__ import annotations

import argparse
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


def cmd_clean(args: argparse.Namespace) -> int:
    from mixfleet.train.checkpoint.hostmem import stale_snapshots
    from mixfleet.train.checkpoint.snapshot import legacy_snapshot_path, snapshot_dir, snapshot_path

    files: list[Path] = []
    for d in args.run_dirs:
        root = Path(d)
        if not (root / "config.toml").is_file():
            raise ConfigError(f"run_dir {d!r} holds no config.toml; pass a directory written "
                              f"by `mixfleet train --run-dir`")
        for probe in (snapshot_path(root, 1, 0), legacy_snapshot_path(root, 1, 0)):
            prefix = probe.name.rsplit("-w", 1)[0]
            files += sorted(p for p in probe.parent.glob(f"{prefix}-w*-r*.snap")
                            if p.stat().st_uid == _uid())
        files += sorted((root / "gasp").glob("*.snap"))
    if not args.run_dirs:
        legacy = legacy_snapshot_path(Path("."), 1, 0).parent
        files = sorted(snapshot_dir().glob("*.snap")) + sorted(
            p for p in legacy.glob("mixfleet-*.snap") if p.stat().st_uid == _uid())
    stale = stale_snapshots(files)
    busy = len(files) - len(stale)
    total = 0
    for f in stale:
        size = f.stat().st_size
        total += size
        print(f"{'would remove' if args.dry_run else 'removed'} {f} ({size / 2**20:.1f} MiB)")
        if not args.dry_run:
            f.unlink(missing_ok=True)
    print(f"{len(stale)} snapshot file(s), {total / 2**20:.1f} MiB"
          f"{' to free' if args.dry_run else ' freed'}; {busy} in use by a running process "
          f"(kept)")
    return 0


def _uid() -> int:
    import os

    return os.getuid()
