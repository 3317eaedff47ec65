"""Chip records: the catalog's data model (docs/architecture.md, "Contracts between the parts").

Every figure carries a ``source`` and a ``confidence`` (``datasheet``, ``reported``,
``unknown``). An unknown figure is ``None`` and stays unknown: MFU against an unknown peak
is unknown, never guessed.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from mixfleet.errors import ConfigError

Confidence = Literal["datasheet", "reported", "unknown"]
CONFIDENCES = ("datasheet", "reported", "unknown")
FIGURES = ("bf16_tflops", "hbm_gib", "hbm_tbps", "link_gbps", "tdp_w")

__all__ = ["Figure", "Chip", "load_catalog", "get_chip", "match_chip", "FIGURES",
           "CONFIDENCES"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Figure:
    """One number of a chip record, with where it came from."""

    value: float | None
    source: str
    confidence: Confidence


@dataclasses.dataclass(frozen=True, kw_only=True)
class Chip:
    """One accelerator model."""

    id: str
    vendor: str
    name: str
    torch_device: str
    bf16_tflops: Figure
    hbm_gib: Figure
    hbm_tbps: Figure
    link_gbps: Figure
    tdp_w: Figure
    aliases: tuple[str, ...] = ()
    notes: str = ""

    @property
    def is_nvidia(self) -> bool:
        return self.vendor.lower() == "nvidia"

    def peak_flops(self) -> float | None:
        """Dense BF16 peak in FLOP/s, or None when unknown."""
        v = self.bf16_tflops.value
        return None if v is None else v * 1e12


def _figure(chip_id: str, name: str, raw: object, path: str) -> Figure:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: chip {chip_id!r} field {name!r} must be a table "
                          f"{{ value = ..., source = \"...\", confidence = \"datasheet\" }}")
    value = raw.get("value")
    conf = raw.get("confidence")
    src = raw.get("source")
    if conf not in CONFIDENCES:
        raise ConfigError(f"{path}: chip {chip_id!r} {name}.confidence is {conf!r}; "
                          f"use one of {', '.join(CONFIDENCES)}")
    if not isinstance(src, str) or not src:
        raise ConfigError(f"{path}: chip {chip_id!r} {name}.source is missing; name where "
                          f"the figure comes from")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or value <= 0):
        raise ConfigError(f"{path}: chip {chip_id!r} {name}.value is {value!r}; use a "
                          f"positive number, or leave it out when unknown")
    if conf == "unknown" and value is not None:
        raise ConfigError(f"{path}: chip {chip_id!r} {name} has a value but confidence "
                          f"'unknown'; drop the value or say where it comes from")
    if conf != "unknown" and value is None:
        raise ConfigError(f"{path}: chip {chip_id!r} {name} has no value; set "
                          f"confidence = \"unknown\"")
    return Figure(value=None if value is None else float(value), source=src, confidence=conf)


def parse_catalog(data: dict, path: str = "<catalog>") -> dict[str, Chip]:
    """Chip records from parsed TOML (``[[chip]]`` tables)."""
    chips: dict[str, Chip] = {}
    rows = data.get("chip")
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{path}: no [[chip]] tables found; each chip is a [[chip]] table")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: chip #{i} is not a table")
        for key in ("id", "vendor", "name", "torch_device"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise ConfigError(f"{path}: chip #{i} field {key!r} is missing or not a "
                                  f"string; add {key} = \"...\"")
        cid = row["id"]
        unknown = set(row) - {"id", "vendor", "name", "torch_device", *FIGURES, "notes",
                              "aliases"}
        if unknown:
            raise ConfigError(f"{path}: chip {cid!r} has unknown field(s) "
                              f"{', '.join(sorted(unknown))}; known: id, vendor, name, "
                              f"torch_device, {', '.join(FIGURES)}, notes, aliases")
        aliases = row.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
            raise ConfigError(f"{path}: chip {cid!r} aliases is {aliases!r}; use a list of "
                              f"names as vendor tools report them, e.g. aliases = [\"H20\"]")
        notes = row.get("notes", "")
        if not isinstance(notes, str):
            raise ConfigError(f"{path}: chip {cid!r} notes is {notes!r}; use a string")
        if cid in chips:
            raise ConfigError(f"{path}: chip id {cid!r} appears twice; ids must be unique")
        figs = {n: _figure(cid, n, row.get(n), path) for n in FIGURES}
        chips[cid] = Chip(id=cid, vendor=row["vendor"], name=row["name"],
                          torch_device=row["torch_device"], aliases=tuple(aliases),
                          notes=notes, **figs)
    return chips


def load_catalog(path: str | Path | None = None) -> dict[str, Chip]:
    """The chip catalog: the packaged ``chips.toml`` unless ``path`` is given."""
    if path is None:
        text = resources.files("mixfleet.catalog").joinpath("chips.toml").read_text()
        where = "mixfleet/catalog/chips.toml"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"catalog file {str(p)!r} does not exist; pass the path of a "
                              f"chips TOML file ([[chip]] tables), or omit it to use the "
                              f"packaged catalog")
        text, where = p.read_text(), str(p)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML ({e}); fix the syntax") from None
    return parse_catalog(data, where)


def get_chip(chip_id: str, catalog: dict[str, Chip] | None = None) -> Chip:
    """One chip by id; an unknown id raises ConfigError listing the known ones."""
    cat = load_catalog() if catalog is None else catalog
    if chip_id not in cat:
        raise ConfigError(f"unknown chip id {chip_id!r}; known chips: "
                          f"{', '.join(sorted(cat))} (see `mixfleet catalog`)")
    return cat[chip_id]


def _alias_pattern(alias: str) -> re.Pattern[str]:
    # An alias must not continue into more letters/digits ("A10" is not "A100"); a leading
    # digit may follow letters ("Ascend910B3" matches "910B3").
    before = r"(?<![0-9])" if alias[0].isdigit() else r"(?<![A-Za-z0-9])"
    return re.compile(before + re.escape(alias) + r"(?![A-Za-z0-9])", re.IGNORECASE)


def match_chip(name: str, catalog: dict[str, Chip] | None = None,
               vendor: str | None = None) -> Chip | None:
    """The catalog chip whose longest alias occurs in a device ``name``, else None.

    ``vendor`` (as the detecting tool knows it) restricts the match to that vendor's chips.
    """
    cat = load_catalog() if catalog is None else catalog
    pairs = [(a, c) for c in cat.values() for a in (*c.aliases, c.id)
             if vendor is None or c.vendor == vendor]
    for alias, chip in sorted(pairs, key=lambda p: -len(p[0])):
        if _alias_pattern(alias).search(name):
            return chip
    return None
