"""Parsers for AMD (``amd-smi``, ``rocm-smi``) and Intel Gaudi (``hl-smi``) tool output.

Same contract as :mod:`mixfleet.catalog.smi`: text in, :class:`SmiDevice` records out,
:class:`SmiParseError` for output in an unknown layout, ``None`` for fields not printed.
The recorded outputs they are tested against are described in
``tests/catalog/fixtures/README.md`` (written from the vendors' documented formats).
"""

from __future__ import annotations

import json
from typing import Any

from mixfleet.catalog.smi_types import SmiDevice, SmiParseError, smi_number

__all__ = ["AMD_SMI_COMMANDS", "ROCM_SMI_ARGS", "HL_SMI_FIELDS", "parse_amd_smi",
           "parse_rocm_smi", "parse_hl_smi"]

#: The ``amd-smi`` sub-commands whose JSON documents :func:`parse_amd_smi` merges by GPU.
AMD_SMI_COMMANDS = (("static", "--json"), ("list", "--json"), ("metric", "--json"))
#: ``rocm-smi`` flags that :func:`parse_rocm_smi` expects (one JSON document).
ROCM_SMI_ARGS = ("--showproductname", "--showuniqueid", "--showbus", "--showtemp",
                 "--showpower", "--showuse", "--showmeminfo", "vram", "--showclocks",
                 "--showdriverversion", "--json")
#: The ``hl-smi -Q`` fields (``-f csv,nounits``: with a header line, columns found by name).
HL_SMI_FIELDS = ("index", "name", "bus_id", "uuid", "driver_version", "memory.total",
                 "memory.used", "temperature.aip", "power.draw", "clocks.current.soc",
                 "utilization.aip")


def _json_docs(text: str) -> list[Any]:
    """Every JSON document in ``text`` (several commands' outputs one after another)."""
    dec, i = json.JSONDecoder(), 0
    docs: list[Any] = []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return docs
        try:
            doc, i = dec.raw_decode(text, i)
        except (json.JSONDecodeError, RecursionError) as e:
            raise SmiParseError(f"not JSON at character {i}: {e}") from None
        docs.append(doc)


def _value(v: Any, what: str) -> float | None:
    """``{"value": 40, "unit": "C"}``, ``40`` or ``"N/A"`` -> 40.0 / None."""
    if isinstance(v, dict):
        v = v.get("value")
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        return smi_number(v, what)
    raise SmiParseError(f"expected a number for {what}, got {v!r}")


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def parse_amd_smi(text: str) -> list[SmiDevice]:
    """``amd-smi static --json``, ``list --json`` and ``metric --json``, concatenated.

    Each document is a list of per-GPU objects with a ``gpu`` index (newer releases wrap it
    as ``{"gpu_data": [...]}``); objects of one GPU are merged.
    """
    merged: dict[int, dict[str, Any]] = {}
    for doc in _json_docs(text):
        if isinstance(doc, dict):
            doc = doc.get("gpu_data", [doc])
        if not isinstance(doc, list):
            raise SmiParseError("expected a list of GPU objects in amd-smi JSON output")
        for obj in doc:
            if not isinstance(obj, dict) or not isinstance(obj.get("gpu"), int) \
                    or isinstance(obj.get("gpu"), bool):
                raise SmiParseError(f"expected GPU objects with a 'gpu' index, got {obj!r:.80}")
            merged.setdefault(obj["gpu"], {}).update(obj)
    out = []
    for idx, g in sorted(merged.items()):
        name = _dig(g, "asic", "market_name")
        if not isinstance(name, str) or not name:
            raise SmiParseError(f"GPU {idx}: no asic.market_name (run `amd-smi static`)")
        temp = _dig(g, "temperature", "hotspot")
        if _value(temp, "temperature") is None:
            temp = _dig(g, "temperature", "edge")
        bdf = g.get("bdf") or _dig(g, "bus", "bdf")
        out.append(SmiDevice(
            index=idx, name=name, bus_id=bdf if isinstance(bdf, str) else None,
            uuid=g["uuid"] if isinstance(g.get("uuid"), str) else None,
            driver=_dig(g, "driver", "version") if isinstance(
                _dig(g, "driver", "version"), str) else None,
            memory_total_mib=_value(_dig(g, "mem_usage", "total_vram")
                                    or _dig(g, "vram", "size"), "total VRAM"),
            memory_used_mib=_value(_dig(g, "mem_usage", "used_vram"), "used VRAM"),
            temp_c=_value(temp, "temperature"),
            power_w=_value(_dig(g, "power", "socket_power"), "socket power"),
            clock_mhz=_value(_dig(g, "clock", "gfx_0", "clk"), "gfx clock"),
            util_pct=_value(_dig(g, "usage", "gfx_activity"), "gfx activity")))
    if not out:
        raise SmiParseError("no GPUs in amd-smi output")
    return out


