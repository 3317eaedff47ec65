"""The run directory (docs/architecture.md, "Contracts between the parts"): its paths and
its two JSON-lines logs.

``events.jsonl`` collects faults, restarts, checkpoints and their failures from every
process (one ``O_APPEND`` write per line, so lines of different processes never mix).
``metrics.jsonl`` holds one record per step, written by rank 0 in batches: at most
``buffer_s`` late, and always before a snapshot or checkpoint commits (so the lines of
steps a crash cannot lose are on disk, and a resumed run never leaves a gap); the step
reached is kept, every step, in ``last_step`` (a memory-mapped counter that survives a
SIGKILL), from which a restart counts the steps lost. This module sits at the
bottom of the package (training writes run directories, reports and the dashboard read
them) so that neither imports the other.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mixfleet import safefs
from mixfleet.errors import UnsafePathError

__all__ = ["RunDir", "JsonLines", "StepLog", "StepMarker", "read_jsonl", "Event", "EVENT_NAMES"]


class Event:
    """The names of the events in ``events.jsonl`` (its ``"event"`` field): every emitter
    and every reader (report, dashboard, live fleet, demo) uses these constants."""

    # the launcher (train/launch.py)
    LAUNCH = "launch"
    PLAN = "plan"
    STAGES = "stages"  # a pipeline's plan (train/parallel/pipeplan.py), each attempt
    STAGES_CHANGED = "stages_changed"  # a pipeline re-split (drain: train/launch.py)
    STAGE_TIMES = "stage_times"  # a pipeline's measured stage times (parallel/stagetimes.py)
    CONFIG_CHANGED = "config_changed"
    RELAUNCH = "relaunch"
    LAUNCH_FAILED = "launch_failed"
    DEVICE_MASK = "device_mask"
    # a worker's life (train/worker.py)
    WORKER_START = "worker_start"
    TELEMETRY_UNAVAILABLE = "telemetry_unavailable"
    EMULATED_AS = "emulated_as"
    RUN_START = "run_start"
    DEVICE_FAULT = "device_fault"
    PEER_LOST = "peer_lost"
    FINISH = "finish"
    # the fleet and its shares (train/mixed/, train/trainer.py)
    FLEET = "fleet"
    SHARES_CHANGED = "shares_changed"
    DRAIN = "drain"
    # health (train/health/, train/step.py, train/trainer.py)
    HANG_DETECTED = "hang_detected"
    STEP_SKIPPED = "step_skipped"
    ROLLBACK = "rollback"
    STRAGGLER = "straggler"
    THERMAL_WARNING = "thermal_warning"
    THERMAL_CRITICAL = "thermal_critical"
    THERMAL_RESUMED = "thermal_resumed"
    FAULT_INJECTED = "fault_injected"
    # an emulated chip's own events (emulate/device.py)
    THROTTLE_START = "throttle_start"
    THROTTLE_END = "throttle_end"
    THERMAL_CRASH = "thermal_crash"
    FAILURE = "failure"
    # snapshots and checkpoints (train/checkpoint/)
    SNAPSHOT_PLAN = "snapshot_plan"
    SNAPSHOT_INTERVAL = "snapshot_interval"
    SNAPSHOT_SINGLE_BUFFER = "snapshot_single_buffer"
    SNAPSHOTS_OFF = "snapshots_off"
    SNAPSHOT_REFUSED = "snapshot_refused"
    DYING_GASP = "dying_gasp"
    CHECKPOINT_COMMITTED = "checkpoint_committed"
    CHECKPOINT_FAILED = "checkpoint_failed"
    CHECKPOINT_SKIPPED = "checkpoint_skipped"


EVENT_NAMES = frozenset(v for k, v in vars(Event).items() if k.isupper())
"""Every event name mixfleet writes."""


_TEMPLATES: dict[tuple[str, ...], str] = {}  # keys -> the %-format of their line ("": none)


def _encode(record: dict[str, Any]) -> str:
    """One JSON line; flat records of finite numbers (a step record) skip json.dumps: one
    %-format per set of keys, made once (7x faster than json.dumps)."""
    keys = tuple(record)
    tpl = _TEMPLATES.get(keys)
    if tpl is None:
        tpl = ("{" + ",".join(f'"{k}":%r' for k in keys) + "}\n"
               if all(k.isidentifier() for k in keys) else "")
        if len(_TEMPLATES) < 256:
            _TEMPLATES[keys] = tpl
    if tpl:
        values = tuple(record.values())
        for v in values:
            t = type(v)
            if not (t is float and math.isfinite(v) or t is int):
                break
        else:
            return tpl % values
    parts = []
    for k, v in record.items():
        t = type(v)
        if t is float and math.isfinite(v) or t is int:
            parts.append(f'"{k}":{v!r}')
        elif t is bool:
            parts.append(f'"{k}":{"true" if v else "false"}')
        else:
            return json.dumps(record, separators=(",", ":"), default=str) + "\n"
        if not k.isidentifier():
            return json.dumps(record, separators=(",", ":"), default=str) + "\n"
    return "{" + ",".join(parts) + "}\n"


class JsonLines:
    """An append-only JSON-lines file; each record is one ``write`` of one line.

    ``buffer_s`` > 0: records are gathered and written together (one ``write`` of whole
    lines) at most ``buffer_s`` after the oldest, at 1024 records, on :meth:`flush` and
    on :meth:`close`; a process killed in between loses the lines not yet written. The
    records must not change after ``write``."""

    def __init__(self, path: Path, *, on_record: Callable[[dict], None] | None = None,
                 buffer_s: float = 0.0) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()
        self.on_record = on_record
        self.buffer_s = buffer_s
        self._buf: list[dict[str, Any]] = []
        self._due = 0.0

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            if not self.path.parent.is_dir():
                safefs.make_dir(self.path.parent)
            self._fd = safefs.open_append(self.path)  # never through a link
        os.write(self._fd, data)

    def write(self, record: dict[str, Any]) -> None:
        if self.buffer_s <= 0:
            line = _encode(record).encode()
            with self._lock:
                self._write(line)
        else:  # encoded at the flush, in one warm loop (cheaper than one by one)
            self._buf.append(record)  # no lock: a flush swaps in a new list, then writes
            buf = self._buf
            if len(buf) == 1:
                self._due = time.monotonic() + self.buffer_s
            elif len(buf) >= 1024 or time.monotonic() >= self._due:
                self.flush()
        if self.on_record is not None:
            self.on_record(record)

    def flush(self, *, block: bool = True) -> None:
        """Write the gathered lines now (``block=False``: unless another flush is under
        way, as from a signal handler that interrupted it)."""
        if not self._lock.acquire(blocking=block):
            return
        try:
            if self._buf:
                recs, self._buf = self._buf, []
                self._write("".join(map(_encode, recs)).encode())
        finally:
            self._lock.release()

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class StepMarker:
    """The step a run has reached, in an 8-byte memory-mapped file (one store per step,
    no system call; what was stored survives the process's SIGKILL)."""

    def __init__(self, path: Path) -> None:
        import mmap

        if not path.parent.is_dir():
            safefs.make_dir(path.parent)
        fd = safefs.open_fd(path, os.O_RDWR | os.O_CREAT)  # never through a link
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)
            self._map = mmap.mmap(fd, 8)
        finally:
            os.close(fd)
        # the int64 as a numpy view: ``marker.value[0] = step`` is one store, the cheapest
        # write from Python (a struct.pack_into call costs twice as much in the step loop)
        self.value = np.frombuffer(self._map, dtype="<i8")

    def close(self) -> None:
        del self.value  # the view holds the mapping open
        self._map.close()

    @staticmethod
    def read(path: Path) -> int | None:
        """The step stored at ``path`` (None: no marker, or not a valid one)."""
        try:
            data = safefs.read_bytes(path, max_bytes=8)
        except (OSError, UnsafePathError):  # absent, a link, too long: no marker
            return None
        return int(struct.unpack_from("<q", data)[0]) if len(data) == 8 else None


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (a process killed mid-write) is skipped.
    A link in its place raises UnsafePathError (never followed)."""
    try:
        fd = safefs.open_fd(path)
    except FileNotFoundError:
        return
    with os.fdopen(fd) as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


class StepLog:
    """Rank 0's step records in ``metrics.jsonl`` (written in batches, at most
    ``buffer_s`` late) and the step reached in the run's step marker (every step)."""

    def __init__(self, run: RunDir, *, buffer_s: float = 0.25) -> None:
        self.lines = JsonLines(run.metrics_path, buffer_s=buffer_s)
        self.marker = StepMarker(run.last_step)

    def write(self, record: dict[str, Any]) -> None:
        self.lines.write(record)
        self.marker.value[0] = record["step"]

    def flush(self, *, block: bool = True) -> None:
        self.lines.flush(block=block)

    def close(self) -> None:
        self.lines.close()
        self.marker.close()


