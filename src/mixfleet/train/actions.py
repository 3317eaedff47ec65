"""What a rank does about its health, after each step (see :mod:`mixfleet.train.health`
for the detectors): checkpoint requests, drains, stragglers, snapshot pacing, thermal
cool/shed/drain, and the NaN rollback. Every decision that changes the job is taken from
the step's all-reduced health slots, so every rank takes it at the same step.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch.distributed as dist

from mixfleet.train.checkpoint import committed_steps
from mixfleet.train.rng import set_rng_state
from mixfleet.train.rundir import DrainRequested, add_to_blocklist, write_skip_list

if TYPE_CHECKING:
    from mixfleet.train.trainer import Trainer

__all__ = ["after_step", "THERMAL_QUIET_STEPS"]

THERMAL_QUIET_STEPS = 20  # steps after a thermal action before another one (unless critical)


def after_step(tr: Trainer) -> None:
    """Act on this step's shared health data (same decision on every rank), then on
    this rank's own temperature."""
    if tr.watchdog is not None:
        tr.watchdog.beat(tr.step)
    if tr._reduced:
        h = tr._host_slots()
        if h[tr.i_ckpt - tr.n_grad] > 0 and tr.step % tr.cfg.checkpoint.interval:
            tr._checkpoint()  # requested by a rank (heat): checkpoint at once
        o = tr.n_grad
        drains = [r for r in range(tr.world) if h[tr.i_drain + r - o] > 0]
        times = [float(x) for x in h[tr.i_time - o: tr.i_time - o + tr.world]]
        # Mixed fleet: shares follow speeds, so compare step times, not per sample.
        slow = tr.stragglers.add(times, tr.shares if tr.hetero is None
                                   else [1] * tr.world)
        if slow is not None:
            if tr.rank == 0:
                tr.run.emit("straggler", rank=slow, step=tr.step,
                              action=tr.cfg.health.straggler_action,
                              compute_s=[round(x, 6) for x in times])
            if tr.cfg.health.straggler_action == "exclude":
                drains.append(slow)
        if drains:
            _drain(tr, drains[0])
        for r in range(tr.world):
            if h[tr.i_shed + r - o] > 0:
                _shed(tr, r)
        if h[tr.i_snap - o] > 0 and tr.snap_every < 64:
            tr.snap_every *= 2  # every rank at once: snapshots stay aligned
            if tr.rank == 0:
                tr.run.emit("snapshot_interval", interval=tr.snap_every,
                              step=tr.step, reason="a snapshot cost over 5% of a step")
    if tr.guard.should_roll_back:
        _rollback(tr)
    if tr.thermal is not None:
        _thermal(tr)

def _thermal(tr: Trainer) -> None:
    g, h = tr.thermal, tr.cfg.health
    assert g is not None
    g.after_step()
    hot = tr.faults.due("overheat", tr.step)
    if hot is not None:
        tr.run.emit("fault_injected", kind="overheat", rank=tr.rank, step=tr.step)
        g.inject(hot.args["celsius"])
    level = g.level()
    if level == "ok" or tr._want_drain:
        return
    if level == "warn" and tr.step < tr._thermal_quiet_until:
        return  # acted recently: give the action time to work
    tr._thermal_quiet_until = tr.step + THERMAL_QUIET_STEPS
    temp = round(g.temperature(), 2)
    tr._want_ckpt = True
    if level == "critical" or h.thermal_action == "drain":
        tr._want_drain = True  # rides the next all-reduce: every rank drains then
        tr.run.emit("thermal_" + ("critical" if level == "critical" else "warning"),
                      rank=tr.rank, step=tr.step, temp_c=temp, warn_c=g.warn_c,
                      critical_c=g.critical_c, action="drain")
        return
    if h.thermal_action == "shed" and tr.hetero is not None and tr.world > 1:
        tr._want_shed = True  # every rank moves half this rank's share at the next step
        tr.run.emit("thermal_warning", rank=tr.rank, step=tr.step, temp_c=temp,
                      warn_c=g.warn_c, action="shed")
        return
    note = {} if h.thermal_action == "cool" else {"note": "shares are equal here (no "
                                                           "[shares]): paused instead"}
    tr.run.emit("thermal_warning", rank=tr.rank, step=tr.step, temp_c=temp,
                  warn_c=g.warn_c, resume_c=g.resume_c, action=h.thermal_action, **note)
    t0, wait = time.monotonic(), 0.05
    if tr.watchdog is not None:
        tr.watchdog.pause()
    while g.temperature() >= g.resume_c:
        time.sleep(wait)
        if tr.emu is not None:
            tr.emu.idle(20 * wait)
        g.rest(wait)
        wait = min(2 * wait, 1.0)
    if tr.watchdog is not None:
        tr.watchdog.resume()
    tr.run.emit("thermal_resumed", rank=tr.rank, step=tr.step,
                  temp_c=round(g.temperature(), 2), paused_s=round(time.monotonic() - t0, 3))

def _shed(tr: Trainer, rank: int) -> None:
    """Move half of ``rank``'s share to the others, in proportion to theirs (the same
    integers on every rank); the rebalance gives it back once the chip is fast again."""
    old = list(tr.shares)
    give = old[rank] // 2
    if give < 1:
        return
    others = [r for r in range(tr.world) if r != rank]
    total = sum(old[r] for r in others)
    add = {r: give * old[r] // total for r in others}
    for r in sorted(others, key=lambda q: -(give * old[q] % total))[: give - sum(add.values())]:
        add[r] += 1
    new = [old[r] - give if r == rank else old[r] + add[r] for r in range(tr.world)]
    tr.shares = new
    if tr.rank == 0:
        tr.run.emit("shares_changed", step=tr.step, old=old, new=new,
                      reason=f"thermal shed of rank {rank}")

def _drain(tr: Trainer, rank: int) -> None:
    """Checkpoint, record ``rank`` on the block list, and stop every rank (the launcher
    restarts the run without it)."""
    tr._checkpoint()
    tr.ckpt.wait()
    if tr.world > 1:
        dist.barrier(group=tr.group)
    if tr.rank == 0:
        add_to_blocklist(tr.run, rank=rank, step=tr.step)
        tr.run.emit("drain", rank=rank, step=tr.step, world_size=tr.world)
    raise DrainRequested(rank)

def _rollback(tr: Trainer) -> None:
    """After ``rollback_after`` skipped steps in a row: reload the newest committed
    checkpoint before them and skip their batches from now on."""
    bad = sorted(set(list(tr.bad_steps)[-tr.cfg.health.rollback_after:]))
    tr.skip |= set(bad)
    tr.guard.bad_in_a_row = 0
    if tr.rank == 0:
        write_skip_list(tr.run, tr.skip)
    tr.ckpt.wait()
    valid, _ = committed_steps(tr.run.checkpoints)
    target = next(((s, d) for s, d in valid if s < bad[0]), None)
    if tr.rank == 0:
        tr.run.emit("rollback", bad_steps=bad, to_step=target[0] if target else None)
    if target is None:
        return  # nothing older on disk: the bad steps were not applied, go on
    tr._init_optimizer_state()
    state = tr.state_dict()
    manifest = tr.ckpt.load(target[1], state)
    tr.load_state_dict(state)
    tr.sched.load_state_dict({**tr.sched.state_dict(), **manifest["lr_schedule"]})
    per_rank = manifest.get("per_rank") or []
    if tr.rank < len(per_rank):
        set_rng_state(per_rank[tr.rank]["rng"], tr.device)
    tr.step = target[0]