def _first(card: dict[str, Any], *prefixes: str) -> Any:
    for p in prefixes:
        for k, v in card.items():
            if k.lower().startswith(p.lower()):
                return v
    return None


def parse_rocm_smi(text: str) -> list[SmiDevice]:
    """``rocm-smi <ROCM_SMI_ARGS>``: one JSON object, a ``cardN`` object per GPU."""
    docs = _json_docs(text)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise SmiParseError("expected one JSON object from rocm-smi --json")
    doc = docs[0]
    driver = _dig(doc, "system", "Driver version")
    out = []
    for key, card in doc.items():
        if not key.startswith("card") or not key[4:].isdigit():
            continue
        if not isinstance(card, dict):
            raise SmiParseError(f"{key}: expected an object, got {card!r:.80}")
        name = _first(card, "Card Series", "Card series", "Card model")
        if not isinstance(name, str):
            raise SmiParseError(f"{key}: no 'Card Series' (pass --showproductname)")
        total = _value(_first(card, "VRAM Total Memory (B)"), "VRAM total")
        used = _value(_first(card, "VRAM Total Used Memory (B)"), "VRAM used")
        clock = _first(card, "sclk clock speed")
        uid = _first(card, "Unique ID")
        bus = _first(card, "PCI Bus")
        out.append(SmiDevice(
            index=int(key[4:]), name=name, driver=driver if isinstance(driver, str) else None,
            uuid=uid if isinstance(uid, str) else None,
            bus_id=bus.lower() if isinstance(bus, str) else None,
            memory_total_mib=None if total is None else total / 2**20,
            memory_used_mib=None if used is None else used / 2**20,
            temp_c=_value(_first(card, "Temperature (Sensor junction)",
                                 "Temperature (Sensor edge)"), "temperature"),
            power_w=_value(_first(card, "Current Socket Graphics Package Power",
                                  "Average Graphics Package Power"), "power"),
            clock_mhz=_value(clock, "sclk"), util_pct=_value(_first(card, "GPU use"), "use")))
    if not out:
        raise SmiParseError("no cardN objects in rocm-smi output")
    return out


def parse_hl_smi(text: str) -> list[SmiDevice]:
    """``hl-smi -Q <HL_SMI_FIELDS> -f csv,nounits`` (Intel Gaudi): a header line, then one
    line per module; columns are found by their header name."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise SmiParseError("empty hl-smi output")
    header = [h.strip().split(" [")[0].lower() for h in lines[0].split(",")]
    for need in ("index", "name"):
        if need not in header:
            raise SmiParseError(f"hl-smi header lacks the {need!r} column: {lines[0]!r:.120}")
    col = {h: j for j, h in enumerate(header)}
    out = []
    for line in lines[1:]:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(header):
            raise SmiParseError(f"expected {len(header)} fields, got {len(cells)} in {line!r}")

        def get(name: str, cells: list[str] = cells) -> str | None:
            return cells[col[name]] if name in col else None
        if not cells[col["index"]].isdigit():
            raise SmiParseError(f"expected a module index, got {cells[col['index']]!r}")
        out.append(SmiDevice(
            index=int(cells[col["index"]]), name=cells[col["name"]], bus_id=get("bus_id"),
            uuid=get("uuid") or None, driver=get("driver_version") or None,
            memory_total_mib=smi_number(get("memory.total"), "memory.total"),
            memory_used_mib=smi_number(get("memory.used"), "memory.used"),
            temp_c=smi_number(get("temperature.aip"), "temperature.aip"),
            power_w=smi_number(get("power.draw"), "power.draw"),
            clock_mhz=smi_number(get("clocks.current.soc"), "clocks.current.soc"),
            util_pct=smi_number(get("utilization.aip"), "utilization.aip")))
    if not out:
        raise SmiParseError("no module lines in hl-smi output")
    return out
