"""A 2-rank run on one machine: no socket beyond loopback, no rendezvous port, no module
from the working directory (docs/security.md).

One run is started from a directory holding a planted ``typing_extensions.py`` (torch
imports it at start, so any process that puts the working directory on ``sys.path`` would
run it); rank 0 pauses at a step (a short ``hang`` fault) while every process of the run,
the launcher included, is sampled from /proc.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES
from tests.sockets import Bound, bound_sockets, descendants, exposed

PLANTED = "typing_extensions.py"
# writes the marker, then hands over to the real module (so the run goes on either way)
PLANTED_CODE = """import importlib, sys
open({marker!r}, "a").write("ran\\n")
del sys.modules[__name__]
sys.path[:] = [p for p in sys.path if p not in ("", {cwd!r})]
globals().update(importlib.import_module(__name__).__dict__)
"""


def _sample(cwd: Path, run: Path, launches: list[list[str]]) -> dict[str, Any]:
    """Start the launchers in ``cwd``; sample their process trees' sockets while rank 0
    pauses (a hang fault at step 5); wait for them to end."""
    procs = [subprocess.Popen(
        [sys.executable, "-P", "-m", "mixfleet", "train", str(EXAMPLES / "digits-cnn.toml"),
         "--run-dir", str(run), "--json", "--set", "train.steps=8",
         "--set", "checkpoint.interval=100", "--set", "health.hang_floor_s=60",
         "--set", "faults.inject=['hang@rank=0,step=5,seconds=4']", *extra],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for extra in launches]
    socks: list[Bound] = []
    pids: set[int] = set()
    store_dirs: list[str] = []
    try:
        end = time.monotonic() + 120
        events = run / "events.jsonl"
        while time.monotonic() < end and all(p.poll() is None for p in procs):
            if events.exists() and '"fault_injected"' in events.read_text():
                break
            time.sleep(0.1)
        for _ in range(5):  # while rank 0 pauses, every process of the run is alive
            tree = [q for p in procs for q in descendants(p.pid)]
            pids.update(tree)
            socks += bound_sockets(tree)
            store_dirs += [p.name for p in run.glob("rendezvous-*")]
            time.sleep(0.3)
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return {"socks": socks, "pids": pids, "store_dirs": store_dirs,
            "summary": json.loads(outs[0][0].strip().splitlines()[-1])}


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 2-rank run from a directory with a planted module, sampled while it runs."""
    cwd = tmp_path_factory.mktemp("cwd")
    marker = cwd / "planted-module-ran"
    (cwd / PLANTED).write_text(PLANTED_CODE.format(marker=str(marker), cwd=str(cwd)))
    run = cwd / "run"
    # -P: as the installed `mixfleet` script starts, with the working directory off sys.path
    return {**_sample(cwd, run, [["--nproc", "2"]]), "marker": marker, "run": run}


def test_no_socket_of_a_two_rank_run_is_bound_beyond_loopback(sampled):
    """Every socket of the launcher, torchrun and both ranks is bound to a loopback address
    (none to 0.0.0.0, ::, or the machine's other addresses): no rendezvous or store port
    and no collective listens where other machines reach it."""
    socks = sampled["socks"]
    assert len(sampled["pids"]) >= 4  # launcher, torchrun, two ranks
    assert socks, "no socket seen: gloo's loopback pair sockets should be there"
    assert not exposed(socks), exposed(socks)
    assert all(s.loopback for s in socks), [s for s in socks if not s.loopback]


def test_the_rendezvous_is_a_private_file_removed_after_the_run(sampled):
    """The stores live in a private directory of the run while it runs and are removed
    when it ends."""
    assert sampled["store_dirs"], "no rendezvous directory seen while the run was alive"
    run: Path = sampled["run"]
    assert not list(run.glob("rendezvous-*"))
    assert sampled["summary"]["steps"] == 8


def test_no_module_from_the_working_directory_is_imported(sampled):
    """A module planted in the directory the run starts from is imported by no process of
    the run (launcher, torchrun, ranks): its marker file stays absent."""
    assert not sampled["marker"].exists()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["c10d", "static"])
def test_two_nodes_on_this_machine_stay_on_loopback(tmp_path, backend):
    """Two launchers meeting at a loopback rendezvous address (a live fleet's job over two
    nodes of one machine; torchrun's c10d or static backend): the rendezvous store, rank 0's
    store and gloo are all bound to loopback, though torch's own stores would listen on
    every interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    meet = (["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id",
             "two-nodes"] if backend == "c10d"
            else ["--master-addr", "127.0.0.1", "--master-port", str(port)])
    nodes = [["--nproc", "1", "--nnodes", "2", "--node-rank", str(i), *meet] for i in range(2)]
    got = _sample(tmp_path, tmp_path / "run", nodes)
    assert got["summary"]["world_size"] == 2
    assert any(s.port == port and s.listening for s in got["socks"])  # the agent's store
    assert not exposed(got["socks"]), exposed(got["socks"])
    assert all(s.loopback for s in got["socks"])


@pytest.mark.parametrize(("args", "want"), [
    (["--rdzv-endpoint", "127.0.0.1:29400"], True), (["--rdzv_endpoint=localhost:1"], True),
    (["--rdzv-endpoint=[::1]:29400"], True), (["--master-addr", "127.0.0.2"], True),
    (["--rdzv-endpoint", "10.0.0.5:29400"], False), (["--rdzv-endpoint=head:29400"], False),
    (["--nnodes", "2"], False)])
def test_a_loopback_endpoint_is_recognised(args, want):
    """Several "nodes" of one machine (a loopback rendezvous address) keep their collectives
    on loopback; any other address keeps torch's defaults."""
    from mixfleet.train.rendezvous import endpoint_is_loopback, launcher_env

    assert endpoint_is_loopback(args) is want
    env = launcher_env(None, loopback=endpoint_is_loopback(args))
    assert (env.get("GLOO_SOCKET_IFNAME") == "lo") is want
    assert env["PYTHONSAFEPATH"] == "1"


def test_a_host_name_that_resolves_to_loopback_here_is_refused(tmp_path, monkeypatch, capsys):
    """A multi-machine endpoint whose name resolves to loopback on this node (/etc/hosts
    mapping the machine's name to 127.0.1.1) would bind the store where no other node
    reaches it: exit 2 naming the host and the fix, nothing written."""
    from mixfleet.cli import main

    real = socket.getaddrinfo

    def fake(host, *a, **kw):  # type: ignore[no-untyped-def]
        if host == "headnode":
            return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.1.1", 1))]
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    run = tmp_path / "run"
    rc = main(["train", str(EXAMPLES / "digits-cnn.toml"), "--run-dir", str(run), "--nproc",
               "1", "--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "headnode:29400"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'headnode'" in err and "127.0.1.1" in err and "--rdzv-endpoint 10." in err
    assert not run.exists()


def test_the_local_address_is_the_one_on_the_route_to_the_endpoint(monkeypatch):
    """This node's address towards a loopback endpoint is 127.0.0.1 (several nodes of one
    machine); towards an unresolvable name there is none (torch then reports the name)."""
    from mixfleet.train.rendezvous import local_addr_towards

    def unresolvable(*a, **kw):  # type: ignore[no-untyped-def]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    assert local_addr_towards("127.0.0.1") == "127.0.0.1"
    assert local_addr_towards("localhost") == "127.0.0.1"
    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)  # no DNS query leaves
    assert local_addr_towards("no-such-host.invalid") is None
