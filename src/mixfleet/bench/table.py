"""The throughput table (DESIGN.md, "Throughput table"): JSON and CSV, one row per
(workload, chip, per-device batch)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Literal

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


def _row(d: dict, where: str) -> ThroughputRow:
    missing = [k for k in _FIELDS if k not in d and k not in _OPTIONAL]
    if missing:
        raise ConfigError(f"{where}: missing field(s) {', '.join(missing)}; a throughput "
                          f"row needs {', '.join(_FIELDS)}")
    return ThroughputRow(**{k: d[k] for k in _FIELDS if k in d})


def _from_csv(d: dict[str, str], where: str) -> ThroughputRow:
    def opt_float(k: str) -> float | None:
        return None if d[k] == "" else float(d[k])
    try:
        return ThroughputRow(
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
        raise ConfigError(f"{where}: bad throughput row ({e}); fields: "
                          f"{', '.join(_FIELDS)}") from None


def read_table(path: str | Path) -> list[ThroughputRow]:
    """Read a table written by :func:`write_table`; bad files raise ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"throughput table {str(p)!r} does not exist; write one with "
                          f"`mixfleet bench --out DIR`")
    if p.suffix == ".json":
        try:
            doc = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            raise ConfigError(f"{p}: expected {{\"schema\": 1, \"rows\": [...]}}")
        return [_row(r, f"{p} row {i}") for i, r in enumerate(doc["rows"])]
    with p.open(newline="") as f:
        return [_from_csv(r, f"{p} row {i + 2}") for i, r in enumerate(csv.DictReader(f))]
