"""The one entry point: ``mixfleet <command>``. Parses arguments and calls the library.

Each command lives in a module of this package with ``add_parser(subparsers)`` (which sets
``func`` on its parser) and the function that runs it. Bad input (:class:`ConfigError`)
exits with code 2 and one message; nothing is written.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mixfleet import __version__
from mixfleet.errors import ConfigError, MixfleetError

# Modules that register commands, in the order of `mixfleet --help`.
COMMAND_MODULES = ("train", "report", "clean", "export", "data", "catalog", "bench", "sim",
                   "fleet", "planjob", "dashboard")

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"mixfleet: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mixfleet", description="Train AI models on a mixed fleet of "
                     "accelerators without losing work.")
    parser.add_argument("--version", action="version", version=f"mixfleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"mixfleet.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"mixfleet.cli.{name}":
                continue
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        check = getattr(args, "check_passthrough", None)
        if check is None:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        bad = check(extra)
        if bad:
            parser.error(bad)
    args.extra = extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"mixfleet: error: {e}", file=sys.stderr)
        return 2
    except MixfleetError as e:
        print(f"mixfleet: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
