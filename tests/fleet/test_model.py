import pytest
from fleet_helpers import catalog, chip

from mixfleet.errors import ConfigError
from mixfleet.fleet.model import parse_fleet, parse_jobs

CAT = catalog(chip("a"), chip("b", vendor="huawei"))


def test_fleet_capacity_and_overrides():
    """Capacity is nodes x per_node; a reliability override replaces one figure only."""
    f = parse_fleet({"reference_chip": "a", "pool": [
        {"chip": "a", "nodes": 2, "per_node": 8},
        {"chip": "b", "nodes": 3, "per_node": 4, "reliability": {"mtbf_h": 1000}}]},
        "f.toml", CAT)
    assert [p.capacity for p in f.pools] == [16, 12]
    assert f.pools[1].reliability.mtbf_h == 1000
    assert f.pools[1].reliability.restart_s == 300
    assert "f.toml" in f.pools[1].reliability.sources["mtbf_h"]


def test_unknown_chip_names_file_pool_and_field():
    """An unknown chip id is reported with the file, the pool number and the field."""
    with pytest.raises(ConfigError, match=r"f\.toml: pool\[1\]\.chip = 'nope' is not a "
                                          r"catalog chip; use one of a, b"):
        parse_fleet({"reference_chip": "a", "pool": [
            {"chip": "a", "nodes": 1, "per_node": 1},
            {"chip": "nope", "nodes": 1, "per_node": 1}]}, "f.toml", CAT)


def test_bad_node_count_is_rejected():
    """nodes = 0 is bad input naming the field and the value."""
    with pytest.raises(ConfigError, match=r"f\.toml: pool\[0\]\.nodes must be >= 1 \(got 0\); "
                                          r"set nodes = 8 in pool\[0\]"):
        parse_fleet({"reference_chip": "a", "pool": [{"chip": "a", "nodes": 0,
                                                      "per_node": 1}]}, "f.toml", CAT)


def test_jobs_ref_hours_become_device_seconds():
    """ref_hours = 2 on 4 devices is 2 x 3600 x 4 reference device-seconds."""
    (j,) = parse_jobs({"job": [{"id": "x", "workload": "cnn", "devices": 4,
                                "ref_hours": 2}]}, "j.toml")
    assert j.work == 2 * 3600 * 4
    assert j.mem_gib == 16


def test_jobs_samples_use_reference_throughput():
    """samples / reference samples-per-second = reference device-seconds."""
    (j,) = parse_jobs({"job": [{"id": "x", "workload": "bert", "devices": 2,
                                "samples": 1000}]}, "j.toml", {"bert": 50.0})
    assert j.work == pytest.approx(20.0)


def test_bad_job_names_row_and_field():
    """A job with an unknown workload names the file, the job number and the field."""
    with pytest.raises(ConfigError, match=r"j\.toml: job\[1\]\.workload must be one of .*"
                                          r"\(got 'gpt-9'\); set workload = "):
        parse_jobs({"job": [{"workload": "cnn", "devices": 1, "ref_hours": 1},
                            {"workload": "gpt-9", "devices": 1, "ref_hours": 1}]}, "j.toml")


def test_example_files_parse():
    """The shipped examples load against the packaged catalog."""
    from pathlib import Path

    from mixfleet.fleet.model import load_fleet, load_jobs

    root = Path(__file__).resolve().parents[2] / "examples"
    mixed = load_fleet(root / "fleet-mixed.toml")
    nv = load_fleet(root / "fleet-nvidia.toml")
    assert mixed.capacity == 2000
    assert {p.chip.id for p in mixed.pools} == {"nvidia-h20", "nvidia-h800", "ascend-910b",
                                                  "kunlun-p800", "thead-ppu"}
    assert all(p.is_nvidia for p in nv.pools)
    known = sum(p.chip.peak_flops() * p.capacity for p in mixed.pools
                if p.chip.peak_flops() is not None)
    assert nv.peak_pflops() == pytest.approx(known / 1e15, rel=0.05)
    assert len(load_jobs(root / "jobs.toml")) >= 5
