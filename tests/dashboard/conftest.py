"""Fixtures of the dashboard tests: a real emulated training run (once per session),
synthetic run directories, a bench table, a results.json, servers and a browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("MIXFLEET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(os.environ.get("MIXFLEET_SCREENSHOTS", REPO / "build" / "screenshots"))
TOKEN = "t0ken-for-tests-0123456789"
"""The token of the in-process test servers (the CLI's servers generate their own)."""


def step_record(step: int, t: float, loss: float = 1.0, step_s: float = 0.01) -> dict:
    return {"step": step, "loss": loss, "lr": 0.05, "step_s": step_s,
            "samples_per_s": 64 / step_s, "t": t}


def write_jsonl(path: Path, records: list[dict[str, Any]], mode: str = "w") -> None:
    with path.open(mode) as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def make_synthetic_run(root: Path, n_steps: int = 40, t0: float = 1000.0) -> Path:
    """A small run: launch, start, steps with telemetry of two emulated chips."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text('[workload]\nname = "digits-cnn"\n[train]\nsteps = 500\n'
                                      '[launch]\nnproc = 2\ndevice = "emu:kunlun-p800"\n')
    write_jsonl(root / "events.jsonl", [
        {"t": t0, "event": "launch", "nproc": 2},
        {"t": t0 + 0.5, "event": "worker_start", "rank": 0, "attempt": 0,
         "device": "emu:kunlun-p800"},
        {"t": t0 + 0.5, "event": "worker_start", "rank": 1, "attempt": 0,
         "device": "emu:kunlun-p800"},
        {"t": t0 + 1.0, "event": "run_start", "attempt": 0, "steps_lost": 0},
        {"t": t0 + 1.0, "event": "fleet", "devices": ["emu:kunlun-p800"] * 2,
         "shares": [32, 32]},
        {"t": t0 + 1.2, "event": "shares_changed", "step": 20, "old": [32, 32],
         "new": [40, 24], "reason": "rebalance"}])
    recs: list[dict] = []
    for s in range(1, n_steps + 1):
        recs.append(step_record(s, t0 + 1.0 + 0.01 * s, loss=2.0 / s))
        if s % 5 == 0:
            recs.append({"kind": "telemetry", "t": t0 + 1.0 + 0.01 * s,
                         "device": "emu:kunlun-p800", "chip": "kunlun-p800",
                         "source": "emulated", "temp_c": 40.0 + s, "emulated": True})
    write_jsonl(root / "metrics.jsonl", recs)
    return root


def results_doc() -> dict[str, Any]:
    """A results.json in the layout sim/report.py writes (schema 1)."""
    def pol(name: str, avg: float, util: float) -> dict[str, Any]:
        return {"policy": name, "jobs_total": 10, "jobs_completed": 10, "jobs_unplaceable": 0,
                "jct_avg_s": avg, "jct_p50_s": avg * 0.8, "jct_p99_s": avg * 3,
                "makespan_s": 90000.0, "queue_delay_avg_s": 60.0,
                "utilization": {"h20": util, "p800": util / 2},
                "nvidia_device_hours": 120.0, "non_nvidia_work_share": 0.25,
                "goodput_lost_device_hours": 3.0, "failures": 2, "assumed_work_share": 0.1,
                "unplaceable": []}
    return {"schema": 1,
            "fleet": {"name": "test-fleet", "reference_chip": "nvidia-h20", "pools": [
                {"id": "h20", "chip": "nvidia-h20", "devices": 8, "nvidia": True,
                 "throughput_origin": {"cnn": "measured"}, "assumption": None},
                {"id": "p800", "chip": "kunlun-p800", "devices": 8, "nvidia": False,
                 "throughput_origin": {"cnn": "assumed"},
                 "assumption": {"relative_speed": 0.8, "source": "a test"}}]},
            "trace": "synthetic:10", "seed": 0, "failures": True, "throttles": True,
            "migration_s": 60.0,
            "policies": [pol("fifo", 7200.0, 0.5), pol("goodput", 3600.0, 0.7)]}


def write_bench_table(path: Path) -> None:
    from mixfleet.bench.table import ThroughputRow, write_table

    common = {"workload": "digits-cnn", "batch": 64, "step_p50_s": 0.01, "step_p90_s": 0.02,
              "mfu": None, "peak_mem_bytes": None, "host": "test",
              "torch_version": "2.13.0", "date": "2026-11-30T00:00:00"}
    write_table([ThroughputRow(chip="cpu", samples_per_s=1000.0, emulated=False,
                               origin="measured", **common),
                 ThroughputRow(chip="kunlun-p800", samples_per_s=2500.0, emulated=True,
                               origin="emulated", **common)], path)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `mixfleet train` run on two emulated H20s: rank 1 overheats at step 10 (the
    guard cools it), rank 0 is killed at step 20 (the launcher restarts the group)."""
    run = tmp_path_factory.mktemp("trained") / "emu-kill-heat"
    cmd = [sys.executable, "-m", "mixfleet", "train", str(REPO / "examples/digits-cnn.toml"),
           "--nproc", "2", "--device", "emu:nvidia-h20", "--run-dir", str(run),
           "--set", "train.steps=30", "--set", "train.log_every=10",
           "--set", "checkpoint.interval=10", "--set", "telemetry.hz=10",
           "--set", "faults.inject=['overheat@rank=1,step=10','kill@rank=0,step=20']"]
    env = {**os.environ, "MIXFLEET_PROGRESS": "plain"}
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    return run


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory, trained_run: Path) -> Path:
    """A RUNS_DIR as a user has it: the trained run, a small synthetic run that the tests
    append to (the 'live' run), a run with a corrupt line, a pipeline run's stages, a bench
    table and a simulation's results.json."""
    root = tmp_path_factory.mktemp("site")
    shutil.copytree(trained_run, root / "runs" / trained_run.name)
    make_synthetic_run(root / "runs" / "live")
    bad = make_synthetic_run(root / "runs" / "corrupt")
    with (bad / "metrics.jsonl").open("a") as f:
        f.write('{"step": 41, "loss": \n')
        f.write(json.dumps(step_record(42, 1001.5)) + "\n")
    pipe = make_synthetic_run(root / "runs" / "pipeline")
    write_jsonl(pipe / "events.jsonl", [{
        "t": 1001.0, "event": "stages", "attempt": 0, "microbatches": 32, "lanes": 2,
        "schedule": "1f1b", "virtual_stages": 1, "stage_mode": "fsdp", "bubble": 0.0303,
        "basis": "predicted", "order": [0, 1],
        "stages": [{"chip": "kunlun-p800", "ranks": 1, "blocks": 7, "predicted_s": 0.84,
                    "predicted_gib": 49.0},
                   {"chip": "nvidia-h20", "ranks": 1, "blocks": 9, "predicted_s": 0.85,
                    "predicted_gib": 60.1}]},
        {"t": 1002.0, "event": "stage_times", "step": 10, "steps": 10,
         "measured_s": [0.91, 0.875], "bubble": 0.052, "emulated": True}], mode="a")
    write_bench_table(root / "bench" / "throughput.json")
    (root / "sim").mkdir()
    (root / "sim" / "results.json").write_text(json.dumps(results_doc()))
    return root


