"""What a run's events and config say besides its series: its ranks and devices, its life
state, the thermal thresholds its chart draws and its shares over time (read-only; the
dashboard's :class:`mixfleet.dashboard.runstore.RunStore` calls these)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from mixfleet.emulate.profile import get_profile
from mixfleet.errors import ConfigError
from mixfleet.runs import Event
from mixfleet.train.health.detectors import thermal_thresholds

__all__ = ["ACTIVE_S", "run_devices", "run_state", "run_thresholds", "share_history"]

ACTIVE_S = 60.0
"""A run whose logs changed within this many seconds (and that has not finished) is
running."""


def run_devices(events: list[dict[str, Any]], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Ranks and their devices (from worker_start events of the newest attempt, else the
    config ``cfg``), each with ``emulated``."""
    starts = [e for e in events if e.get("event") == Event.WORKER_START]
    if starts:
        last = max(int(e.get("attempt", 0)) for e in starts)
        ranks = {int(e.get("rank", 0)): str(e.get("device"))
                 for e in starts if int(e.get("attempt", 0)) == last}
    else:
        listed = cfg.get("ranks") or []
        if listed:
            ranks = {i: str(r.get("device")) for i, r in enumerate(listed)}
        else:
            launch = cfg.get("launch", {})
            ranks = {i: str(launch.get("device", "?"))
                     for i in range(int(launch.get("nproc", 1) or 1))}
    return [{"rank": r, "device": d, "emulated": d.startswith("emu:")}
            for r, d in sorted(ranks.items())]


def run_state(events: list[dict[str, Any]], root: Path, now: float) -> dict[str, Any]:
    """``running``, ``finished``, ``failed`` or ``stopped`` (unfinished and idle at ``now``:
    its logs unchanged for ``ACTIVE_S``)."""
    life = [e.get("event") for e in events
            if e.get("event") in (Event.LAUNCH, Event.FINISH, Event.LAUNCH_FAILED)]
    mtimes = []
    for name in ("metrics.jsonl", "events.jsonl"):
        try:
            mtimes.append(os.stat(root / name).st_mtime)
        except OSError:
            pass
    idle = now - max(mtimes) if mtimes else math.inf
    active = idle < ACTIVE_S
    if life and life[-1] == Event.FINISH:
        st = "finished"
    elif life and life[-1] == Event.LAUNCH_FAILED:
        st = "failed"
    elif active:
        st = "running"
    else:
        st = "stopped"
    return {"state": st, "active": active and st == "running",
            "idle_s": None if math.isinf(idle) else round(idle, 1)}


def run_thresholds(events: list[dict[str, Any]], cfg: dict[str, Any],
                   devices: list[dict[str, Any]]) -> dict[str, Any]:
    """Warning and critical temperatures: the config's, else those the trainer reported in
    its thermal events, else the trainer's defaults (for the first emulated chip's profile
    among ``devices``)."""
    h = cfg.get("health", {})
    warn, crit, src = h.get("warn_c"), h.get("critical_c"), "config"
    for e in events:
        if warn is None and isinstance(e.get("warn_c"), (int, float)):
            warn, src = e["warn_c"], "thermal event"
        if crit is None and isinstance(e.get("critical_c"), (int, float)):
            crit = e["critical_c"]
    if warn is None or crit is None:
        emu = [d["device"][4:] for d in devices if d["emulated"]]
        profile = None
        if emu:
            try:
                profile = get_profile(emu[0])
            except ConfigError:  # a chip no longer in the profiles: the defaults
                pass
        dw, dc, dsrc = thermal_thresholds(None, None, profile)
        if warn is None:
            warn, src = dw, dsrc
        if crit is None:
            crit = dc
    return {"warn_c": float(warn), "critical_c": float(crit), "source": src}


def share_history(events: list[dict[str, Any]], t0: float, x_end: float
                  ) -> list[dict[str, Any]]:
    """Shares per rank over time: [{"x": seconds since ``t0``, "shares": [...], "reason"}],
    closed by the shares in effect at ``x_end``."""
    out: list[dict[str, Any]] = []
    for e in events:
        if e.get("event") == Event.FLEET and isinstance(e.get("shares"), list) and not out:
            out.append({"x": round(e["t"] - t0, 3), "shares": e["shares"],
                        "reason": "start"})
        if e.get("event") == Event.SHARES_CHANGED and isinstance(e.get("new"), list):
            out.append({"x": round(e["t"] - t0, 3), "shares": e["new"],
                        "reason": e.get("reason", "")})
    if out:
        out.append({"x": round(max(x_end, out[-1]["x"]), 3), "shares": out[-1]["shares"],
                    "reason": "now"})
    return out
