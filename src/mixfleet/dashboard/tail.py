"""Incremental reading of a JSON-lines file: each call reads only the bytes appended since
the last one (the byte offset is remembered), so a live page never re-reads a whole file.

A line without its newline yet (a writer mid-``write``) is held back until it completes.
A complete line that is not JSON is counted as corrupt and skipped. A file that shrank or
was replaced (another inode) starts over; the caller is told so it can drop what it built.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["JsonlTail", "TailChunk"]

_DECODER = json.JSONDecoder()


class TailChunk:
    """What one :meth:`JsonlTail.read` returned."""

    __slots__ = ("records", "reset", "bytes_read")

    def __init__(self, records: list[dict[str, Any]], reset: bool, bytes_read: int) -> None:
        self.records = records
        self.reset = reset
        self.bytes_read = bytes_read


class JsonlTail:
    """Reads the records appended to ``path`` since the previous call."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = 0
        """Bytes consumed so far (complete lines and the held-back partial line)."""
        self.size = 0
        """File size at the last read."""
        self.corrupt = 0
        """Complete lines that were not a JSON object."""
        self.first_corrupt_line: int | None = None
        self.lines = 0
        self._partial = b""
        self._ident: tuple[int, int] | None = None
        self._seen = False

    @property
    def pending_bytes(self) -> int:
        """Bytes of a last line whose newline has not been written (yet)."""
        return len(self._partial)

    @property
    def caught_up(self) -> bool:
        """Every byte present at the last read has been consumed (a file never looked
        at is not caught up; a missing one is)."""
        return self._seen and self.offset >= self.size

    def _restart(self) -> None:
        self.offset = self.size = self.corrupt = self.lines = 0
        self.first_corrupt_line = None
        self._partial = b""

    def read(self, max_bytes: int | None = None) -> TailChunk:
        """Parse at most ``max_bytes`` new bytes (all of them when None)."""
        self._seen = True
        try:
            st = os.stat(self.path)
        except OSError:
            reset = self._ident is not None
            if reset:
                self._restart()
                self._ident = None
            return TailChunk([], reset, 0)
        ident = (st.st_dev, st.st_ino)
        reset = self._ident is not None and (ident != self._ident or st.st_size < self.offset)
        if reset:
            self._restart()
        self._ident = ident
        self.size = st.st_size
        want = st.st_size - self.offset
        if max_bytes is not None:
            want = min(want, max_bytes)
        if want <= 0:
            return TailChunk([], reset, 0)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(want)
        self.offset += len(data)
        parts = (self._partial + data).split(b"\n")
        self._partial = parts.pop()
        records: list[dict[str, Any]] = []
        decode = _DECODER.raw_decode
        for raw in parts:
            self.lines += 1
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                rec, end = decode(line)
                if end != len(line):
                    rec = None
            except ValueError:
                rec = None
            if type(rec) is dict:
                records.append(rec)
            else:
                self.corrupt += 1
                if self.first_corrupt_line is None:
                    self.first_corrupt_line = self.lines
        return TailChunk(records, reset, len(data))
