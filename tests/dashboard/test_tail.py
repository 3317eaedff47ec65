"""Incremental reading of JSON-lines files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mixfleet.dashboard.tail import JsonlTail


def _lines(recs: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in recs)


def test_reads_only_the_bytes_appended_since_the_last_read(tmp_path: Path) -> None:
    """A second read parses exactly the appended records and reads only the new bytes."""
    p = tmp_path / "m.jsonl"
    first = _lines([{"step": i} for i in range(3)])
    p.write_bytes(first)
    tail = JsonlTail(p)
    c = tail.read()
    assert [r["step"] for r in c.records] == [0, 1, 2]
    assert c.bytes_read == len(first) == tail.offset
    more = _lines([{"step": 3}, {"step": 4}])
    with p.open("ab") as f:
        f.write(more)
    c = tail.read()
    assert [r["step"] for r in c.records] == [3, 4]
    assert c.bytes_read == len(more)
    assert tail.read().records == []


def test_a_line_being_written_is_held_until_its_newline(tmp_path: Path) -> None:
    """A line without its newline yields nothing until the writer completes it."""
    p = tmp_path / "m.jsonl"
    p.write_bytes(b'{"step": 1}\n{"step": ')
    tail = JsonlTail(p)
    assert [r["step"] for r in tail.read().records] == [1]
    assert tail.pending_bytes == len(b'{"step": ')
    with p.open("ab") as f:
        f.write(b"2}\n")
    assert [r["step"] for r in tail.read().records] == [2]
    assert tail.pending_bytes == 0 and tail.corrupt == 0


def test_corrupt_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    """A complete line that is not a JSON object is skipped and counted with its number."""
    p = tmp_path / "m.jsonl"
    p.write_bytes(b'{"step": 1}\n{"step": \n[1, 2]\n{"step": 4}\n')
    tail = JsonlTail(p)
    assert [r["step"] for r in tail.read().records] == [1, 4]
    assert tail.corrupt == 2 and tail.first_corrupt_line == 2


def test_a_shrunk_or_replaced_file_is_read_again_from_the_start(tmp_path: Path) -> None:
    """After the file is replaced by a shorter one, the reader says reset and starts over."""
    p = tmp_path / "m.jsonl"
    p.write_bytes(_lines([{"step": i} for i in range(10)]))
    tail = JsonlTail(p)
    assert len(tail.read().records) == 10
    tmp = tmp_path / "new"
    tmp.write_bytes(_lines([{"step": 100}]))
    os.replace(tmp, p)
    c = tail.read()
    assert c.reset and [r["step"] for r in c.records] == [100]


def test_a_budget_bounds_the_bytes_of_one_read(tmp_path: Path) -> None:
    """With a budget, each read takes at most that many bytes and, together, all records."""
    p = tmp_path / "m.jsonl"
    p.write_bytes(_lines([{"step": i, "pad": "x" * 50} for i in range(200)]))
    tail = JsonlTail(p)
    got: list[int] = []
    reads = 0
    while not tail.caught_up or reads == 0:
        c = tail.read(max_bytes=1000)
        assert c.bytes_read <= 1000
        got += [r["step"] for r in c.records]
        reads += 1
    assert got == list(range(200)) and reads > 10
