"""``mixfleet dashboard``: serve a local, read-only web app over runs, chips, simulations
and the live fleet."""

from __future__ import annotations

import argparse
from pathlib import Path

from mixfleet.errors import ConfigError

__all__ = ["add_parser", "cmd_dashboard"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="a local web app of runs, chips, simulations and "
                       "the fleet (read-only)", description=__doc__)
    p.add_argument("runs", nargs="*", metavar="RUNS_DIR", help="directories with run "
                   "directories, bench tables (throughput.json) and simulation results "
                   "(results.json); default: ./runs if it exists")
    p.add_argument("--fleet", metavar="FLEET_DIR", help="a live fleet's directory "
                   "(fleet.db)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1)")
    p.add_argument("--port", type=int, default=8600, help="TCP port (default 8600; 0 picks "
                   "a free one)")
    p.add_argument("--token-file", metavar="PATH", help="a private file (mode 0600) holding "
                   "the token every request needs; default: a new token at each start, "
                   "printed in the URL")
    p.add_argument("--token", nargs="?", const="", default=None, metavar="TOKEN",
                   help=argparse.SUPPRESS)
    p.add_argument("--refresh", type=float, default=2.0, metavar="SECONDS",
                   help="seconds between a page's live updates (default 2)")
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from mixfleet.dashboard.config import DashboardConfig, new_token, read_token_file

    if args.token:
        raise ConfigError("--token VALUE is refused: every local user sees it in `ps`; "
                          "put the token in a file only you can read (chmod 600) and pass "
                          "--token-file PATH, or leave both out to have one generated")
    runs = [Path(r) for r in args.runs]
    if not runs and Path("runs").is_dir():
        runs = [Path("runs")]
    token = read_token_file(args.token_file) if args.token_file else new_token()
    cfg = DashboardConfig(runs=tuple(runs), fleet=Path(args.fleet) if args.fleet else None,
                          host=args.host, port=args.port, token=token,
                          refresh_s=args.refresh)
    from mixfleet.dashboard.server import bind, serve, url_of

    sock = bind(cfg)
    if args.token_file:
        print(f"mixfleet dashboard (read-only) on {url_of(sock, None)} (token: the content "
              f"of {args.token_file})", flush=True)
    else:
        print(f"mixfleet dashboard (read-only) on {url_of(sock, cfg.token)}", flush=True)
    print("Ctrl-C stops it", flush=True)
    serve(cfg, sock)
    return 0
