"""``mixfleet fleet report``: what the live fleet did, from SQLite and the run directories.

Per pool: devices, busy, blocked, jobs run, failed attempts, thermal events. Per job: its
pools, attempts, ETTR (``summary.json``), queueing and completion times. And the Nvidia
device-hours the non-Nvidia pools replaced: for each attempt on a non-Nvidia pool, the
samples it trained (its steps in ``metrics.jsonl``) over the per-device throughput of the
fastest Nvidia pool on that workload, labeled with that figure's origin (``measured``,
``emulated``, ``estimated``) as ``mixfleet plan`` labels its speeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixfleet.live.estimate import Estimates, attempt_rate
from mixfleet.live.mixkind import slot_pools
from mixfleet.live.scheduler import run_dir
from mixfleet.live.spec import FleetSpec
from mixfleet.live.store import AttemptRow, Store
from mixfleet.runs import Event
from mixfleet.train.rundir import read_jsonl

__all__ = ["fleet_report"]

_THERMAL = (Event.THERMAL_WARNING, Event.THERMAL_CRITICAL, Event.THERMAL_RESUMED,
            Event.THERMAL_CRASH, Event.DRAIN)
"""The events a pool's "thermal events" count (heat, cooling, an emulated heat crash, a
drain)."""


def _steps_in(rd: Path, a: AttemptRow) -> int:
    steps = set()
    for rec in read_jsonl(rd / "metrics.jsonl"):
        t = rec.get("t")
        if rec.get("kind") is None and "step" in rec and t is not None and t >= a.started \
                and (a.ended is None or t <= a.ended):
            steps.add(rec["step"])
    return len(steps)


def fleet_report(fleet: FleetSpec, store: Store, fleet_dir: Path) -> dict[str, Any]:
    """The report as a JSON-able dict (the CLI prints it as tables)."""
    index = {p.id: i for i, p in enumerate(fleet.pools)}
    attempts = store.attempts()
    jobs = store.jobs()
    byjob: dict[str, list[AttemptRow]] = {}
    for a in attempts:
        byjob.setdefault(a.job_id, []).append(a)
    est = Estimates(fleet)
    for a in attempts:
        j = store.job(a.job_id)
        if j is None or a.state == "running" or a.handle.get("pools"):  # mixed: no pool's
            continue
        sps = attempt_rate(run_dir(fleet_dir, j.id), a.started, a.ended)
        if sps:
            est.observe(j.spec.workload, index[a.pool], sps / len(a.slots))
    blocked = store.blocklist()
    pools = []
    thermal = {p.id: 0 for p in fleet.pools}
    for j in jobs:
        events = list(read_jsonl(run_dir(fleet_dir, j.id) / "events.jsonl"))
        for a in byjob.get(j.id, []):
            thermal[a.pool] += sum(
                1 for e in events if e.get("event") in _THERMAL
                and e.get("t", 0) >= a.started and (a.ended is None or e["t"] <= a.ended))
    for p in fleet.pools:
        mine = [a for a in attempts if p.id in slot_pools(a)]  # a mixed one spans pools
        pools.append({"pool": p.id, "chip": p.chip, "emulated": p.emulated,
                      "nvidia": p.is_nvidia, "devices": p.capacity,
                      "busy": sum(slot_pools(a).count(p.id) for a in mine
                                  if a.state == "running"),
                      "blocked": sum(1 for b in blocked if b["pool"] == p.id),
                      "jobs_run": len({a.job_id for a in mine}),
                      "failures": sum(a.state in ("failed", "lost") for a in mine),
                      "thermal_events": thermal[p.id]})
    nv = [i for i, p in enumerate(fleet.pools) if p.is_nvidia]
    out_jobs, replaced, origins = [], 0.0, set()
    for j in jobs:
        mine = byjob.get(j.id, [])
        rd = run_dir(fleet_dir, j.id)
        summary = json.loads((rd / "summary.json").read_text()) \
            if (rd / "summary.json").exists() else {}
        rep = 0.0
        for a in mine:
            if fleet.pools[index[a.pool]].is_nvidia or not nv:
                continue
            best = max((est.per_device(j.spec.workload, i) for i in nv), key=lambda x: x[0])
            samples = _steps_in(rd, a) * j.spec.global_batch
            rep += samples / best[0] / 3600.0
            origins.add(best[1])
        replaced += rep
        out_jobs.append({
            "job": j.id, "name": j.name, "state": j.state, "devices": j.devices,
            "pools": list(dict.fromkeys(q for a in mine for q in slot_pools(a))),
            "attempts": len(mine),
            "restarts": j.restarts, "ettr": summary.get("ettr"),
            "resizes": [f"{r.action} {r.old}->{r.new}" for r in store.resizes(j.id)
                        if r.state == "done"],
            "queue_s": None if j.started is None else j.started - j.submitted,
            "jct_s": None if j.finished is None or j.state != "done"
            else j.finished - j.submitted,
            "nvidia_device_hours_replaced": rep, "reason": j.reason,
            "emulated": any(fleet.pools[index[a.pool]].emulated for a in mine)})
    return {"fleet": fleet.name, "emulated": any(p.emulated for p in fleet.pools),
            "pools": pools, "jobs": out_jobs, "blocklist": blocked,
            "nvidia_device_hours_replaced": replaced,
            "nvidia_speed_origin": sorted(origins) or None,
            "has_nvidia_pool": bool(nv)}