def _wait_http(url: str, token: str | None, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    while True:
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                r.read()
            return
        except Exception:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


class CliServer:
    """`mixfleet dashboard` started as a user starts it, on a free port."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "mixfleet", "dashboard", *args],
                                     cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "http://" not in line:
            self.stop()
            raise AssertionError(f"no URL printed: {line!r} {self.proc.stderr.read()!r}")
        self.url = line.split(" on ", 1)[1].strip()
        self.base = self.url.split("?", 1)[0].rstrip("/")
        self.token = self.url.split("?token=", 1)[1] if "?token=" in self.url else None
        self.port = int(self.base.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in (self.proc.stdout, self.proc.stderr):
            if s is not None:
                s.close()


@pytest.fixture(scope="session")
def cli_server(site: Path) -> Iterator[CliServer]:
    """The dashboard over ``site`` started by its CLI with default host (port 0)."""
    srv = CliServer([str(site), "--port", "0", "--refresh", "0.5"])
    try:
        _wait_http(srv.base + "/api/info", srv.token)
        yield srv
    finally:
        srv.stop()


class ThreadServer:
    """The app served by uvicorn in a thread of the test process (fast to start)."""

    def __init__(self, **cfg: Any) -> None:
        import uvicorn

        from mixfleet.dashboard.app import create_app
        from mixfleet.dashboard.config import DashboardConfig
        from mixfleet.dashboard.server import bind

        self.config = DashboardConfig(port=0, **{"token": TOKEN, **cfg})
        self.sock = bind(self.config)
        host, self.port = self.sock.getsockname()[:2]
        self.base = f"http://{host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.config),
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        end = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < end, "server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def thread_server() -> Iterator[Any]:
    """A factory of in-process servers, stopped after the test."""
    made: list[ThreadServer] = []

    def make(**cfg: Any) -> ThreadServer:
        s = ThreadServer(**cfg)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET",
        token: str | None = TOKEN) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request, carrying ``token`` as a Bearer header unless
    ``headers`` carry credentials or ``token`` is None; HTTP errors are returned."""
    h = dict(headers or {})
    if token is not None and not {"Authorization", "Cookie"} & h.keys():
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        body = e.read()
        e.close()
        return e.code, dict(e.headers), body


def get_json(url: str, headers: dict[str, str] | None = None,
             token: str | None = TOKEN) -> Any:
    status, _, body = get(url, headers, token=token)
    assert status == 200, (url, status, body[:300])
    return json.loads(body)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright; skipped where either is missing."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install -y "
                    f"chromium; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need playwright (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
