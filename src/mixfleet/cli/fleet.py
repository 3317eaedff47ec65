"""``mixfleet fleet up|down|report``, ``mixfleet submit|status|cancel|logs``: the live fleet."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mixfleet.errors import ConfigError

__all__ = ["add_parser"]


def _dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=os.environ.get("MIXFLEET_FLEET_DIR", "fleet"),
                   help="fleet directory (default: $MIXFLEET_FLEET_DIR or ./fleet)")


def add_parser(sub: Any) -> None:
    from mixfleet.fleet.policies import POLICY_NAMES

    f = sub.add_parser("fleet", help="run a live fleet on Ray: up, down, report",
                       description="Start, stop and report on a live fleet: a scheduler that "
                       "places submitted training jobs on the pools of a Ray cluster with the "
                       "planner's policies.")
    fs = f.add_subparsers(dest="fleet_command", metavar="ACTION")
    u = fs.add_parser("up", help="start a local Ray head (or join a cluster) and the "
                      "scheduler")
    u.add_argument("--fleet", required=True, help="fleet TOML (see examples/fleet-live.toml)")
    _dir_arg(u)
    u.add_argument("--address", help="join this Ray cluster (HOST:PORT or auto) instead of "
                   "starting a local head on 127.0.0.1")
    u.add_argument("--ray-token-file", metavar="FILE", help="with --address: the file "
                   "(mode 0600) holding the cluster's token; its nodes run with "
                   "RAY_AUTH_MODE=token (a local head gets a new token in the fleet directory)")
    u.add_argument("--policy", default="goodput", choices=POLICY_NAMES)
    u.add_argument("--backend", default="ray", choices=["ray", "local"],
                   help="ray (default), or local: the same scheduler running jobs as local "
                   "processes without Ray")
    u.add_argument("--emulate", default="auto", choices=["auto", "always", "never"],
                   help="auto: pools whose chips this machine lacks are emulated (emu:)")
    u.add_argument("--num-cpus", type=int, default=2, help="CPUs the local Ray head declares")
    u.set_defaults(func=cmd_up)
    d = fs.add_parser("down", help="stop what `fleet up` started, nothing else")
    _dir_arg(d)
    d.set_defaults(func=cmd_down)
    r = fs.add_parser("report", help="per pool and per job: what ran, failures, and the "
                      "Nvidia device-hours replaced")
    _dir_arg(r)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_report)
    ub = fs.add_parser("unblock", help="put a device on the fleet's block list (a drained "
                       "chip) back into service, once it has cooled or been repaired")
    ub.add_argument("device", metavar="POOL:NODE:INDEX",
                    help="as `fleet report` lists it (blocked: ...), e.g. h20:h20/0:1")
    _dir_arg(ub)
    ub.set_defaults(func=cmd_unblock)
    f.set_defaults(func=lambda a: (f.print_help(), 2)[1])

    s = sub.add_parser("submit", help="submit a job file to the live fleet; prints its id")
    s.add_argument("job", help="job TOML (see examples/job-digits.toml)")
    _dir_arg(s)
    s.set_defaults(func=cmd_submit)
    st = sub.add_parser("status", help="jobs of the live fleet (one job with JOB)")
    st.add_argument("job_id", nargs="?", metavar="JOB")
    _dir_arg(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    c = sub.add_parser("cancel", help="cancel a job of the live fleet")
    c.add_argument("job_id", metavar="JOB")
    _dir_arg(c)
    c.set_defaults(func=cmd_cancel)
    lg = sub.add_parser("logs", help="print the logs of a job's attempts")
    lg.add_argument("job_id", metavar="JOB")
    _dir_arg(lg)
    lg.set_defaults(func=cmd_logs)


def _emulated(fleet_path: str, mode: str) -> bool:
    if mode != "auto":
        return mode == "always"
    from mixfleet.catalog.detect import detect
    from mixfleet.fleet.model import load_fleet

    chips = {d.chip_id for d in detect().devices}
    return not all(p.chip.id in chips for p in load_fleet(fleet_path).pools)


def cmd_up(args: argparse.Namespace) -> int:
    from mixfleet.live.control import up
    from mixfleet.live.spec import load_fleet_spec

    if args.num_cpus < 1:
        raise ConfigError(f"--num-cpus is {args.num_cpus}; use an integer >= 1")
    fleet = load_fleet_spec(args.fleet, _emulated(args.fleet, args.emulate))
    state = up(fleet, args.dir, backend=args.backend, address=args.address,
               policy=args.policy, num_cpus=args.num_cpus, ray_token_file=args.ray_token_file)
    where = (f"Ray head {state['address']} (127.0.0.1 only, token auth)"
             if state.get("embedded")
             and state["backend"] == "ray" else
             f"Ray cluster {state['address']}" if state["backend"] == "ray" else
             "local processes")
    print(f"fleet {state.fleet.name} up in {args.dir}: {where}, policy {state['policy']}")
    for p in state.fleet.pools:
        print(f"  pool {p.label}: {p.capacity} devices, resource {p.resource}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from mixfleet.live.control import down

    out = down(args.dir)
    print(f"fleet down: scheduler {'stopped' if out['scheduler'] else 'was not running'}, "
          f"{out['attempts']} attempt(s) stopped, {out['ray_processes']} Ray process(es) "
          f"ended")
    return 0


def _store(args: argparse.Namespace) -> tuple[Any, Any]:
    from mixfleet.live.control import load_state
    from mixfleet.live.store import Store

    state = load_state(args.dir)
    return state, Store(args.dir)


def cmd_submit(args: argparse.Namespace) -> int:
    from mixfleet.live.spec import load_job

    state, store = _store(args)
    spec = load_job(args.job, state.fleet, one_machine=state.one_machine)
    print(store.submit(spec))
    store.close()
    return 0


def _job_or_fail(store: Any, jid: str) -> Any:
    job = store.job(jid)
    if job is None:
        known = [j.id for j in store.jobs()][-5:]
        raise ConfigError(f"no job {jid!r} in this fleet; known ids end with "
                          f"{', '.join(known) or '(none)'}; see `mixfleet status`")
    return job


def _job_doc(store: Any, job: Any, fleet: Any) -> dict[str, Any]:
    from mixfleet.live.mixkind import slot_pools

    atts = store.attempts(job.id)
    emulated = {p.id: p.emulated for p in fleet.pools}
    chip = {p.id: p.chip for p in fleet.pools}
    run = [a for a in atts if a.state == "running"]
    kinds = sorted({chip.get(p, p) for p in slot_pools(run[0])}) if run else []
    size = len(run[0].slots) - run[0].drains_seen if run else 0
    rs = [{"action": r.action, "from": r.old, "to": r.new, "reason": r.reason,
           "gain_s": None if r.gain_s == float("inf") else r.gain_s, "state": r.state,
           "t": r.t} for r in store.resizes(job.id)]
    return {"job": job.id, "name": job.name, "state": job.state, "devices": job.devices,
            "size": size, "min_devices": job.spec.lo, "max_devices": job.spec.hi,
            "resizes": rs, "kinds": kinds,
            "preempts": [{"action": r.action, "from": r.src, "to": r.pool, "reason": r.reason,
                          "state": r.state, "t": r.t} for r in store.preempts(job.id)],
            "priority": job.priority, "restarts": job.restarts, "reason": job.reason,
            "submitted": job.submitted, "started": job.started, "finished": job.finished,
            "attempts": [{"id": a.id, "pool": "+".join(dict.fromkeys(slot_pools(a))),
                          "emulated": emulated.get(a.pool),
                          "state": a.state, "devices": a.slots, "rc": a.rc,
                          "reason": a.reason, "started": a.started, "ended": a.ended}
                         for a in atts]}


def cmd_status(args: argparse.Namespace) -> int:
    state, store = _store(args)
    jobs = [_job_or_fail(store, args.job_id)] if args.job_id else store.jobs()
    docs = [_job_doc(store, j, state.fleet) for j in jobs]
    if args.json:
        print(json.dumps(docs[0] if args.job_id else docs))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"fleet {state.fleet.name} ({args.dir})")
    for c in ("job", "name", "state", "devices", "size", "pool", "attempts", "age s",
              "reason"):
        t.add_column(c)
    now = time.time()
    for d in docs:
        last = d["attempts"][-1] if d["attempts"] else None
        pool = "-" if last is None else last["pool"] + (" (emulated)" if last["emulated"]
                                                         else "")
        if len(d["kinds"]) > 1 and last is not None:  # a mixed-kind job: its kinds
            pool = f"mixed {'+'.join(d['kinds'])}" + (" (emulated)" if last["emulated"]
                                                      else "")
        rng = (f" ({d['min_devices']}-{d['max_devices']})"
               if d["min_devices"] != d["max_devices"] else "")
        size = str(d["size"]) if d["state"] == "running" else "-"
        if d["resizes"]:
            size += f", {len(d['resizes'])} resize(s)"
        t.add_row(d["job"], d["name"], d["state"], str(d["devices"]) + rng, size, pool,
                  str(len(d["attempts"])), f"{(d['finished'] or now) - d['submitted']:.0f}",
                  d["reason"][:60])
    Console().print(t)
    return 0


def cmd_unblock(args: argparse.Namespace) -> int:
    _, store = _store(args)
    have = [f"{b['pool']}:{b['node']}:{b['device']}" for b in store.blocklist()]
    if args.device not in have:
        raise ConfigError(f"device {args.device!r} is not on the fleet's block list; give "
                          f"one of {', '.join(have) or '(none: nothing is blocked)'}")
    pool, rest = args.device.split(":", 1)
    node, index = rest.rsplit(":", 1)
    store.unblock(pool, node, int(index), "unblocked by the user")
    print(f"{args.device} is back in service; the scheduler may place or grow jobs on it")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    _, store = _store(args)
    job = _job_or_fail(store, args.job_id)
    if store.request_cancel(job.id):
        print(f"{job.id}: cancel requested")
        return 0
    print(f"{job.id} already ended ({job.state})")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from mixfleet.live.scheduler import job_dir

    _, store = _store(args)
    job = _job_or_fail(store, args.job_id)
    atts = store.attempts(job.id)
    if not atts:
        print(f"{job.id} has not run yet ({job.state})")
    for n, a in enumerate(atts, 1):
        print(f"==> {job.id} attempt {n} on {a.pool} ({a.state}) <==")
        log = job_dir(Path(args.dir), job.id) / f"attempt-{n}.log"
        if log.exists():
            sys.stdout.write(log.read_text(errors="replace"))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mixfleet.live.report import fleet_report

    state, store = _store(args)
    rep = fleet_report(state.fleet, store, Path(args.dir))
    if args.json:
        print(json.dumps(rep))
        return 0
    from rich.console import Console
    from rich.table import Table

    con = Console(width=max(Console().width, 120))
    tag = " [emulated chips]" if rep["emulated"] else ""
    t = Table(title=f"fleet {rep['fleet']}: pools{tag}")
    for c in ("pool", "chip", "devices", "busy", "blocked", "jobs run", "failures",
              "thermal events"):
        t.add_column(c, justify="left" if c in ("pool", "chip") else "right")
    for p in rep["pools"]:
        t.add_row(p["pool"], p["chip"] + (" (emulated)" if p["emulated"] else ""),
                  str(p["devices"]), str(p["busy"]), str(p["blocked"]), str(p["jobs_run"]),
                  str(p["failures"]), str(p["thermal_events"]))
    con.print(t)
    j = Table(title="jobs")
    for c in ("job", "name", "state", "pools", "attempts", "ETTR", "JCT s",
              "Nvidia dev-h replaced"):
        j.add_column(c, justify="left" if c in ("job", "name", "state", "pools") else "right")
    for r in rep["jobs"]:
        j.add_row(r["job"], r["name"], r["state"], ",".join(r["pools"]) or "-",
                  str(r["attempts"]), "-" if r["ettr"] is None else f"{r['ettr']:.2f}",
                  "-" if r["jct_s"] is None else f"{r['jct_s']:.0f}",
                  f"{r['nvidia_device_hours_replaced']:.4f}")
    con.print(j)
    for b in rep["blocklist"]:
        con.print(f"blocked: {b['pool']}:{b['node']}:{b['device']} ({b['reason']}; "
                  f"`mixfleet fleet unblock` puts it back)", highlight=False)
    for r in rep["jobs"]:
        if r["resizes"]:
            con.print(f"{r['job']} resized: {', '.join(r['resizes'])}", highlight=False)
    if rep["has_nvidia_pool"]:
        origin = ", ".join(rep["nvidia_speed_origin"] or ["-"])
        con.print(f"Nvidia device-hours replaced by non-Nvidia pools: "
                  f"{rep['nvidia_device_hours_replaced']:.4f} (Nvidia speed origin: {origin}"
                  f"{'; emulated chips' if rep['emulated'] else ''})", highlight=False)
    else:
        con.print("Nvidia device-hours replaced: - (the fleet has no Nvidia pool to compare "
                  "with)")
    return 0
