"""The fleet on a real (local, loopback-only) Ray head: placement, the visible-devices
variable, loopback ports, token authentication, private files, clean shutdown."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mixfleet.live.auth import AUTH_VARS
from mixfleet.live.head import head_pids, ray_env
from mixfleet.live.scheduler import run_dir
from mixfleet.live.store import Store

from .conftest import write_job
from .raytools import (
    bound_addresses,
    is_loopback,
    job_state,
    listening,
    live_fleet,
    submit,
    wait_for,
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    yield from live_fleet(tmp_path_factory)


def test_ray_head_listens_on_loopback_only_and_declares_the_pools(
        fleet: tuple[Path, Any]) -> None:
    """Every port of the fleet's Ray processes is on 127.0.0.1; the raylet declares each
    pool's emulated chips as a custom resource."""
    d, state = fleet
    pids = head_pids(state["mark"], state["temp_dir"])
    addrs = listening(pids)
    assert addrs, "the Ray head listens nowhere?"
    bad = [a for a in addrs if not a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:"))]
    assert bad == []
    cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes() for p in pids
                if Path(f"/proc/{p}/cmdline").exists()]
    raylet = [c for c in cmdlines if b"--static_resource_list" in c]
    assert raylet and all(f"{r},2".encode() in raylet[0] for r in
                          ("chip:emu:nvidia-h20", "chip:emu:kunlun-p800",
                           "chip:emu:ascend-910b"))


_GCS_PROBE = """
import sys
from ray._raylet import GcsClient
address, cluster_id = sys.argv[1], sys.argv[2]
try:  # the attack's write: an entry in Ray's key-value store (where actor classes live)
    c = GcsClient(address=address, cluster_id=cluster_id or None)
    c.internal_kv_put(b"mixfleet-probe", b"x", True, b"fun", timeout=10)
except Exception as e:
    print("REFUSED", type(e).__name__, e)
    sys.exit(3)
print("ACCEPTED", c.cluster_id.hex())
"""


def _gcs_probe(address: str, cluster_id: str, env: dict[str, str]
               ) -> subprocess.CompletedProcess:
    """A Ray GCS client in its own process writing to the KV store (``cluster_id`` empty:
    fetched from the GCS, as `ray.init` does)."""
    return subprocess.run([sys.executable, "-P", "-c", _GCS_PROBE, address, cluster_id],
                          env=env, capture_output=True, text=True, timeout=120)


