"""``python -m mixfleet.live.wrap RCFILE -- ARGV...``: run ARGV and write its exit code to
RCFILE (atomically), so a restarted scheduler learns how an attempt ended."""

from __future__ import annotations

import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    rcfile, sep, cmd = argv[0], argv[1], argv[2:]
    if sep != "--" or not cmd:
        print("usage: python -m mixfleet.live.wrap RCFILE -- ARGV...", file=sys.stderr)
        return 2
    rc = subprocess.call(cmd)
    tmp = rcfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(rc))
    os.replace(tmp, rcfile)
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
