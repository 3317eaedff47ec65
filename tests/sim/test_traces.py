import pytest
from sim_helpers import data_dir

from mixfleet.errors import ConfigError
from mixfleet.sim.traces import PHILLY_SIZES, read_trace, synthetic_jobs

PHILLY = data_dir() / "traces" / "philly" / "philly_jobs_sep_oct_2017.csv"
OPENB = data_dir() / "traces" / "alibaba_openb" / "openb_pod_list_sample400.csv"
HEADER = "timestamp,duration,num_gpus,gpu_time,cluster\n"


def test_synthetic_is_seeded_and_philly_like():
    """Same seed, same jobs; sizes come from Philly's; the median duration is near 1,486 s."""
    a, b = synthetic_jobs(4000, seed=1), synthetic_jobs(4000, seed=1)
    assert a == b
    assert a != synthetic_jobs(4000, seed=2)
    assert {j.devices for j in a} <= set(PHILLY_SIZES)
    dur = sorted(j.work / j.devices for j in a)
    assert 1486 * 0.85 < dur[len(dur) // 2] < 1486 * 1.15
    assert all(x.arrival_s <= y.arrival_s for x, y in zip(a, a[1:], strict=False))


def test_philly_reader_on_small_file(tmp_path):
    """Arrivals are seconds from the first row; work = duration x GPUs."""
    p = tmp_path / "t.csv"
    p.write_text(HEADER + "2017-09-04 10:00:00,100.0,2,200.0,a\n"
                 "2017-09-04 10:01:00,50,1,50,b\n")
    jobs, info = read_trace(p)
    assert [(j.arrival_s, j.devices, j.work) for j in jobs] == [(0, 2, 200), (60, 1, 50)]
    assert info.format == "philly"


@pytest.mark.parametrize("row,field", [
    ("2017-09-04 10:00:00,abc,2,2,a", "duration"),
    ("2017-09-04 10:00:00,10,0,0,a", "num_gpus"),
    ("2017-13-04 10:00:00,10,1,10,a", "timestamp"),
])
def test_malformed_philly_row_names_file_row_and_field(tmp_path, row, field):
    """A malformed row is bad input naming the file, the row number and the field."""
    p = tmp_path / "bad.csv"
    p.write_text(HEADER + "2017-09-04 09:00:00,10,1,10,a\n" + row + "\n")
    with pytest.raises(ConfigError, match=rf"bad\.csv: row 3 field '{field}'"):
        read_trace(p)


def test_unknown_header_is_rejected(tmp_path):
    """A CSV that is neither format says which columns it expected."""
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="neither a Philly trace"):
        read_trace(p)


def test_openb_reader_skips_gpu_less_pods(tmp_path):
    """Pods without GPUs are skipped and counted; a pod's work is its run time x share."""
    p = tmp_path / "pods.csv"
    p.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
                 "creation_time,deletion_time,scheduled_time\n"
                 "a,1000,1024,1,500,,LS,Running,10,110,10\n"
                 "b,1000,1024,0,0,,LS,Running,20,30,20\n"
                 "c,1000,1024,2,1000,V100M16,LS,Running,30,90,40\n")
    jobs, info = read_trace(p)
    assert [(j.id, j.arrival_s, j.devices, j.work) for j in jobs] == [
        ("a", 0, 1, 50.0), ("c", 20, 2, 100.0)]
    assert info.skipped == 1


@pytest.mark.skipif(not PHILLY.is_file(), reason=f"real Philly trace not found at {PHILLY} "
                    "(set MIXFLEET_DATA to the shared data directory)")
def test_real_philly_trace_reads_every_job():
    """The Philly Sep-Oct 2017 trace has 52,849 jobs, sizes as documented."""
    jobs, _ = read_trace(PHILLY)
    assert len(jobs) == 52849
    sizes: dict[int, int] = {}
    for j in jobs:
        sizes[j.devices] = sizes.get(j.devices, 0) + 1
    assert sizes == PHILLY_SIZES


@pytest.mark.skipif(not OPENB.is_file(), reason=f"openb pod sample not found at {OPENB} "
                    "(set MIXFLEET_DATA to the shared data directory)")
def test_real_openb_sample_reads():
    """The 400-pod openb sample reads; kept plus skipped pods are 400."""
    jobs, info = read_trace(OPENB)
    assert len(jobs) + info.skipped == 400
    assert all(j.work > 0 for j in jobs)
