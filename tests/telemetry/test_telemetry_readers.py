"""Telemetry readers and the background sampler."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from mixfleet.catalog.smi import SmiParseError
from mixfleet.errors import ConfigError
from mixfleet.telemetry import JsonlSink, NullReader, Sample, Sampler, TelemetryConfig
from mixfleet.telemetry.base import TelemetryReader
from mixfleet.telemetry.nvml import NvmlReader
from mixfleet.telemetry.smi import SmiReader

FIX = Path(__file__).parents[1] / "catalog" / "fixtures"


def runner_for(tool: str, fixture: str, calls: list | None = None):
    def run(argv):
        if calls is not None:
            calls.append(argv)
        if argv[0] != tool:
            raise FileNotFoundError(argv[0])
        return (FIX / fixture).read_text(errors="replace")
    return run


def test_npu_smi_reader_gives_samples_per_npu():
    """npu-smi telemetry: temperature, power, AICore and HBM bytes per npu:<i> device."""
    samples = SmiReader("npu-smi", run=runner_for("npu-smi", "npu_smi_info_910b.txt")).read()
    assert [s.device for s in samples] == ["npu:0", "npu:1"]
    s = samples[1]
    assert (s.chip, s.temp_c, s.power_w, s.util_pct) == ("ascend-910b", 71, 288.1, 98)
    assert s.mem_used_bytes == 61200 * 2**20 and not s.emulated


def test_smi_reader_runs_tool_at_most_once_per_interval():
    """Polls faster than min_interval_s reuse the last reading (no new process)."""
    calls: list = []
    now = [0.0]
    r = SmiReader("cnmon", run=runner_for("cnmon", "cnmon_mlu370.txt", calls),
                  min_interval_s=1.0, clock=lambda: now[0])
    r.read()
    now[0] = 0.5
    r.read()
    assert len(calls) == 1
    now[0] = 1.5
    r.read()
    assert len(calls) == 2


def test_garbled_smi_output_raises_parse_error_for_the_sampler_to_count():
    """A garbled tool output raises SmiParseError from read()."""
    r = SmiReader("npu-smi", run=runner_for("npu-smi", "npu_smi_garbled.txt"))
    with pytest.raises(SmiParseError):
        r.read()


class FakeNvml:
    def __init__(self, mask=0x20 | 0x4):
        self.mask = mask

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H20"

    def nvmlDeviceGetTemperature(self, h, kind):
        return 83

    def nvmlDeviceGetPowerUsage(self, h):
        return 395_500

    def nvmlDeviceGetClockInfo(self, h, kind):
        raise RuntimeError("NVMLError_NotSupported")

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=97, memory=40)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=96 * 2**30, used=80 * 2**30)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self.mask


def test_nvml_reader_units_and_throttle_reasons():
    """NVML: mW -> W, throttle bitmask -> names, an unsupported query -> None."""
    (s,) = NvmlReader(nvml=FakeNvml()).read()
    assert (s.device, s.chip, s.temp_c, s.power_w) == ("cuda:0", "nvidia-h20", 83, 395.5)
    assert s.clock_mhz is None and s.util_pct == 97 and s.mem_used_bytes == 80 * 2**30
    assert set(s.throttle) == {"sw-thermal", "sw-power-cap"}


class CountingReader(TelemetryReader):
    def __init__(self, fail_every: int = 0):
        self.n = 0
        self.fail_every = fail_every

    def read(self):
        self.n += 1
        if self.fail_every and self.n % self.fail_every == 0:
            raise SmiParseError("garbled")
        return [Sample(t=time.time(), device="cuda:0", chip=None, source="fake", temp_c=50.0)]


def test_sampler_polls_at_its_rate_and_survives_reader_errors(tmp_path):
    """At 50 Hz for ~0.3 s the sampler reads ~15 times; reader errors are counted, not fatal;
    the sink writes telemetry records to a JSONL file."""
    reader = CountingReader(fail_every=3)
    sink = JsonlSink(tmp_path / "metrics.jsonl")
    with Sampler(reader, hz=50, sink=sink) as sampler:
        time.sleep(0.3)
    assert 5 <= reader.n <= 20
    assert sampler.errors == reader.n // 3 and "garbled" in (sampler.last_error or "")
    drained = sampler.drain()
    assert len(drained) == sampler.reads and sampler.drain() == []
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == sampler.reads and lines[0]["kind"] == "telemetry"
    n = reader.n
    time.sleep(0.06)
    assert reader.n == n  # stopped


def test_null_reader_reads_nothing():
    """The null reader returns no samples."""
    assert NullReader().read() == []


@pytest.mark.parametrize("kw,match", [({"hz": -1.0}, "telemetry.hz"),
                                      ({"reader": "dcgm"}, "telemetry.reader")])
def test_bad_telemetry_config_is_a_config_error(kw, match):
    """Bad [telemetry] values raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match=match):
        TelemetryConfig(**kw)
