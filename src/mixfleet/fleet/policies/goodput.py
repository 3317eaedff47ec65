"""``goodput`` (mixfleet's): shortest estimated remaining time first, each job where it is
expected to finish first, counting each chip's speed and its failures; running jobs are
stopped for much shorter ones and moved when a faster pool frees up.

Effective throughput of a job on a pool = devices x relative speed x expected availability
under the pool's failure rate at the Young/Daly checkpoint interval x the share kept under
its throttle episodes (:meth:`Snapshot.goodput_factor`), from what the fleet knows: the
throughput table and reliability estimated from the failures seen so far
(:mod:`mixfleet.sim.knowledge`). Waiting jobs are taken highest priority first, then
shortest estimated time on their best pool first (only the ``window`` oldest per
decision). Each starts on the pool with room where its estimated remaining work over that
throughput ends first.

Stops (``preempt_gain``, default 1; inf: never), as SRTF with the cost of a move counted:
of the ``preempt_scan`` shortest waiting jobs, one that could not start, or started on a
slower pool than it could have, takes the pool where it finishes first by stopping the
running jobs there whose estimated time left exceeds its own run by more than
``preempt_gain`` migration stalls (longest first). A stopped job moves to the fastest
other pool with room, else waits (it saved its state; it pays the migration stall when it
starts again).

Reservations (``reservations`` >= 1; default 0) are EASY backfilling's: a job that would
finish sooner by waiting for a busy, faster pool (estimated from when the running jobs
there end) holds devices there from that *shadow time*, for at most ``reservations`` jobs
per decision; a later job may still use the held devices when its estimated finish comes
before the shadow time (it does not delay the reservation), and a job that finds no
reservation left starts now on the best pool with room. With reservations, waiting jobs
are taken in arrival order (within a priority), as EASY's queue.

Moves (``moves = True``: the simulator also asks at completions): after the waiting jobs, a
running job moves to a faster pool with room left (not held for a reservation) when its
estimated remaining time there is shorter by more than ``move_gain`` x the migration stall
(``Snapshot.migration_s``).

Remaining work and the end of running jobs are the simulator's *estimates*
(:mod:`mixfleet.fleet.estimates`; ``declared`` for jobs that declare their steps, as
Gavel's do), never the trace's true durations (except under ``--estimates oracle``). The
live fleet carries out its starts, stops and moves alike (:mod:`mixfleet.live.preempt`).
"""

from __future__ import annotations

import bisect
import itertools
import math

from mixfleet.errors import ConfigError
from mixfleet.fleet.policies.base import STOP, Allocation, JobView, Snapshot, register

__all__ = ["GoodputPolicy"]


