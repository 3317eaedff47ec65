"""The throughput table (docs/architecture.md, "Contracts between the parts"): JSON and
CSV, one row per (workload, chip, per-device batch)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any, Literal

from mixfleet.config import read_text
from mixfleet.errors import ConfigError

Origin = Literal["measured", "measured-scaled", "emulated", "estimated"]
SCHEMA_VERSION = 1

__all__ = ["ThroughputRow", "write_table", "read_table", "SCHEMA_VERSION"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ThroughputRow:
    """One measurement (or estimate) of one workload on one chip at one batch."""

    workload: str
    chip: str
    batch: int
    samples_per_s: float
    step_p50_s: float | None
    step_p90_s: float | None
    mfu: float | None
    peak_mem_bytes: int | None
    host: str
    torch_version: str
    date: str
    emulated: bool
    origin: Origin
    note: str = ""
    """How the figure was obtained when it is not one plain timing (e.g. a planner class's
    per-component times and extrapolation, ``mixfleet bench --class``)."""


_FIELDS = [f.name for f in dataclasses.fields(ThroughputRow)]


def write_table(rows: list[ThroughputRow], path: str | Path) -> None:
    """Write ``rows`` as JSON (``.json``) or CSV (any other suffix)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".json":
        doc = {"schema": SCHEMA_VERSION, "rows": [dataclasses.asdict(r) for r in rows]}
        p.write_text(json.dumps(doc, indent=2) + "\n")
        return
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_FIELDS)
        w.writeheader()
        for r in rows:
            d = dataclasses.asdict(r)
            w.writerow({k: ("" if v is None else v) for k, v in d.items()})


_OPTIONAL = {"note"}


def _check(r: ThroughputRow, where: str) -> ThroughputRow:
    """Types and ranges of one row (ConfigError naming the row, the field and the fix)."""
    def bad(field: str, fix: str) -> ConfigError:
        return ConfigError(f"{where} field {field!r}: {getattr(r, field)!r} {fix}")
    for k in ("workload", "chip", "host", "torch_version", "date"):
        if not isinstance(getattr(r, k), str):
            raise bad(k, "must be text")
    if isinstance(r.batch, bool) or not isinstance(r.batch, int) or not 1 <= r.batch <= 2**31:
        raise bad("batch", "must be an integer in 1..2**31")
    if not _number(r.samples_per_s) or r.samples_per_s <= 0:
        raise bad("samples_per_s", "must be a positive finite number")
    for k in ("step_p50_s", "step_p90_s", "mfu"):
        v = getattr(r, k)
        if v is not None and (not _number(v) or v < 0):
            raise bad(k, "must be a finite number >= 0, or empty")
    if r.peak_mem_bytes is not None and (isinstance(r.peak_mem_bytes, bool) or not isinstance(
            r.peak_mem_bytes, int) or not 0 <= r.peak_mem_bytes < 2**63):
        raise bad("peak_mem_bytes", "must be an integer in 0..2**63, or empty")
    if not isinstance(r.emulated, bool):
        raise bad("emulated", "must be true or false")
    if r.origin not in ("measured", "measured-scaled", "emulated", "estimated"):
        raise bad("origin", "must be measured, measured-scaled, emulated or estimated")
    if not isinstance(r.note, str):
        raise bad("note", "must be text")
    return r


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _row(d: Any, where: str) -> ThroughputRow:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected an object with {', '.join(_FIELDS)}")
    missing = [k for k in _FIELDS if k not in d and k not in _OPTIONAL]
    if missing:
        raise ConfigError(f"{where}: missing field(s) {', '.join(missing)}; a throughput "
                          f"row needs {', '.join(_FIELDS)}")
    return _check(ThroughputRow(**{k: d[k] for k in _FIELDS if k in d}), where)


def _from_csv(d: dict[str, str], where: str) -> ThroughputRow:
    def opt_float(k: str) -> float | None:
        return None if d[k] == "" else float(d[k])
    missing = [k for k in _FIELDS if d.get(k) is None and k not in _OPTIONAL]
    if missing:
        raise ConfigError(f"{where}: missing column(s) {', '.join(missing)}; a throughput "
                          f"row needs {', '.join(_FIELDS)}")
    try:
        row = ThroughputRow(
            workload=d["workload"], chip=d["chip"], batch=int(d["batch"]),
            samples_per_s=float(d["samples_per_s"]), step_p50_s=opt_float("step_p50_s"),
            step_p90_s=opt_float("step_p90_s"), mfu=opt_float("mfu"),
            peak_mem_bytes=None if d["peak_mem_bytes"] == "" else int(d["peak_mem_bytes"]),
            host=d["host"], torch_version=d["torch_version"], date=d["date"],
            emulated=d["emulated"] in ("True", "true", "1"),
            origin=d["origin"],  # type: ignore[arg-type]
            note=d.get("note") or "",
        )
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{where}: bad throughput row ({str(e)[:120]}); fields: "
                          f"{', '.join(_FIELDS)}") from None
    return _check(row, where)


def read_table(path: str | Path) -> list[ThroughputRow]:
    """Read a table written by :func:`write_table`; bad files raise ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"throughput table {str(p)!r} does not exist; write one with "
                          f"`mixfleet bench --out DIR`")
    text = read_text(p, "throughput table")
    if p.suffix == ".json":
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise ConfigError(f"{p}: not valid JSON ({str(e)[:120]}); pass a table written "
                              f"by `mixfleet bench`") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            raise ConfigError(f"{p}: expected {{\"schema\": 1, \"rows\": [...]}}")
        rows = [_row(r, f"{p} row {i}") for i, r in enumerate(doc["rows"])]
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            missing = [k for k in _FIELDS
                       if k not in (reader.fieldnames or []) and k not in _OPTIONAL]
            if missing:
                raise ConfigError(f"{p}: row 1 (header) lacks column(s) {', '.join(missing)}; "
                                  f"pass a table written by `mixfleet bench`")
            rows = [_from_csv(r, f"{p} row {i + 2}") for i, r in enumerate(reader)]
        except csv.Error as e:
            raise ConfigError(f"{p}: not a CSV table ({e}); pass a table written by "
                              f"`mixfleet bench`") from None
    seen: dict[tuple[str, str, int, str], int] = {}
    for i, r in enumerate(rows):
        key = (r.workload, r.chip, r.batch, r.origin)
        if key in seen:
            raise ConfigError(f"{p} row {i}: (workload, chip, batch, origin) = {key} repeats "
                              f"row {seen[key]}; keep one row per workload, chip, batch and "
                              f"origin")
        seen[key] = i
    return rows
