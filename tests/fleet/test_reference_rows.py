"""A throughput row is a ratio to the reference chip's figure: rows without one are left
out with a one-line reason, or bridged to the catalog roofline only when asked."""

from fleet_helpers import catalog, chip, fleet

from mixfleet.bench.table import ThroughputRow
from mixfleet.fleet.speeds import origin_matrix, speed_matrix
from mixfleet.fleet.throughput import ThroughputTable, roofline
from mixfleet.fleet.workloads import WORKLOAD_CLASSES

CAT = catalog(chip("ref", tflops=400, tbps=3.0), chip("b", tflops=100, tbps=1.0),
              chip("nofig", tflops=None, tbps=None))


def row(c: str, sps: float, origin: str = "measured", workload: str = "cnn") -> ThroughputRow:
    return ThroughputRow(workload=workload, chip=c, batch=32, samples_per_s=sps,
                         step_p50_s=None, step_p90_s=None, mfu=None, peak_mem_bytes=None,
                         host="h", torch_version="2.6", date="2026-01-01",
                         emulated=origin == "emulated", origin=origin)


def test_row_without_reference_row_is_not_used_and_says_why():
    """Without a cnn row of the reference chip, b's cnn row is left out (b keeps its roofline
    figure, exactly as with no rows) and its reason is one line naming both chips and both
    fixes."""
    t = ThroughputTable.build(CAT.values(), [row("b", 5.0)], reference="ref")
    plain = ThroughputTable.build(CAT.values(), reference="ref")
    assert t.get("cnn", "b") == plain.get("cnn", "b")
    assert t.get("cnn", "b").origin == "estimated"
    assert t.unused == {("cnn", "b"): "b cnn row (measured) not used: no cnn row for the "
                        "reference chip ref; bench it too, or pass --reference-from catalog"}
    assert t.bridged == {}


def test_row_beside_reference_row_is_used():
    """With the reference chip's row for the class, the row is used: speed is the ratio of
    the two rows, origin measured, nothing reported as unused."""
    t = ThroughputTable.build(CAT.values(), [row("b", 5.0), row("ref", 20.0)], reference="ref")
    f = fleet([("ref", 8), ("b", 8)], CAT)
    assert t.unused == {} and t.bridged == {}
    assert speed_matrix(f, t)["cnn"] == (1.0, 0.25)
    assert origin_matrix(f, t)["cnn"] == ("measured", "measured")


def test_reference_from_catalog_bridges_with_a_label():
    """--reference-from catalog keeps b's row against the reference chip's roofline; the
    speed's origin says measured/estimated and the bridge is listed."""
    t = ThroughputTable.build(CAT.values(), [row("b", 5.0)], reference="ref",
                              reference_from="catalog")
    f = fleet([("ref", 8), ("b", 8)], CAT)
    est = roofline(WORKLOAD_CLASSES["cnn"], CAT["ref"])
    assert t.unused == {}
    assert "--reference-from catalog" in t.bridged[("cnn", "b")]
    assert speed_matrix(f, t)["cnn"][1] == 5.0 / est
    assert origin_matrix(f, t)["cnn"] == ("estimated", "measured/estimated")
    # other classes of b, without rows, are untouched
    assert origin_matrix(f, t)["bert"] == ("estimated", "estimated")


def test_emulated_row_is_never_bridged():
    """An emulated row is not compared with a roofline even with --reference-from catalog;
    its reason says to bench the emulated reference chip in the same run."""
    t = ThroughputTable.build(CAT.values(), [row("b", 0.7, "emulated")], reference="ref",
                              reference_from="catalog")
    assert t.bridged == {} and t.get("cnn", "b").origin == "estimated"
    assert "bench emu:ref in the same run" in t.unused[("cnn", "b")]


def test_bridge_needs_a_roofline_of_the_reference_chip():
    """A reference chip without catalog figures cannot bridge: the row is left out, and the
    reason says so."""
    t = ThroughputTable.build(CAT.values(), [row("b", 5.0)], reference="nofig",
                              reference_from="catalog")
    assert t.bridged == {}
    assert "catalog has no roofline for nofig" in t.unused[("cnn", "b")]


def test_without_reference_rows_are_kept_as_before():
    """Callers that name no reference chip get every row, as before."""
    t = ThroughputTable.build(CAT.values(), [row("b", 5.0)])
    assert t.get("cnn", "b").samples_per_s == 5.0 and t.unused == {}
