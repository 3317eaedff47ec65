"""A background thread that polls a telemetry reader at a fixed rate.

Use::

    with Sampler(reader, hz=1.0) as sampler:
        for step in ...:
            ...
            for s in sampler.drain():           # the trainer writes them to metrics.jsonl
                metrics.write(s.to_record())

or give ``sink=JsonlSink(path)`` to have the thread append records itself. The thread only
sleeps on an event between reads, so its cost to training is one ``read()`` per period.
A reader that raises is counted in ``errors`` (last message in ``last_error``), never fatal.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from mixfleet import safefs
from mixfleet.errors import ConfigError
from mixfleet.telemetry.base import Sample, TelemetryReader

__all__ = ["Sampler", "JsonlSink"]


class JsonlSink:
    """Appends samples as ``{"kind": "telemetry", ...}`` lines to a JSONL file, each with
    the fields of ``extra`` (e.g. the ``rank`` whose emulated chip was read)."""

    def __init__(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.extra = dict(extra or {})
        self._lock = threading.Lock()

    def __call__(self, samples: list[Sample]) -> None:
        if not samples:
            return
        text = "".join(json.dumps({**s.to_record(), **self.extra}) + "\n" for s in samples)
        with self._lock, os.fdopen(safefs.open_append(self.path), "a") as f:  # no link
            f.write(text)


class Sampler:
    """Polls ``reader`` every ``1 / hz`` seconds on a daemon thread."""

    def __init__(self, reader: TelemetryReader, hz: float = 1.0,
                 sink: Callable[[list[Sample]], None] | None = None,
                 maxlen: int = 100_000) -> None:
        if not 0 < hz <= 100:
            raise ConfigError(f"sampling rate {hz!r} Hz is out of range; use 0 < hz <= 100, "
                              f"e.g. hz = 1.0")
        self.reader, self.hz, self.sink = reader, hz, sink
        self._buf: collections.deque[Sample] = collections.deque(maxlen=maxlen)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.reads = 0
        self.last_error: str | None = None

    def sample_once(self) -> list[Sample]:
        """Read once now (also what the thread does each period)."""
        try:
            samples = self.reader.read()
        except Exception as e:  # a tool vanished or printed garbage: count, keep going
            self.errors += 1
            self.last_error = f"{type(e).__name__}: {e}"
            return []
        self.reads += 1
        self._buf.extend(samples)
        if self.sink is not None:
            self.sink(samples)
        return samples

    def _loop(self) -> None:
        period = 1.0 / self.hz
        nxt = time.monotonic()
        while not self._stop.is_set():
            self.sample_once()
            nxt += period
            delay = nxt - time.monotonic()
            if delay < 0:  # fell behind: do not burst to catch up
                nxt, delay = time.monotonic(), 0.0
            self._stop.wait(delay)

    def start(self) -> Sampler:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="mixfleet-telemetry",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def drain(self) -> list[Sample]:
        """Samples collected since the last drain, oldest first."""
        out = []
        while self._buf:
            out.append(self._buf.popleft())
        return out

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
