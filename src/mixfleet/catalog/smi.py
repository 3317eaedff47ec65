"""Parsers for the vendors' management tools (text in, :class:`SmiDevice` records out).

One parser per output format; each is tested against a recorded output under
``tests/catalog/fixtures/`` (their provenance is in ``tests/catalog/fixtures/README.md``).
A parser never guesses: output it cannot read raises :class:`SmiParseError`, which detection
and telemetry report as "unreadable" rather than crashing. Fields a tool does not print are
``None``.
"""

from __future__ import annotations

import re

from mixfleet.catalog.smi_extra import parse_amd_smi, parse_hl_smi, parse_rocm_smi
from mixfleet.catalog.smi_types import SmiDevice, SmiParseError
from mixfleet.catalog.smi_types import smi_number as _num

__all__ = ["SmiDevice", "SmiParseError", "parse_nvidia_csv", "parse_npu_smi", "parse_cnmon",
           "parse_xpu_smi", "parse_npu_smi_common", "NVIDIA_CSV_FIELDS", "PARSERS"]

#: The ``--query-gpu`` fields :func:`parse_nvidia_csv` expects, in order.
NVIDIA_CSV_FIELDS = ("index", "name", "memory.total", "memory.used", "driver_version",
                     "temperature.gpu", "power.draw", "clocks.sm", "utilization.gpu",
                     "pci.bus_id", "uuid")


def _pair(text: str, what: str) -> tuple[float | None, float | None]:
    """``"3165 / 65536"`` -> (3165.0, 65536.0)."""
    parts = text.split("/")
    if len(parts) != 2:
        raise SmiParseError(f"expected 'used / total' for {what}, got {text!r}")
    return _num(parts[0], what), _num(parts[1], what)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_nvidia_csv(text: str) -> list[SmiDevice]:
    """``nvidia-smi --query-gpu=<NVIDIA_CSV_FIELDS> --format=csv,noheader,nounits``.

    ``ppu-smi`` (T-Head PPU) accepts the same query flags and prints the same format.
    Output of the older 10-field query (without ``uuid``) is read too.
    """
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) not in (len(NVIDIA_CSV_FIELDS), len(NVIDIA_CSV_FIELDS) - 1):
            raise SmiParseError(f"expected {len(NVIDIA_CSV_FIELDS)} comma-separated fields, "
                                f"got {len(cells)} in {line!r}")
        if not cells[0].isdigit():
            raise SmiParseError(f"expected a device index first, got {cells[0]!r}")
        out.append(SmiDevice(
            index=int(cells[0]), name=cells[1], memory_total_mib=_num(cells[2], "memory.total"),
            memory_used_mib=_num(cells[3], "memory.used"), driver=cells[4] or None,
            temp_c=_num(cells[5], "temperature"), power_w=_num(cells[6], "power.draw"),
            clock_mhz=_num(cells[7], "clocks.sm"), util_pct=_num(cells[8], "utilization"),
            bus_id=cells[9] or None,
            uuid=(cells[10] or None) if len(cells) > 10 else None))
    if not out:
        raise SmiParseError("no device lines in the output")
    return out


def parse_npu_smi(text: str) -> list[SmiDevice]:
    """``npu-smi info`` (Huawei Ascend): two table rows per NPU."""
    m = re.search(r"Version:\s*(\S+)", text)
    driver = m.group(1) if m else None
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("|")]
    if not any("NPU" in ln and "Name" in ln for ln in lines):
        raise SmiParseError("no 'NPU  Name' header; not `npu-smi info` output")
    out: list[SmiDevice] = []
    i = 0
    while i < len(lines):
        cells = _cells(lines[i])
        if "Process" in lines[i]:
            break
        head = re.fullmatch(r"(\d+)\s+(\S.*)", cells[0]) if len(cells) == 3 else None
        if head is None:
            i += 1
            continue
        if i + 1 >= len(lines) or len(_cells(lines[i + 1])) != 3:
            raise SmiParseError(f"NPU {head.group(1)}: second row missing")
        low = _cells(lines[i + 1])
        top_vals = cells[2].split()
        if len(top_vals) < 2:
            raise SmiParseError(f"NPU {head.group(1)}: expected power and temperature, "
                                f"got {cells[2]!r}")
        usages = re.findall(r"(\S+)\s*/\s*(\S+)", low[2])
        util = low[2].split()[0] if low[2].split() else None
        used = total = None
        if usages:  # the last 'used / total' is HBM on 910B/C, DDR memory on older parts
            used, total = _num(usages[-1][0], "HBM used"), _num(usages[-1][1], "HBM total")
        out.append(SmiDevice(
            index=int(head.group(1)), name=head.group(2).strip(), health=cells[1] or None,
            power_w=_num(top_vals[0], "power"), temp_c=_num(top_vals[1], "temperature"),
            util_pct=_num(util, "AICore"), memory_used_mib=used, memory_total_mib=total,
            bus_id=low[1] or None, driver=driver))
        i += 2
    if not out:
        raise SmiParseError("no NPU rows in `npu-smi info` output")
    return out