class RunDir:
    """Paths of one run directory and its event log."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.toml"
        self.metrics_path = self.root / "metrics.jsonl"
        self.events_path = self.root / "events.jsonl"
        self.torchrun_log = self.root / "torchrun.log"  # torchrun's own output (agent.py)
        self.checkpoints = self.root / "checkpoints"
        self.final = self.root / "final"
        self.summary = self.root / "summary.json"
        self.pids = self.root / "pids"
        self.last_step = self.root / "last_step"
        self.events = JsonLines(self.events_path)

    #: the files and directories mixfleet keeps in a run directory (checked before use)
    FILES = ("config.toml", "metrics.jsonl", "events.jsonl", "summary.json", "last_step",
             "blocklist.json", "skipped_batches.json", ".snapshots.lock", "torchrun.log")
    DIRS = ("checkpoints", "final", "pids", "gasp", "stacks", ".faults", "telemetry")

    def check(self) -> None:
        """Refuse a link or a foreign entry where a file or directory of the run should
        be (UnsafePathError naming it): nothing is followed or written."""
        safefs.check_entries(self.root, self.FILES, self.DIRS)

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        rec = {"t": round(time.time(), 6), "event": event, **fields}
        self.events.write(rec)
        return rec

    def write(self, path: Path, data: bytes | str) -> None:
        """Replace file ``path`` of this run with ``data`` (atomically, as private as the
        run directory, never through a link: :mod:`mixfleet.safefs`)."""
        safefs.write_atomic(path, data.encode() if isinstance(data, str) else data)

    @contextlib.contextmanager
    def create(self, path: Path) -> Iterator[BinaryIO]:
        """A new file ``path`` of this run, written through the yielded file and renamed
        into place at the end (private, exclusive, never through a link)."""
        tmp = path.with_name(path.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        with os.fdopen(safefs.open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as f:
            yield f
        os.replace(tmp, path)

    def read_text(self, path: Path) -> str:
        """The text of file ``path`` of this run (a link in its place is refused)."""
        return safefs.read_text(path)

    def mkdir(self, path: Path) -> Path:
        """Directory ``path`` of this run, created as private as the run directory (an
        existing link or another user's directory there is refused)."""
        return safefs.make_dir(path)

    def read_events(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.events_path))

    def has_checkpoints(self) -> bool:
        return self.checkpoints.is_dir() and any(self.checkpoints.glob("step_*"))
