"""AMD (amd-smi, rocm-smi), Intel Gaudi (hl-smi) and npu-smi clock parsers read their
recorded outputs (fixtures/README.md: written from the documented formats)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixfleet.catalog.detect import detect
from mixfleet.catalog.smi import (
    SmiParseError,
    parse_amd_smi,
    parse_hl_smi,
    parse_npu_smi_common,
    parse_nvidia_csv,
    parse_rocm_smi,
)

FIX = Path(__file__).parent / "fixtures"


def test_amd_smi_merges_static_list_and_metric_by_gpu():
    """amd-smi: name and bus from static, UUID from list, readings from metric, per GPU."""
    devs = parse_amd_smi((FIX / "amd_smi_mi300x.txt").read_text())
    assert [(d.index, d.name) for d in devs] == [(0, "AMD Instinct MI300X"),
                                                 (1, "AMD Instinct MI300X")]
    d1 = devs[1]
    assert (d1.bus_id, d1.uuid) == ("0000:22:00.0", "b5ff74a1-0000-1000-8040-2c4e1d7a0a31")
    assert (d1.temp_c, d1.power_w, d1.clock_mhz, d1.util_pct) == (88, 712, 1980, 97)
    assert (d1.memory_used_mib, d1.memory_total_mib, d1.driver) == (171520, 196592, "6.8.5")


def test_rocm_smi_cards():
    """rocm-smi --json: card objects give name, unique id, bus, junction temperature, VRAM."""
    devs = parse_rocm_smi((FIX / "rocm_smi_mi300x.json").read_text())
    assert [d.index for d in devs] == [0, 1]
    d1 = devs[1]
    assert (d1.uuid, d1.bus_id, d1.temp_c, d1.power_w, d1.clock_mhz) == (
        "0x1c77a0e94d2b8f31", "0000:22:00.0", 88.0, 712.0, 1980.0)
    assert d1.memory_used_mib == pytest.approx(179851755520 / 2**20)


def test_hl_smi_columns_found_by_header():
    """hl-smi CSV with a header: every queried field lands in its record field."""
    devs = parse_hl_smi((FIX / "hl_smi_gaudi2.csv").read_text())
    assert [(d.index, d.name, d.bus_id) for d in devs] == [
        (0, "HL-225", "0000:33:00.0"), (1, "HL-225", "0000:9a:00.0")]
    assert (devs[1].temp_c, devs[1].power_w, devs[1].clock_mhz, devs[1].util_pct) == (
        74, 540, 1600, 98)
    assert devs[1].uuid == "01P0-HL2080A0-15-TNPS14-21-03-11"


def test_npu_smi_common_gives_the_current_clock():
    """npu-smi info -t common: the current AI core clock (not the rated one) and temperature."""
    got = parse_npu_smi_common((FIX / "npu_smi_common_910b.txt").read_text())
    assert got == {"clock_mhz": 1650.0, "temp_c": 71.0, "power_w": 288.1}


@pytest.mark.parametrize("parser,text", [
    (parse_amd_smi, '[{"gpu": 0}]'), (parse_amd_smi, "{not json"),
    (parse_amd_smi, "[" * 5000), (parse_rocm_smi, '{"card0": 3}'),
    (parse_hl_smi, "index, name\nx, HL-225\n"), (parse_hl_smi, "name\nHL-225\n"),
    (parse_npu_smi_common, "garbage\n")])
def test_unknown_layouts_raise_parse_error(parser, text):
    """Output in an unknown layout raises SmiParseError (reported as unreadable)."""
    with pytest.raises(SmiParseError):
        parser(text)


def test_nvidia_csv_reads_the_uuid_column_and_the_old_query():
    """The 11-field query (with uuid) and the older 10-field output both parse."""
    old = (FIX / "nvidia_smi_h20.csv").read_text()
    new = "".join(line + ", GPU-abc\n" for line in old.splitlines())
    assert [d.uuid for d in parse_nvidia_csv(old)] == [None, None]
    assert [d.uuid for d in parse_nvidia_csv(new)] == ["GPU-abc", "GPU-abc"]


def test_amd_tool_falls_back_to_rocm_smi():
    """Without amd-smi, rocm-smi lists the AMD GPUs (vendor amd, mi300x, HIP mask var)."""
    def run(argv):
        if argv[0] == "rocm-smi":
            return (FIX / "rocm_smi_mi300x.json").read_text()
        raise FileNotFoundError(argv[0])
    det = detect(run=run, nvml=None, accelerator=(None, 0), environ={})
    assert [(d.vendor, d.chip_id, d.tool) for d in det.devices] == [
        ("amd", "amd-mi300x", "rocm-smi")] * 2
    assert det.devices[0].visible_var == "HIP_VISIBLE_DEVICES"
    assert {t.tool: t.state for t in det.tools}["amd-smi"] == "absent"
