"""The fake vendor tools' behaviour: each fake executable calls :func:`main` with its name.

Output follows the layouts of the recorded fixtures in ``tests/catalog/fixtures`` (which
are written from the vendors' documented formats), filled from the node's state file.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

STATE_ENV = "MIXFLEET_FAKE_NODE_STATE"

#: chip id -> (tool vendor, name the tool prints)
CHIPS = {
    "nvidia-h20": ("nvidia", "NVIDIA H20"), "nvidia-h100": ("nvidia", "NVIDIA H100 80GB HBM3"),
    "nvidia-a100": ("nvidia", "NVIDIA A100-SXM4-80GB"), "kunlun-p800": ("baidu", "P800"),
    "ascend-910b": ("huawei", "910B3"), "thead-ppu": ("thead", "PPU-ZW810E"),
    "amd-mi300x": ("amd", "AMD Instinct MI300X"), "intel-gaudi2": ("intel", "HL-225"),
    "intel-gaudi3": ("intel", "HL-325L"),
}


TOOL_VENDOR = {"nvidia-smi": "nvidia", "ppu-smi": "thead", "npu-smi": "huawei",
               "xpu_smi": "baidu", "xpu-smi": "baidu", "amd-smi": "amd", "rocm-smi": "amd",
               "hl-smi": "intel"}


def load_state(path: str | None = None) -> dict[str, Any]:
    p = path or os.environ.get(STATE_ENV)
    if not p:
        raise SystemExit(f"fake tool: {STATE_ENV} is not set")
    with open(p) as f:  # no pathlib: a fake tool starts in ~20 ms (python -S)
        return dict(json.load(f))


def vendor_devices(state: dict[str, Any], vendor: str) -> list[dict[str, Any]]:
    """The devices of one vendor, with their tool index (order within the vendor)."""
    out = [d for d in state["devices"] if CHIPS[d["chip"]][0] == vendor]
    return [{**d, "tool_index": i} for i, d in enumerate(out)]


def _fmt(d: dict[str, Any], key: str, spec: str = "g") -> str:
    return "[Unknown Error]" if d.get("failed") else format(d[key], spec)


def nvidia_csv(devs: list[dict[str, Any]], with_uuid: bool) -> str:
    lines = []
    for d in devs:
        cells = [str(d["tool_index"]), d["name"], str(d["mem_total_mib"]),
                 _fmt(d, "mem_used_mib"), "550.54.15", _fmt(d, "temp_c"), _fmt(d, "power_w"),
                 _fmt(d, "clock_mhz"), _fmt(d, "util_pct"), d["bus_id"].upper()]
        lines.append(", ".join(cells + ([d["uuid"]] if with_uuid else [])))
    return "\n".join(lines) + "\n"


def npu_smi_info(devs: list[dict[str, Any]]) -> str:
    bar = "+" + "-" * 27 + "+" + "-" * 15 + "+" + "-" * 52 + "+"
    out = ["+" + "-" * 96 + "+",
           "| npu-smi 23.0.0                   Version: 23.0.0" + " " * 47 + "|", bar,
           "| NPU   Name                | Health        | Power(W)    Temp(C)           "
           "Hugepages-Usage(page)|",
           "| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  "
           "HBM-Usage(MB)        |",
           bar.replace("-", "=")]
    for d in devs:
        health = "Critical" if d.get("failed") else "OK"
        out.append(f"| {d['tool_index']:<5} {d['name']:<19} | {health:<13} | "
                   f"{d['power_w']:<11.1f} {d['temp_c']:<17.0f} 0    / 0             |")
        out.append(f"| 0                         | {d['bus_id']:<13} | {d['util_pct']:<11.0f} "
                   f"0    / 0          {d['mem_used_mib']:.0f} / {d['mem_total_mib']}         |")
        out.append(bar.replace("-", "="))
    return "\n".join(out) + "\n"


def npu_smi_common(d: dict[str, Any]) -> str:
    return (f"        NPU ID                         : {d['tool_index']}\n"
            f"        Chip Count                     : 1\n\n"
            f"        Chip ID                        : 0\n"
            f"        Aicore Usage Rate(%)           : {d['util_pct']:.0f}\n"
            f"        Aicore Freq(MHZ)               : 1800\n"
            f"        Aicore curFreq(MHZ)            : {d['clock_mhz']:.0f}\n"
            f"        Temperature(C)                 : {d['temp_c']:.0f}\n"
            f"        NPU Real-time Power(W)         : {d['power_w']:.1f}\n")


def xpu_smi(devs: list[dict[str, Any]]) -> str:
    out = ["Runtime Version: 5.0", "Driver Version: 5.0", "  DEVICES", "-" * 100,
           "| DevID |   PCI Addr   | Model |        SN        |    INODE   | State | UseRate |"
           "    L3     |     Memory      | Power(W) | Temp |", "-" * 100]
    for d in devs:
        state = "E" if d.get("failed") else "N"
        sn = d["uuid"].replace("-", "")[-16:]
        out.append(f"| {d['tool_index']:>5} | {d['bus_id']} | {d['name']:<5} | {sn} |"
                   f" /dev/xpu{d['tool_index']}  | {state:>5} | {d['util_pct']:>5.0f} % |"
                   f" 0 / 96 MB | {d['mem_used_mib']:.0f} / {d['mem_total_mib']} MB |"
                   f" {d['power_w']:>8.0f} | {d['temp_c']:>4.0f} |")
    return "\n".join(out + ["-" * 100]) + "\n"


def _v(x: float, unit: str) -> dict[str, Any]:
    return {"value": x, "unit": unit}


def amd_smi(devs: list[dict[str, Any]], sub: str) -> str:
    if sub == "static":
        doc = [{"gpu": d["tool_index"], "asic": {"market_name": d["name"]},
                "bus": {"bdf": d["bus_id"]}, "vram": {"size": _v(d["mem_total_mib"], "MB")},
                "driver": {"version": "6.8.5"}} for d in devs]
    elif sub == "list":
        doc = [{"gpu": d["tool_index"], "bdf": d["bus_id"], "uuid": d["uuid"]} for d in devs]
    else:
        doc = [{"gpu": d["tool_index"], "usage": {"gfx_activity": _v(d["util_pct"], "%")},
                "power": {"socket_power": _v(d["power_w"], "W")},
                "clock": {"gfx_0": {"clk": _v(d["clock_mhz"], "MHz")}},
                "temperature": {"edge": _v(d["temp_c"] - 5, "C"),
                                "hotspot": "N/A" if d.get("failed") else _v(d["temp_c"], "C")},
                "mem_usage": {"total_vram": _v(d["mem_total_mib"], "MB"),
                              "used_vram": _v(d["mem_used_mib"], "MB")}} for d in devs]
    return json.dumps(doc, indent=1) + "\n"


def rocm_smi(devs: list[dict[str, Any]]) -> str:
    doc: dict[str, Any] = {f"card{d['tool_index']}": {
        "Card Series": d["name"], "Unique ID": d["uuid"], "PCI Bus": d["bus_id"].upper(),
        "Temperature (Sensor junction) (C)": f"{d['temp_c']:.1f}",
        "Current Socket Graphics Package Power (W)": f"{d['power_w']:.1f}",
        "GPU use (%)": f"{d['util_pct']:.0f}",
        "VRAM Total Memory (B)": str(d["mem_total_mib"] * 2**20),
        "VRAM Total Used Memory (B)": str(int(d["mem_used_mib"] * 2**20)),
        "sclk clock speed:": f"({d['clock_mhz']:.0f}Mhz)"} for d in devs}
    doc["system"] = {"Driver version": "6.8.5"}
    return json.dumps(doc, indent=1) + "\n"


def hl_smi(devs: list[dict[str, Any]], fields: list[str]) -> str:
    vals = {"driver_version": lambda d: "1.18.0", "name": lambda d: d["name"],
            "index": lambda d: str(d["tool_index"]), "bus_id": lambda d: d["bus_id"],
            "uuid": lambda d: d["uuid"], "memory.total": lambda d: str(d["mem_total_mib"]),
            "memory.used": lambda d: _fmt(d, "mem_used_mib", ".0f"),
            "temperature.aip": lambda d: _fmt(d, "temp_c", ".0f"),
            "power.draw": lambda d: _fmt(d, "power_w", ".0f"),
            "clocks.current.soc": lambda d: _fmt(d, "clock_mhz", ".0f"),
            "utilization.aip": lambda d: _fmt(d, "util_pct", ".0f")}
    head = ", ".join(fields)
    return "\n".join([head] + [", ".join(vals[f](d) for f in fields) for d in devs]) + "\n"


def main(tool: str, argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    state = load_state()
    fail = state.get("tool_errors", {}).get(tool)
    if fail:
        print(fail, file=sys.stderr)
        return 9
    vendor = TOOL_VENDOR[tool]
    devs = vendor_devices(state, vendor)
    if not devs:
        print(f"{tool}: no devices found", file=sys.stderr)
        return 6
    if tool in ("nvidia-smi", "ppu-smi"):
        q = next((a for a in args if a.startswith("--query-gpu=")), "")
        text = nvidia_csv(devs, with_uuid=q.endswith(",uuid"))
    elif tool == "npu-smi":
        if "-t" in args and "-i" in args:
            i = int(args[args.index("-i") + 1])
            text = npu_smi_common(devs[i])
        else:
            text = npu_smi_info(devs)
    elif tool in ("xpu_smi", "xpu-smi"):
        text = xpu_smi(devs)
    elif tool == "amd-smi":
        text = amd_smi(devs, args[0] if args else "static")
    elif tool == "rocm-smi":
        text = rocm_smi(devs)
    else:
        fields = args[args.index("-Q") + 1].split(",") if "-Q" in args else ["index", "name"]
        text = hl_smi(devs, fields)
    sys.stdout.write(text)
    return 0
