"""Throughput assumptions stated in a fleet file ([pool.assumption]): derived entries are
marked assumed, bad values are rejected naming file, pool, field and value."""

import pytest
from fleet_helpers import catalog, chip

from mixfleet.errors import ConfigError
from mixfleet.fleet.model import parse_fleet
from mixfleet.fleet.speeds import assumed_pools, origin_matrix, speed_matrix
from mixfleet.fleet.throughput import ThroughputTable, roofline
from mixfleet.fleet.workloads import WORKLOAD_CLASSES

CAT = catalog(chip("ref", tflops=200, tbps=2.0), chip("nopeak", tflops=None, tbps=None,
                                                      vendor="thead"),
              chip("nobw", tflops=300, tbps=None, vendor="baidu"))


def fleet_with(assumption, pool_chip="nopeak", extra=None):
    pools = [{"id": "r", "chip": "ref", "nodes": 1, "per_node": 8},
             {"id": "x", "chip": pool_chip, "nodes": 1, "per_node": 8,
              **({"assumption": assumption} if assumption is not None else {})}]
    if extra:
        pools.append(extra)
    return parse_fleet({"reference_chip": "ref", "pool": pools}, "f.toml", CAT)


def table(f):
    return ThroughputTable.build(CAT.values(), assumptions=f.assumptions())


def test_without_assumption_the_unknown_chip_stays_idle():
    """No figures, no assumption: no entry and no speed (nothing is guessed)."""
    f = fleet_with(None)
    t = table(f)
    assert t.get("cnn", "nopeak") is None
    assert all(s[1] is None for s in speed_matrix(f, t).values())
    assert assumed_pools(f, t) == []


def test_relative_speed_scales_the_named_chip_and_is_marked_assumed():
    """relative_speed 0.6 x ref gives 0.6 x ref's samples/s on every class, origin
    'assumed', with the source in the note; the speed matrix and origins follow."""
    f = fleet_with({"relative_speed": 0.6, "relative_to": "ref", "source": "press, 2025"})
    t = table(f)
    for w in WORKLOAD_CLASSES:
        e = t.get(w, "nopeak")
        assert e is not None and e.origin == "assumed"
        assert e.samples_per_s == pytest.approx(0.6 * t.get(w, "ref").samples_per_s)
        assert "press, 2025" in e.note
    sp, om = speed_matrix(f, t), origin_matrix(f, t)
    assert all(s[1] == pytest.approx(0.6) for s in sp.values())
    assert all(o == ("estimated", "assumed") for o in om.values())
    assert assumed_pools(f, t) == [1]


def test_relative_to_defaults_to_the_reference_chip():
    f = fleet_with({"relative_speed": 0.5, "source": "s"})
    assert f.pools[1].assumption.relative_to == "ref"


def test_assumed_figure_fills_the_unknown_one_for_a_roofline():
    """An assumed hbm_tbps completes the roofline of a chip whose peak is known."""
    f = fleet_with({"hbm_tbps": 1.5, "source": "s"}, pool_chip="nobw")
    t = table(f)
    w = WORKLOAD_CLASSES["recsys"]
    e = t.get("recsys", "nobw")
    assert e.origin == "assumed"
    assert e.samples_per_s == pytest.approx(roofline(w, chip("c", tflops=300, tbps=1.5)))


def test_a_measurement_beats_the_assumption():
    from mixfleet.bench.table import ThroughputRow

    f = fleet_with({"relative_speed": 0.6, "source": "s"})
    row = ThroughputRow(workload="cnn", chip="nopeak", batch=32, samples_per_s=123.0,
                        step_p50_s=None, step_p90_s=None, mfu=None, peak_mem_bytes=None,
                        host="h", torch_version="2.6", date="2025-01-01", emulated=False,
                        origin="measured")
    t = ThroughputTable.build(CAT.values(), [row], assumptions=f.assumptions())
    assert t.get("cnn", "nopeak").origin == "measured"
    assert t.get("bert", "nopeak").origin == "assumed"


@pytest.mark.parametrize("assumption, match", [
    ({"relative_speed": 0.6}, r"f\.toml: missing required config key "
                              r"'pool\[1\]\.assumption\.source'; set source = "),
    ({"relative_speed": 0.6, "source": "  "}, r"assumption\.source"),
    ({"relative_speed": 0, "source": "s"}, r"f\.toml: pool\[1\]\.assumption\.relative_speed "
                                           r"must be in \(0, 100\] \(got 0\.0\); set "
                                           r"relative_speed = 0\.8 in pool\[1\]\.assumption"),
    ({"relative_speed": -1.5, "source": "s"}, r"relative_speed must be .* \(got -1\.5\)"),
    ({"relative_speed": True, "source": "s"}, r"relative_speed must be a number \(got True\)"),
    ({"relative_speed": float("nan"), "source": "s"}, r"relative_speed must be .* \(got nan\)"),
    ({"relative_speed": 500, "source": "s"}, r"relative_speed must be in \(0, 100\] \(got 500"),
    ({"relative_speed": "fast", "source": "s"}, r"relative_speed must be a number \(got 'fast'"),
    ({"relative_speed": 0.6, "relative_to": "h9000", "source": "s"},
     r"assumption\.relative_to = 'h9000' is not a catalog chip"),
    ({"relative_speed": 0.6, "relative_to": "nopeak", "source": "s"}, r"pool's own chip"),
    ({"relative_to": "ref", "source": "s"}, r"relative_to' is 'ref' without relative_speed"),
    ({"source": "s"}, r"states nothing"),
    ({"relative_speed": 0.6, "hbm_tbps": 2.0, "source": "s"}, r"either relative_speed or"),
    ({"hbm_tbps": 2.0, "source": "s"}, r"bf16_tflops of nopeak is unknown too"),
    ({"speed": 0.6, "source": "s"}, r"unknown config key 'pool\[1\]\.assumption\.speed'"),
    ("fast", r"\[pool\[1\]\.assumption\] must be a table \(got 'fast'\)"),
])
def test_bad_assumptions_name_file_pool_field_and_value(assumption, match):
    with pytest.raises(ConfigError, match=match):
        fleet_with(assumption)


def test_assuming_a_figure_the_catalog_knows_is_rejected():
    """Only unknown figures may be assumed; the message shows the catalog's value."""
    with pytest.raises(ConfigError, match=r"assumption\.bf16_tflops' is 250, but the "
                                          r"catalog knows bf16_tflops of nobw \(300"):
        fleet_with({"bf16_tflops": 250, "hbm_tbps": 1.0, "source": "s"}, pool_chip="nobw")


def test_pools_of_one_chip_must_agree_on_the_assumption():
    """Throughput is per chip: a second pool of the chip must state the same assumption."""
    a = {"relative_speed": 0.6, "source": "s"}
    with pytest.raises(ConfigError, match=r"pool 'y' is nopeak like a pool with a "
                                          r"\[pool.assumption\]"):
        fleet_with(a, extra={"id": "y", "chip": "nopeak", "nodes": 1, "per_node": 8})
    with pytest.raises(ConfigError, match=r"pool 'y' field 'assumption': pool 'x'"):
        fleet_with(a, extra={"id": "y", "chip": "nopeak", "nodes": 1, "per_node": 8,
                             "assumption": {"relative_speed": 0.7, "source": "s"}})
    f = fleet_with(a, extra={"id": "y", "chip": "nopeak", "nodes": 1, "per_node": 8,
                             "assumption": dict(a)})
    assert f.assumptions()["nopeak"].relative_speed == 0.6
