"""The run directory's logs: step records written in batches, and the step marker that a
SIGKILL cannot take back (from which a restart counts the steps lost)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

from mixfleet.emulate.thermal import EVENT_OF_KIND
from mixfleet.runs import EVENT_NAMES, Event, JsonLines, RunDir, StepLog, StepMarker, read_jsonl
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


def _event_names(node: ast.expr, where: str) -> set[str]:
    """The event names an ``emit`` call's first argument can take (constants only)."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
            and node.value.id == "Event":
        assert node.attr.isupper() and hasattr(Event, node.attr), f"{where}: Event.{node.attr}"
        return {getattr(Event, node.attr)}
    if isinstance(node, ast.IfExp):
        return _event_names(node.body, where) | _event_names(node.orelse, where)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
            and node.value.id == "EVENT_OF_KIND":
        return set(EVENT_OF_KIND.values())
    raise AssertionError(f"{where}: an event name that is not a constant of "
                         f"mixfleet.runs.Event: {ast.unparse(node)}")


def _reads_event(node: ast.expr) -> bool:
    """``e["event"]`` or ``e.get("event", ...)``."""
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "event"
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get" and bool(node.args)
            and isinstance(node.args[0], ast.Constant) and node.args[0].value == "event")


def test_every_event_emitted_or_compared_in_src_is_a_unique_constant() -> None:
    """Event names are unique constants of mixfleet.runs.Event; every emit(...) in src names
    its event by one of them, and no code compares a record's "event" with a literal."""
    consts = {k: v for k, v in vars(Event).items() if k.isupper()}
    assert len(set(consts.values())) == len(consts) and set(consts.values()) == EVENT_NAMES
    assert all(v == k.lower() for k, v in consts.items())
    emitted: set[str] = set()
    for f in sorted((REPO / "src" / "mixfleet").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            where = f"{f.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call) and node.args and (
                    isinstance(node.func, ast.Name) and node.func.id == "emit"
                    or isinstance(node.func, ast.Attribute) and node.func.attr == "emit"):
                emitted |= _event_names(node.args[0], where)
            if isinstance(node, ast.Compare) and any(map(_reads_event, [node.left,
                                                                        *node.comparators])):
                literals = [c for c in ast.walk(node) if isinstance(c, ast.Constant)
                            and isinstance(c.value, str) and c.value != "event"]
                assert not literals, f"{where}: compares an event with a literal"
    assert emitted == EVENT_NAMES  # and every constant is emitted somewhere (none is dead)
