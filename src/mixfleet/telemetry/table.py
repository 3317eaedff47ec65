"""Per-device telemetry: the newest sample of each device, keyed by its stable id, and
"the temperature of MY device" for a rank.

One sampler per node (local rank 0) polls the node's reader and feeds a :class:`DeviceTable`
sink, which keeps the newest sample per device and (with ``path``) publishes them as a small
JSON file, ``RUN_DIR/telemetry/devices-<host>.json``, replaced atomically. Every rank reads
its own device's row through :func:`device_temperature`: at most one ``stat`` per 0.1 s and
a re-read only when the file changed (microseconds), instead of one more SMI process per
rank.

A rank knows its device by torch index; :func:`rank_device_id` turns that into the stable
id through detection under the vendor's visible-devices mask.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mixfleet import safefs
from mixfleet.catalog.detect import Detection, detect
from mixfleet.telemetry.base import Sample, TelemetryReader

__all__ = ["DeviceTable", "TableFile", "table_path", "read_devices", "rank_device_id",
           "device_temperature"]


def table_path(run_root: str | Path, host: str | None = None) -> Path:
    """Where a node's sampler publishes its per-device table in a run directory."""
    return Path(run_root) / "telemetry" / f"devices-{host or socket.gethostname()}.json"


def _key(s: Sample) -> str:
    return s.device_id or s.device


def read_devices(reader: TelemetryReader) -> dict[str, Sample]:
    """One reading of every device of ``reader``, keyed by stable id (else device string)."""
    return {_key(s): s for s in reader.read()}


class DeviceTable:
    """A sampler sink: the newest sample per device; publishes them to ``path`` if given,
    then passes the samples on to ``sink``."""

    def __init__(self, path: str | Path | None = None,
                 sink: Callable[[list[Sample]], None] | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.sink = sink
        self._lock = threading.Lock()
        self.latest: dict[str, Sample] = {}

    def __call__(self, samples: list[Sample]) -> None:
        with self._lock:
            for s in samples:
                self.latest[_key(s)] = s
            rows = {k: s.to_record() for k, s in self.latest.items()}
        if self.path is not None and samples:  # (one sampler thread per reader may call)
            if not self.path.parent.is_dir():
                safefs.make_dir(self.path.parent)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}."
                                      f"{threading.get_ident()}.tmp")
            fd = safefs.open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)  # no link
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"t": time.time(), "devices": rows}))
            os.replace(tmp, self.path)
        if self.sink is not None:
            self.sink(samples)

    def get(self, device_id: str) -> Sample | None:
        with self._lock:
            return self.latest.get(device_id)

    def temperature(self, device_id: str) -> float | None:
        s = self.get(device_id)
        return None if s is None else s.temp_c


class TableFile:
    """Reads a published table; re-parses only when the file changed. A missing, partial or
    garbled file reads as empty (the guard then sees no temperature, never an exception)."""

    def __init__(self, path: str | Path, max_age_s: float = 30.0,
                 min_interval_s: float = 0.1) -> None:
        self.path = Path(path)
        self.max_age_s = max_age_s
        self.min_interval_s = min_interval_s  # calls closer than this reuse the last look
        self._key: tuple[int, int] | None = None
        self._rows: dict[str, Any] = {}
        self._t = 0.0
        self._looked = -float("inf")
        self._fresh: dict[str, Any] = {}

    def rows(self) -> dict[str, Any]:
        now = time.monotonic()
        if now - self._looked < self.min_interval_s:
            return self._fresh
        self._looked = now
        self._fresh = self._look()
        return self._fresh

    def _look(self) -> dict[str, Any]:
        try:
            st = os.stat(self.path)
        except OSError:
            return {}
        key = (st.st_mtime_ns, st.st_size)
        if key != self._key:
            try:
                doc = json.loads(self.path.read_bytes())
                self._rows = dict(doc["devices"])
                self._t = float(doc["t"])
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                self._rows, self._t = {}, 0.0
            self._key = key
        if time.time() - self._t > self.max_age_s:
            return {}  # the node's sampler stopped: a stale reading is no reading
        return self._rows

    def temperature(self, device_id: str) -> float | None:
        row = self.rows().get(device_id)
        t = None if not isinstance(row, dict) else row.get("temp_c")
        return float(t) if isinstance(t, (int, float)) else None


def rank_device_id(torch_index: int, torch_type: str = "cuda", *, vendor: str | None = None,
                   detection: Detection | None = None,
                   environ: Mapping[str, str] | None = None) -> str | None:
    """The stable id of the device this process's torch calls ``torch_type:torch_index``
    (under the vendor's visible-devices mask); None when no tool lists it."""
    det = detection if detection is not None else detect(environ=environ)
    for d in det.devices:
        if d.torch_type == torch_type and d.torch_index == torch_index and \
                (vendor is None or d.vendor == vendor):
            return d.stable_id
    return None


def device_temperature(source: DeviceTable | TableFile | TelemetryReader | str | Path,
                       torch_index: int, *, torch_type: str = "cuda",
                       vendor: str | None = None, device_id: str | None = None,
                       detection: Detection | None = None,
                       environ: Mapping[str, str] | None = None
                       ) -> Callable[[], float | None]:
    """A function returning the newest temperature of THIS rank's device (None: unknown).

    ``source``: the node's :class:`DeviceTable` (same process), a published table file (its
    path or a :class:`TableFile`), or a reader (read on each call: costly for SMI tools).
    The device is ``torch_type:torch_index`` of this process, mapped to its stable id once
    (``device_id`` skips the mapping).
    """
    did = device_id or rank_device_id(torch_index, torch_type, vendor=vendor,
                                      detection=detection, environ=environ)
    if did is None:
        return lambda: None
    if isinstance(source, (str, Path)):
        source = TableFile(source)
    if isinstance(source, (DeviceTable, TableFile)):
        src = source
        return lambda: src.temperature(did)
    reader = source

    def read() -> float | None:
        s = read_devices(reader).get(did)
        return None if s is None else s.temp_c
    return read
