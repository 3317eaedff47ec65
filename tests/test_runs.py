"""The run directory's logs: step records written in batches, and the step marker that a
SIGKILL cannot take back (from which a restart counts the steps lost)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from mixfleet.runs import JsonLines, RunDir, StepLog, StepMarker, read_jsonl
from tests.conftest import REPO


def _lines(path: Path) -> list[dict]:
    return list(read_jsonl(path))


def test_buffered_records_are_written_whole_in_order_when_due_or_flushed(
        tmp_path: Path) -> None:
    """With buffer_s, records stay in memory until a flush, or until the oldest is
    buffer_s old; then every gathered record is written, whole and in order, and each
    reaches on_record at once."""
    seen: list[int] = []
    path = tmp_path / "m.jsonl"
    log = JsonLines(path, buffer_s=0.2, on_record=lambda r: seen.append(r["step"]))
    for s in range(1, 4):
        log.write({"step": s, "loss": 1.0 / s})
    assert seen == [1, 2, 3] and not path.exists()
    log.flush()
    assert [r["step"] for r in _lines(path)] == [1, 2, 3]
    log.write({"step": 4, "loss": 0.25})
    time.sleep(0.25)
    log.write({"step": 5, "loss": 0.2})  # the oldest is due: both go out
    assert [r["step"] for r in _lines(path)] == [1, 2, 3, 4, 5]
    log.write({"step": 6, "loss": float("nan")})  # not a flat number: json.dumps path
    log.close()
    assert [r["step"] for r in _lines(path)] == [1, 2, 3, 4, 5, 6]
    assert path.read_text().count("\n") == 6


def test_unbuffered_records_are_on_disk_at_once(tmp_path: Path) -> None:
    """buffer_s 0 (the event log) writes each record as it comes."""
    log = JsonLines(tmp_path / "e.jsonl")
    log.write({"event": "x", "n": 1})
    assert _lines(tmp_path / "e.jsonl") == [{"event": "x", "n": 1}]
    log.close()


def test_step_marker_survives_sigkill_while_records_are_still_buffered(
        tmp_path: Path) -> None:
    """A process that logged steps 1..57 and was SIGKILLed before its buffer went out
    leaves the marker at 57 (what a restart counts steps lost from) and no torn line."""
    code = (
        "import os, signal, sys\n"
        "from mixfleet.runs import RunDir, StepLog\n"
        "log = StepLog(RunDir(sys.argv[1]), buffer_s=60)\n"
        "for s in range(1, 58):\n"
        "    log.write({'step': s, 'loss': 0.5})\n"
        "    if s == 40:\n"
        "        log.flush()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, timeout=60)
    assert p.returncode == -9
    run = RunDir(tmp_path)
    assert StepMarker.read(run.last_step) == 57
    assert [r["step"] for r in _lines(run.metrics_path)] == list(range(1, 41))


def test_step_marker_reads_none_when_absent_or_not_a_marker(tmp_path: Path) -> None:
    """No marker file, or one of the wrong size, reads as None (the caller falls back
    to the step records)."""
    assert StepMarker.read(tmp_path / "nope") is None
    bad = tmp_path / "bad"
    bad.write_bytes(b"123")
    assert StepMarker.read(bad) is None
    log = StepLog(RunDir(tmp_path / "run"))
    log.write({"step": 3, "loss": 1.0})
    log.close()
    assert StepMarker.read(RunDir(tmp_path / "run").last_step) == 3
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["step"] == 3
