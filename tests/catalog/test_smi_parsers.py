"""Each vendor tool's parser reads its recorded output (fixtures/README.md says where from)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixfleet.catalog.smi import (
    SmiParseError,
    parse_cnmon,
    parse_npu_smi,
    parse_nvidia_csv,
    parse_xpu_smi,
)

FIX = Path(__file__).parent / "fixtures"


def test_npu_smi_info_two_npus():
    """npu-smi info: name, health, power, temperature, AICore and HBM per NPU, driver."""
    devs = parse_npu_smi((FIX / "npu_smi_info_910b.txt").read_text())
    assert [d.name for d in devs] == ["910B3", "910B3"]
    d1 = devs[1]
    assert (d1.index, d1.health, d1.power_w, d1.temp_c, d1.util_pct) == (1, "Warning", 288.1,
                                                                        71, 98)
    assert (d1.memory_used_mib, d1.memory_total_mib) == (61200, 65536)
    assert d1.bus_id == "0000:01:00.0" and d1.driver == "23.0.0"


def test_cnmon_two_cards():
    """cnmon: name, temperature, power, memory and utilization per card."""
    devs = parse_cnmon((FIX / "cnmon_mlu370.txt").read_text())
    assert [d.name for d in devs] == ["MLU370-X8", "MLU370-X8"]
    d = devs[1]
    assert (d.temp_c, d.power_w, d.util_pct) == (68, 201, 87)
    assert (d.memory_used_mib, d.memory_total_mib) == (20480, 23374)
    assert d.driver == "5.10.22"


def test_xpu_smi_columns_found_by_header():
    """Kunlun xpu_smi: rows read by column name, memory 'used / total MB'."""
    devs = parse_xpu_smi((FIX / "xpu_smi_p800.txt").read_text())
    assert [(d.index, d.name) for d in devs] == [(0, "P800"), (1, "P800")]
    assert (devs[1].util_pct, devs[1].power_w, devs[1].temp_c) == (93, 390, 76)
    assert devs[1].memory_total_mib == 98304 and devs[0].driver == "5.0"


@pytest.mark.parametrize("fixture,name", [("nvidia_smi_h20.csv", "NVIDIA H20"),
                                          ("ppu_smi.csv", "PPU-ZW810E")])
def test_nvidia_csv_query_format(fixture, name):
    """nvidia-smi / ppu-smi --query-gpu CSV; [N/A] reads as unknown."""
    devs = parse_nvidia_csv((FIX / fixture).read_text())
    assert devs[0].name == name and devs[0].memory_total_mib and devs[0].memory_total_mib > 90000
    if fixture == "ppu_smi.csv":
        assert devs[0].clock_mhz is None
    else:
        assert devs[1].temp_c == 79 and devs[1].power_w == 395.10 and devs[1].clock_mhz == 1755


@pytest.mark.parametrize("parser", [parse_npu_smi, parse_cnmon, parse_xpu_smi, parse_nvidia_csv])
@pytest.mark.parametrize("text", ["", "command not found\n", "\x00\x01\x02 garbage | | |\n",
                                  "0, NVIDIA H20, lots, of\n"])
def test_garbled_output_raises_parse_error(parser, text):
    """Output in no known layout raises SmiParseError, never another exception."""
    with pytest.raises(SmiParseError):
        parser(text)


def test_recorded_garbled_npu_smi_is_unreadable():
    """The recorded garbled npu-smi output raises SmiParseError."""
    with pytest.raises(SmiParseError):
        parse_npu_smi((FIX / "npu_smi_garbled.txt").read_text(errors="replace"))
