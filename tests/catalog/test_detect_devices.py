"""Detection: vendor from the tool, non-Nvidia tools first, absent/garbled tools reported."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from mixfleet.catalog.detect import detect

FIX = Path(__file__).parent / "fixtures"


def fake_runner(outputs: dict[str, str]):
    def run(argv):
        if argv[0] not in outputs:
            raise FileNotFoundError(argv[0])
        return outputs[argv[0]]
    return run


def test_kunlun_machine_cuda_devices_are_baidu():
    """On a Kunlun host the cuda devices come from xpu_smi and map to kunlun-p800."""
    run = fake_runner({"xpu_smi": (FIX / "xpu_smi_p800.txt").read_text()})
    det = detect(run=run, nvml=None, accelerator=("cuda", 2))
    assert [(d.vendor, d.chip_id, d.torch_device) for d in det.devices] == [
        ("baidu", "kunlun-p800", "cuda:0"), ("baidu", "kunlun-p800", "cuda:1")]
    states = {t.tool: t.state for t in det.tools}
    assert states["xpu_smi"] == "ok" and states["nvidia-smi"] == "absent"


def test_non_nvidia_tool_owns_cuda_before_nvidia():
    """When a PPU tool and nvidia-smi both list devices, cuda belongs to the PPU."""
    run = fake_runner({"ppu-smi": (FIX / "ppu_smi.csv").read_text(),
                       "nvidia-smi": (FIX / "nvidia_smi_h20.csv").read_text()})
    det = detect(run=run, nvml=None, accelerator=("cuda", 1))
    by_vendor = {d.vendor: d for d in det.devices}
    assert by_vendor["thead"].torch_device == "cuda:0"
    assert by_vendor["thead"].chip_id == "thead-ppu"
    assert by_vendor["nvidia"].torch_device is None


def test_garbled_tool_is_unreadable_and_others_still_detected():
    """A garbled npu-smi is reported unreadable; cnmon's devices are still found."""
    run = fake_runner({"npu-smi": (FIX / "npu_smi_garbled.txt").read_text(errors="replace"),
                       "cnmon": (FIX / "cnmon_mlu370.txt").read_text()})
    det = detect(run=run, nvml=None, accelerator=(None, 0))
    states = {t.tool: t.state for t in det.tools}
    assert states["npu-smi"] == "unreadable" and states["cnmon"] == "ok"
    assert [d.chip_id for d in det.devices] == ["cambricon-mlu370-x8"] * 2
    assert all(d.torch_device is None for d in det.devices)


def test_failing_tool_is_reported_not_raised():
    """A tool that exits non-zero is reported as failed."""
    def run(argv):
        if argv[0] == "npu-smi":
            raise RuntimeError("exit 9: dcmi module initialize failed")
        raise FileNotFoundError(argv[0])
    det = detect(run=run, nvml=None, accelerator=(None, 0))
    assert {t.tool: t.state for t in det.tools}["npu-smi"] == "failed"
    assert det.devices == ()


class FakeNvml:
    """The subset of pynvml detection uses."""

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlSystemGetDriverVersion(self):
        return "560.35.03"

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return "NVIDIA H200"

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=141 * 2**30, used=0)


def test_nvml_used_before_nvidia_smi():
    """With NVML available, Nvidia devices come from it (nvidia-smi is not asked)."""
    def run(argv):
        assert argv[0] != "nvidia-smi"
        raise FileNotFoundError(argv[0])
    det = detect(run=run, nvml=FakeNvml(), accelerator=("cuda", 1))
    (d,) = det.devices
    assert (d.chip_id, d.torch_device, d.driver, d.tool) == ("nvidia-h200", "cuda:0",
                                                             "560.35.03", "nvml")
    assert d.memory_bytes == 141 * 2**30