def test_ray_head_refuses_clients_without_its_token_and_keeps_its_files_private(
        fleet: tuple[Path, Any], tmp_path: Path) -> None:
    """A Ray client without the fleet's token, or with another one, is refused by the GCS
    before it can write Ray's key-value store; with the token it gets in. The fleet
    directory is 0700, its token and database 0600, Ray's temp directory lies in a 0700
    parent of the user's, and every port of the head is bound to loopback."""
    d, state = fleet
    token = Path(state["ray_token"])
    assert token.parent == d
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for f in [token, d / "fleet.db", d / "fleet.db-wal", d / "fleet.db-shm"]:
        if f != token and not f.exists():
            continue
        st = f.lstat()
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, f
    assert len(token.read_text()) == 64
    parent = Path(state["temp_dir"]).parent
    st = parent.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.getuid() and len(list(Path(state["temp_dir"]).iterdir())) > 0

    pids = head_pids(state["mark"], state["temp_dir"])
    bound = bound_addresses(pids)
    port = int(state["address"].rsplit(":", 1)[1])
    assert port in {p for _, p in bound}, bound  # the GCS
    assert [a for a in bound if not is_loopback(a[0])] == []

    r = _gcs_probe(state["address"], "", {**ray_env(None, token), "HOME": str(tmp_path)})
    assert r.returncode == 0 and "ACCEPTED" in r.stdout, r.stdout + r.stderr[-2000:]
    cluster_id = r.stdout.split()[-1]  # given to the others: only the token may be missing
    bare = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    bare["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    wrong = {**bare, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}
    for env in (bare, wrong):
        r = _gcs_probe(state["address"], cluster_id, env)
        assert r.returncode == 3 and "InvalidAuthToken" in r.stdout, r.stdout + r.stderr[-2000:]


_OTHER_USER = """
import os, sys
token, parent = sys.argv[1], sys.argv[2]
for what, f in (("token", lambda: open(token).read()), ("temp", lambda: os.listdir(parent))):
    try:
        f()
        print("READ", what)
    except PermissionError:
        print("DENIED", what)
"""


def test_another_local_user_can_neither_read_the_token_nor_enter_rays_temp_dir(
        fleet: tuple[Path, Any]) -> None:
    """As a throwaway uid (setpriv, root only): the token file and Ray's temp directory
    are closed to it, and its GCS client, lacking the token, is refused."""
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as another user")
    d, state = fleet
    parent = Path(state["temp_dir"]).parent
    other = ["setpriv", "--reuid", "54321", "--regid", "54321", "--clear-groups", "--"]
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env["HOME"] = "/nonexistent"
    # pytest's directories above the fleet are 0700 already: a hard link in /tmp leaves
    # only the token file's own mode in the way
    link = Path(tempfile.mkdtemp()) / "token"
    link.parent.chmod(0o755)
    os.link(state["ray_token"], link)
    try:
        r = subprocess.run([*other, sys.executable, "-P", "-c", _OTHER_USER, str(link),
                            str(parent)], env=env, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(link.parent)
    assert r.stdout.split() == ["DENIED", "token", "DENIED", "temp"], r.stdout + r.stderr
    probe = subprocess.run([*other, sys.executable, "-P", "-c", "import ray"], env=env,
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:  # a checkout in a private directory: its .venv is closed too
        pytest.skip(f"another uid cannot import ray from {sys.prefix} (a private checkout); "
                    f"the refusal of a client without the token is checked as this user")
    r = subprocess.run([*other, sys.executable, "-P", "-c", _GCS_PROBE, state["address"],
                        secrets.token_hex(28)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 3 and "InvalidAuthToken" in r.stdout, r.stdout + r.stderr[-2000:]


_DRIVER = """
import os, sys
import ray  # imported before the token is known, as in `fleet down`
from mixfleet.live.control import load_state, make_backend
make_backend(sys.argv[1], load_state(sys.argv[1]))
print("NODES", len(ray.nodes()))
"""


def test_a_driver_in_a_process_without_the_token_env_connects_with_the_fleets_token(
        fleet: tuple[Path, Any], tmp_path: Path) -> None:
    """The CLI's own driver (`make_backend`, e.g. in `fleet down`) authenticates with the
    fleet's token even when Ray was imported before and the environment has none."""
    d, _ = fleet
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env.update(HOME=str(tmp_path), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    r = subprocess.run([sys.executable, "-P", "-c", _DRIVER, str(d)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "NODES 1" in r.stdout, r.stdout + r.stderr[-2000:]


@pytest.mark.slow
def test_submitted_job_runs_in_a_placement_group_with_its_visible_devices(
        fleet: tuple[Path, Any], tmp_path: Path) -> None:
    """A submitted job is placed, runs `mixfleet train` on an emulated pool with the
    visible-devices variable naming its device, and completes with summary.json."""
    d, _ = fleet
    jid = submit(d, write_job(tmp_path / "one.toml", steps=8))
    store = Store(d)

    def train_pid() -> Any:
        atts = store.attempts(jid)
        return atts and atts[-1].handle.get("pids") and atts[-1]

    a = wait_for(train_pid, 90, "the attempt to start")
    env = dict(kv.split(b"=", 1) for kv in
               Path(f"/proc/{a.handle['pids'][0]}/environ").read_bytes().split(b"\0") if kv)
    assert env[b"MIXFLEET_EMU_VISIBLE_DEVICES"] == str(a.slots[0][1]).encode()
    assert env[b"MIXFLEET_POOL"] == a.pool.encode()
    assert env[b"MIXFLEET_DEVICE_SLOTS"] == f"{a.pool}/{a.slots[0][0]}:{a.slots[0][1]}".encode()
    assert a.handle["kind"] == "ray" and a.handle["worker_pids"]
    wait_for(lambda: job_state(d, jid) in ("done", "failed"), 120, "the job to end")
    assert job_state(d, jid) == "done"
    summary = json.loads((run_dir(d, jid) / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["emulated"] is True
    chips = {"h20": "nvidia-h20", "p800": "kunlun-p800", "910b": "ascend-910b"}
    assert summary["device"] == f"emu:{chips[a.pool]}"


_WAITER = """
import json, sys, time
from pathlib import Path
from mixfleet.live.backend import Bundle
from mixfleet.live.control import load_state, make_backend
d = Path(sys.argv[1])
state = load_state(d)
be = make_backend(d, state)
pool = state.fleet.pools[0]
b = Bundle(node=pool.id + "/0", devices=(0,), argv=("-c", "import time; time.sleep(1)"), env={})
h = be.start(990, pool, [b], d / "wait-test.log", state["mark"] + ":wait-test")
t0 = time.monotonic()
woke = be.wait([h], 25.0)
dt = time.monotonic() - t0
st = be.poll(h)
t1 = time.monotonic()
again = be.wait([h], 0.5)
dt2 = time.monotonic() - t1
be.stop(h)
print(json.dumps({"woke": woke, "dt": dt, "state": st.state, "rc": st.rc, "again": again,
                  "dt2": dt2}))
"""


def test_ray_backend_wait_wakes_when_the_attempts_process_exits(
        fleet: tuple[Path, Any]) -> None:
    """`RayBackend.wait` returns when an attempt's process exits (the actor's `wait_exit`
    call, beside its `poll`), well before its 25 s timeout (and the actor's 30 s bound on
    one call), and that end does not wake a second wait."""
    d, _ = fleet
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    r = subprocess.run([sys.executable, "-P", "-c", _WAITER, str(d)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["woke"] and out["dt"] < 15, out
    assert (out["state"], out["rc"]) == ("exit", 0), out
    assert not out["again"] and out["dt2"] >= 0.45, out