@register("goodput")
class GoodputPolicy:
    """Shortest estimated time first, each job where it finishes first under speed,
    failures and throttling; stops much longer jobs for it, moves jobs to faster pools."""

    name = "goodput"
    round_s: float | None = None
    preemptive = False
    needs_remaining = False
    moves = True

    def __init__(self, window: float = 128, reservations: float = 0, move_gain: float = 2.0,
                 preempt_gain: float = 1.0, preempt_scan: float = 8):
        if not reservations >= 0 or not window >= 1 or not preempt_gain >= 0 \
                or not preempt_scan >= 1:
            raise ConfigError(f"goodput window must be >= 1, reservations >= 0, preempt_gain "
                              f">= 0 and preempt_scan >= 1 (got {window}, {reservations}, "
                              f"{preempt_gain}, {preempt_scan}); e.g. window=128, "
                              f"reservations=0, preempt_gain=1, preempt_scan=8")
        self.preempt_gain = float(preempt_gain)
        """A waiting job stops a running one whose estimated time left exceeds its own
        estimated run by more than this many migration stalls (inf: never). Default 1: the
        stalls the stopped job pays; chosen on Philly seed 1 (5.486 h vs 5.509 h at 2) and
        Gavel-style seeds 10-14 (no difference), not on the reported seeds."""
        self.preempt_scan = int(preempt_scan)
        """Waiting jobs per decision, shortest first, that may stop running ones."""
        self.move_gain = float(move_gain)
        """A running job moves to a pool with room where its estimated remaining time is
        shorter by more than this many migration stalls (0 < ... ; inf: never)."""
        self.reservations = int(reservations)
        """Waiting jobs per decision that may hold devices of a busy, faster pool (EASY
        backfilling holds one: the head of the queue). Default 0: a job starts on the pool
        where it finishes first among those with room, and moves later (measured better on
        the Philly trace and on Gavel-style jobs with history estimates; docs/fleet.md)."""
        self.window = int(window)
        """Waiting jobs considered per decision, oldest first (bounds the cost of a call,
        as backfill schedulers bound their queue scan)."""
        self._owner: tuple[object, object, bool] | None = None
        self._memo: dict[tuple[str, int], list[float]] = {}
        self._spare: tuple[object, list[int]] | None = None
        """(pools, room per pool) the last look at moves left."""

    def rate(self, snap: Snapshot, workload: str, devices: int, pool: int) -> float:
        """Expected kept work per second of a job on ``pool``."""
        factor = max(snap.goodput_factor(pool, devices), 1e-6)  # 0 would strand the job
        return devices * (snap.speed[workload][pool] or 0.0) * factor

    def _rates(self, snap: Snapshot, workload: str, devices: int) -> list[float]:
        """Per pool, :meth:`rate` of a (workload, devices) job; memoized across calls for
        as long as the snapshots share their pools, speeds and failure setting (a
        simulation's), which are all the rate depends on."""
        owner = self._owner
        if owner is None or owner[0] is not snap.speed or owner[1] is not snap.pools \
                or owner[2] != snap.failures:
            self._owner = (snap.speed, snap.pools, snap.failures)
            self._memo = {}
        key = (workload, devices)
        rates = self._memo.get(key)
        if rates is None:
            rates = self._memo[key] = [self.rate(snap, workload, devices, p)
                                       for p in range(len(snap.pools))]
        return rates

    def allocate(self, snap: Snapshot) -> Allocation:
        npools = len(snap.pools)
        free = list(snap.free)
        alloc: Allocation = {}
        now = snap.time
        inf = math.inf
        bisect_left = bisect.bisect_left
        # per pool, lazily: (estimated end times, devices freed by then) of its running jobs
        release: list[tuple[list[float], list[int]] | None] = [None] * npools
        reserved = [0] * npools
        rates_of = self._rates
        waiting = []
        for j in itertools.islice(snap.waiting, self.window):
            rates = rates_of(snap, j.workload, j.devices)
            b = max((rates[p] for p in j.options), default=0.0)
            if b > 0:
                rem = j.remaining
                waiting.append((-j.priority, rem / b, j.arrival_s, rem, rates, j))
        if not waiting:
            self._moves(snap, free, reserved, alloc)
            return alloc
        if self.reservations:  # EASY backfilling holds its reservations in arrival order
            waiting.sort(key=lambda w: (w[0], w[2]))
        else:  # priority, then shortest estimated time first
            waiting.sort(key=lambda w: w[:3])
        # smallest job at or behind each position: once no pool has room for it, no later
        # job can start now (not even by backfilling) and the rest of the scan is moot
        least = [0] * len(waiting)
        m = 1 << 62
        for i in range(len(waiting) - 1, -1, -1):
            m = min(m, waiting[i][5].devices)
            least[i] = m
        shadow = [inf] * npools  # earliest time a reservation on the pool needs its devices
        nres = 0
        room = max(free)
        waits = self.reservations > 0
        for i, (_, _, _, rem, rates, j) in enumerate(waiting):
            if room < least[i] and nres >= self.reservations:
                break  # nothing can start now, and no reservation is left to record
            n = j.devices
            best_t, best_p, best_start = inf, -1, inf
            now_t, now_p = inf, -1  # the best pool it can start on now
            for p in j.options:
                r = rates[p]
                if r <= 0:
                    continue
                dur = rem / r
                f = free[p]
                if f >= n and (f - n >= reserved[p] or now + dur <= shadow[p]):
                    t, start = now + dur, now  # fits, or backfills ahead of the reservation
                    if t < now_t:
                        now_t, now_p = t, p
                elif waits and nres < self.reservations:
                    need = n + reserved[p] - f
                    rel = release[p]
                    if rel is None:
                        ends = sorted((x.eta, x.devices) for x in snap.running[p])
                        acc, cum = 0, []
                        for _, d in ends:
                            acc += d
                            cum.append(acc)
                        rel = release[p] = ([e for e, _ in ends], cum)
                    times, cum = rel
                    k = bisect_left(cum, need)
                    if k >= len(times):
                        continue
                    start = max(times[k], now)
                    t = start + dur
                else:
                    continue
                if t < best_t:
                    best_t, best_p, best_start = t, p, start
            if best_p < 0:
                continue
            if best_p == now_p:
                p = now_p
            elif nres < self.reservations:
                reserved[best_p] += n
                shadow[best_p] = min(shadow[best_p], best_start)
                nres += 1
                continue
            elif now_p >= 0:
                p = now_p  # no reservation left to hold: do not leave its devices idle
            else:
                continue
            alloc[j.id] = p
            free[p] -= n
            room = max(free)
        if math.isfinite(self.preempt_gain):
            self._preempt(snap, waiting, free, reserved, alloc)
        self._moves(snap, free, reserved, alloc)
        return alloc

    def _preempt(self, snap: Snapshot, waiting: list, free: list[int], reserved: list[int],
                 alloc: Allocation) -> None:
        """Shortest remaining time first across the running jobs: a waiting job (of the
        ``preempt_scan`` shortest that could not start) stops running jobs whose estimated
        time left exceeds its own estimated run there by more than ``preempt_gain``
        migration stalls, longest first, on the pool where it then finishes first. A
        stopped job moves to a pool with room when one fits it, else it waits."""
        now = snap.time
        cost = self.preempt_gain * snap.migration_s
        victims: dict[int, list] = {}
        tried = 0
        for _, _, _, rem, rates, j in waiting:
            tried += 1
            if tried > self.preempt_scan:
                break
            n = j.devices
            best: tuple[float, int, list] | None = None
            placed = alloc.get(j.id)
            if placed is not None:  # started now: may it take a faster pool instead?
                best = (rem / rates[placed] - cost, placed, [])
            for q in j.options:
                r = rates[q]
                if r <= 0:
                    continue
                dur = rem / r
                if best is not None and dur >= best[0]:
                    continue
                vs = victims.get(q)
                if vs is None:
                    vs = victims[q] = sorted(((x.eta - now, x.devices, x)
                                              for x in snap.running[q]),
                                             key=lambda v: -v[0])
                need = n - (free[q] - reserved[q])
                take, got = [], 0
                for left, d, x in vs:
                    if left <= dur + cost:
                        break
                    if x.id in alloc:
                        continue
                    take.append(x)
                    got += d
                    if got >= need:
                        break
                if got >= need:
                    best = (dur, q, take)
            if best is None or best[1] == placed:
                continue
            _, q, take = best
            if placed is not None:
                free[placed] += n
            for x in take:
                free[q] += x.devices
                alloc[x.id] = self._refuge(snap, x, free, reserved)
            alloc[j.id] = q
            free[q] -= n

    def _refuge(self, snap: Snapshot, x: JobView, free: list[int], reserved: list[int]) -> int:
        """Where a stopped job goes: the fastest other pool with room, else STOP."""
        rates = self._rates(snap, x.workload, x.devices)
        cands = [q for q in x.options
                 if q != x.pool and free[q] - reserved[q] >= x.devices and rates[q] > 0]
        if not cands:
            return STOP
        q = max(cands, key=lambda p: (rates[p], -p))
        free[q] -= x.devices
        return q

    def _moves(self, snap: Snapshot, free: list[int], reserved: list[int],
               alloc: Allocation) -> None:
        """Move running jobs to faster pools with room left after the waiting jobs and the
        reservations, when the estimated time saved exceeds ``move_gain`` migration stalls.
        At most ``window`` running jobs are examined, and only when some pool has more room
        than the last look left it (a job's time left only shrinks, so a move that did not
        pay then does not pay now without new room)."""
        spare = [f - r for f, r in zip(free, reserved, strict=True)]
        last = self._spare
        self._spare = (snap.pools, spare)
        if max(spare) <= 0 or not math.isfinite(self.move_gain):
            return
        if last is not None and last[0] is snap.pools and \
                all(a <= b for a, b in zip(spare, last[1], strict=True)):
            return
        cost = self.move_gain * snap.migration_s
        seen = 0
        most = max(spare)
        best_of: dict[tuple[int, str, int, tuple[int, ...]], tuple[int, float]] = {}
        # slowest pools first: their jobs have the most to gain
        mean = [sum(sp[p] or 0.0 for sp in snap.speed.values()) for p in range(len(free))]
        for p in sorted(range(len(free)), key=lambda q: (mean[q], q)):
            for x in snap.running[p]:
                seen += 1
                if seen > self.window:
                    return
                n = x.devices
                if n > most:
                    continue
                key = (p, x.workload, n, x.options)
                hit = best_of.get(key)
                if hit is None:
                    rates = self._rates(snap, x.workload, n)
                    cur = rates[p]
                    best_q, best_r = -1, cur
                    for q in x.options:
                        if spare[q] >= n and rates[q] > best_r:
                            best_q, best_r = q, rates[q]
                    hit = best_of[key] = (best_q, 1.0 - cur / best_r if best_q >= 0 else 0.0)
                best_q, frac = hit
                if best_q < 0:
                    continue
                left = x.eta - snap.time  # estimated seconds left where it runs
                if left * frac > cost:
                    alloc[x.id] = best_q
                    spare[best_q] -= n
                    spare[p] += n
                    best_of.clear()
                    most = max(spare)
                    if most <= 0:
                        return
