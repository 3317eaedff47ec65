"""Job files and submissions: validation, and concurrent submits."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from mixfleet.cli import main
from mixfleet.live.spec import load_job
from mixfleet.live.store import Store

from .conftest import DIGITS, fleet3, write_job

BAD = [
    ("[job]\ndevices = 1\n", "config"),
    (f'[job]\nconfig = "{DIGITS}"\n', "devices"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 1\ncolour = "red"\n', "colour"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 0\n', "devices"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 3\n', "devices"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 1\npool = "a100"\n', "pool"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 1\nchips = ["nvidia-a100"]\n', "chips"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 1\nset = ["train.steps=-5"]\n', "steps"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 1\nset = ["train.colour=1"]\n', "colour"),
    ('[job]\nconfig = "missing.toml"\ndevices = 1\n', "config"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 1\nmax_restarts = -1\n', "max_restarts"),
    ("[job\n", "TOML"),
    (f'[job]\nconfig = "{DIGITS}"\nmin_devices = 2\nmax_devices = 1\n', "min_devices"),
    (f'[job]\nconfig = "{DIGITS}"\nmin_devices = 0\nmax_devices = 2\n', "min_devices"),
    (f'[job]\nconfig = "{DIGITS}"\nmax_devices = 3\n', "max_devices"),
    (f'[job]\nconfig = "{DIGITS}"\nmax_devices = 2\nrestart_s = -1\n', "restart_s"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 1\nmin_devices = 2\n', "devices"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 1\nkinds = ["nvidia-h999"]\n', "kinds"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 1\nkinds = ["nvidia-a100"]\n', "kinds"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 1\nkinds = []\n', "kinds"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 1\npool = "h20"\n'
     'kinds = ["nvidia-h20", "kunlun-p800"]\n', "kinds"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 1\nchips = ["nvidia-h20"]\n'
     'kinds = ["nvidia-h20", "kunlun-p800"]\n', "kinds"),
    (f'[job]\nconfig = "{DIGITS}"\ndevices = 5\nkinds = ["nvidia-h20", "kunlun-p800"]\n',
     "devices"),
]


@pytest.mark.parametrize("text,field", BAD)
def test_bad_job_file_exits_2_naming_the_field_and_enqueues_nothing(
        fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
        field: str) -> None:
    """A bad job file (syntax, unknown field, bad value, unknown pool or chip, more devices
    than any pool has) exits 2 with one message naming the field; no job is enqueued."""
    job = tmp_path / "bad.toml"
    job.write_text(text)
    assert main(["submit", str(job), "--dir", str(fleet_dir)]) == 2
    err = capsys.readouterr().err
    assert field in err and err.count("\n") == 1, err
    assert Store(fleet_dir).jobs() == []


def test_elastic_job_file_reads_its_size_range_and_kinds(tmp_path: Path) -> None:
    """min_devices/max_devices/kinds are read; devices defaults to max_devices; a job
    without a range is not elastic."""
    job = tmp_path / "e.toml"
    job.write_text(f'[job]\nconfig = "{DIGITS}"\nmin_devices = 1\nmax_devices = 2\n'
                   f'kinds = ["kunlun-p800", "ascend-910b"]\n')
    s = load_job(job, fleet3())
    assert (s.devices, s.lo, s.hi, s.elastic) == (2, 1, 2, True)
    assert s.kinds == ("kunlun-p800", "ascend-910b")
    assert [p.id for p in fleet3().pools if s.fits(p)] == ["p800", "910b"]
    plain = load_job(write_job(tmp_path / "p.toml", devices=2), fleet3())
    assert (plain.lo, plain.hi, plain.elastic) == (2, 2, False)
    ex = load_job(DIGITS.parent / "job-llama-elastic.toml", fleet3())
    assert (ex.workload, ex.lo, ex.hi, ex.devices) == ("llama", 1, 2, 2)


def test_submit_prints_an_id_and_status_shows_the_job(
        fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`submit` prints the new job's id; `status JOB --json` shows it queued."""
    import json

    assert main(["submit", str(write_job(tmp_path / "a.toml")), "--dir", str(fleet_dir)]) == 0
    jid = capsys.readouterr().out.strip()
    assert main(["status", jid, "--dir", str(fleet_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["job"], doc["state"], doc["devices"]) == (jid, "queued", 1)
    assert main(["status", "job-9999", "--dir", str(fleet_dir)]) == 2


def _submit_many(args: tuple[str, str, int]) -> list[str]:
    d, job, n = args
    store = Store(d)
    spec = load_job(job, fleet3())
    return [store.submit(spec) for _ in range(n)]


def test_fifty_concurrent_submits_lose_nothing_and_duplicate_no_id(
        fleet_dir: Path, tmp_path: Path) -> None:
    """50 submits from 10 processes at once: 50 jobs in SQLite, 50 distinct ids, each
    returned id is a stored job."""
    job = str(write_job(tmp_path / "j.toml"))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(10) as pool:
        ids = [i for chunk in pool.map(_submit_many, [(str(fleet_dir), job, 5)] * 10)
               for i in chunk]
    stored = [j.id for j in Store(fleet_dir).jobs()]
    assert len(ids) == 50 and len(set(ids)) == 50
    assert sorted(stored) == sorted(ids)


def test_ray_resources_count_detected_chips_by_catalog_id() -> None:
    """`devices --ray-resources` declares one chip:<id> resource per catalog chip, counting
    its devices, and leaves out devices the catalog does not know."""
    from mixfleet.catalog.detect import Detection, Device
    from mixfleet.cli.catalog import ray_resources

    def dev(i: int, chip: str | None) -> Device:
        return Device(index=i, vendor="baidu", name=f"P800 #{i}", chip_id=chip,
                      memory_bytes=None, driver=None, torch_device=f"cuda:{i}", tool="xpu-smi")

    det = Detection(devices=(dev(0, "kunlun-p800"), dev(1, "kunlun-p800"), dev(2, None)),
                    tools=(), accelerator="cuda", accelerator_count=3)
    res, skipped = ray_resources(det)
    assert res == {"chip:kunlun-p800": 2} and skipped == ["baidu P800 #2"]


def test_a_bad_value_in_a_job_file_is_refused_by_the_typed_loader(
        fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[job] is read by the loader of run configs: a value out of a declared bound exits 2
    with its standard message (file, field, value, fix), and nothing is enqueued."""
    job = tmp_path / "bad.toml"
    job.write_text(f'[job]\nconfig = "{DIGITS}"\ndevices = 1\nmem_gib = -4\n')
    assert main(["submit", str(job), "--dir", str(fleet_dir)]) == 2
    err = capsys.readouterr().err.strip().removeprefix("mixfleet: error: ")
    assert err == f"{job}: job.mem_gib must be >= 0 (got -4.0); set [job] mem_gib = 0.0"
    assert Store(fleet_dir).jobs() == []