def parse_cnmon(text: str) -> list[SmiDevice]:
    """``cnmon`` (Cambricon): two table rows per card."""
    m = re.search(r"Driver\s+v?(\S+)", text)
    driver = m.group(1).rstrip("|") if m else None
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("|")]
    if not any("Card" in ln and "Name" in ln for ln in lines):
        raise SmiParseError("no 'Card  VF  Name' header; not `cnmon` output")
    out: list[SmiDevice] = []
    for i, line in enumerate(lines):
        cells = _cells(line)
        if "Process" in line or "PID" in line:
            break
        head = re.fullmatch(r"(\d+)\s+(\S+)\s+(\S+)(?:\s+\S+)?", cells[0]) \
            if len(cells) == 3 else None
        if head is None:
            continue
        if i + 1 >= len(lines) or len(_cells(lines[i + 1])) != 3:
            raise SmiParseError(f"card {head.group(1)}: second row missing")
        low = _cells(lines[i + 1])
        temp = re.search(r"(-?\d+)\s*C\b", low[0])
        pwr = re.search(r"(\d+(?:\.\d+)?)\s*W\s*/", low[0])
        if temp is None or pwr is None:
            raise SmiParseError(f"card {head.group(1)}: expected 'Temp  Pwr:Usage/Cap', "
                                f"got {low[0]!r}")
        used, total = _pair(low[1], "Memory-Usage")
        out.append(SmiDevice(
            index=int(head.group(1)), name=head.group(3), bus_id=cells[1] or None,
            util_pct=_num(cells[2].split()[0] if cells[2] else None, "Util"),
            temp_c=float(temp.group(1)), power_w=float(pwr.group(1)),
            memory_used_mib=used, memory_total_mib=total, driver=driver))
    if not out:
        raise SmiParseError("no card rows in `cnmon` output")
    return out


def parse_xpu_smi(text: str) -> list[SmiDevice]:
    """``xpu_smi`` (Baidu Kunlun): one table row per device, columns found by header."""
    m = re.search(r"Driver Version:\s*(\S+)", text)
    driver = m.group(1) if m else None
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("|")]
    header = next((_cells(ln) for ln in lines if "DevID" in ln), None)
    if header is None:
        raise SmiParseError("no 'DevID' header; not Kunlun `xpu_smi` output")
    col = {h.split("(")[0].strip().lower(): j for j, h in enumerate(header)}
    for need in ("devid", "model", "memory"):
        if need not in col:
            raise SmiParseError(f"xpu_smi header lacks the {need!r} column: {header}")
    out = []
    for line in lines:
        cells = _cells(line)
        if len(cells) != len(header) or not cells[col["devid"]].isdigit():
            continue

        def get(name: str, cells: list[str] = cells) -> str | None:
            return cells[col[name]] if name in col else None
        used, total = _pair(cells[col["memory"]], "Memory")
        out.append(SmiDevice(
            index=int(cells[col["devid"]]), name=cells[col["model"]], bus_id=get("pci addr"),
            uuid=get("sn") or None,
            memory_used_mib=used, memory_total_mib=total, util_pct=_num(get("userate"), "UseRate"),
            power_w=_num(get("power"), "Power"), temp_c=_num(get("temp"), "Temp"),
            health=get("state"), driver=driver))
    if not out:
        raise SmiParseError("no device rows in `xpu_smi` output")
    return out


def parse_npu_smi_common(text: str) -> dict[str, float | None]:
    """``npu-smi info -t common -i <id>`` (Huawei Ascend): ``key : value`` lines.

    Returns ``clock_mhz`` (the AI core's current frequency, else its rated one), ``temp_c``
    and ``power_w`` where printed.
    """
    kv: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            kv[key.strip().lower()] = value.strip()
    if "npu id" not in kv and "chip id" not in kv:
        raise SmiParseError("no 'NPU ID' line; not `npu-smi info -t common` output")
    clock = kv.get("aicore curfreq(mhz)", kv.get("aicore freq(mhz)"))
    return {"clock_mhz": _num(clock, "Aicore Freq"),
            "temp_c": _num(kv.get("temperature(c)"), "Temperature"),
            "power_w": _num(kv.get("npu real-time power(w)"), "Power")}


#: Parser by output format name.
PARSERS = {"nvidia-csv": parse_nvidia_csv, "npu-smi": parse_npu_smi, "cnmon": parse_cnmon,
           "xpu_smi": parse_xpu_smi, "amd-smi": parse_amd_smi, "rocm-smi": parse_rocm_smi,
           "hl-smi": parse_hl_smi}
