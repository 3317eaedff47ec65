import pytest
from fleet_helpers import chip

from mixfleet.bench.table import ThroughputRow
from mixfleet.fleet.throughput import COMPUTE_EFF, MEMORY_EFF, ThroughputTable, roofline
from mixfleet.fleet.workloads import WORKLOAD_CLASSES, assign_classes


def test_roofline_matches_hand_computation():
    """Samples/s = 1 / max(F / (peak x eff), B / (bw x eff))."""
    w = WORKLOAD_CLASSES["llm-7b"]
    c = chip("x", tflops=200, tbps=1.0)
    t = max(w.flops_per_sample / (200e12 * COMPUTE_EFF),
            w.bytes_per_sample / (1e12 * MEMORY_EFF))
    assert roofline(w, c) == pytest.approx(1 / t)


def test_memory_bound_class_prefers_bandwidth():
    """The embedding-bound class runs faster on a high-bandwidth, low-FLOP chip."""
    fast_bw = chip("bw", tflops=150, tbps=4.0)
    fast_fl = chip("fl", tflops=990, tbps=3.35)
    rec = WORKLOAD_CLASSES["recsys"]
    llm = WORKLOAD_CLASSES["llm-7b"]
    assert roofline(rec, fast_bw) > roofline(rec, fast_fl)
    assert roofline(llm, fast_bw) < roofline(llm, fast_fl)


def test_unknown_figure_gives_no_estimate_and_says_why():
    """A chip with an unknown bandwidth gets no entry, and the reason names the figure."""
    t = ThroughputTable.build([chip("nobw", tbps=None)])
    assert t.get("cnn", "nobw") is None
    assert "hbm_tbps" in t.missing[("cnn", "nobw")]


def test_measured_row_overrides_estimate():
    """A measured row wins over the roofline estimate and keeps its origin."""
    row = ThroughputRow(workload="cnn", chip="a", batch=64, samples_per_s=1234.0,
                        step_p50_s=None, step_p90_s=None, mfu=None, peak_mem_bytes=None,
                        host="h", torch_version="2.6", date="2025-01-01", emulated=False,
                        origin="measured")
    t = ThroughputTable.build([chip("a"), chip("b")], [row])
    assert t.get("cnn", "a").samples_per_s == 1234.0
    assert t.get("cnn", "a").origin == "measured"
    assert t.get("cnn", "b").origin == "estimated"


def test_class_assignment_is_seeded():
    """The same seed gives the same classes; small jobs never get the 70B class."""
    sizes = [1] * 500 + [8] * 500
    a, b = assign_classes(sizes, 7), assign_classes(sizes, 7)
    assert a == b
    assert a != assign_classes(sizes, 8)
    assert "llm-70b" not in a[:500]
    assert "llm-70b" in a[500:]
