"""Emulated links: transfers between emulated ranks take the priced time of their link."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mixfleet.catalog.base import get_chip
from mixfleet.emulate.links import LinkPacer
from mixfleet.emulate.pricing import LinkPrices, transfer_s
from tests.emulate.fakeclock import FakeClock

REPO = Path(__file__).resolve().parents[2]
OPS = ("all_reduce", "all_gather", "reduce_scatter", "send")
N = 2_000_000  # bytes




def _pacer(kinds: list[str], last: float, clock: FakeClock, **kw: float) -> LinkPacer:
    """A pacer whose exchange says the last rank arrived at ``last``."""
    return LinkPacer.for_group(kinds, None, LinkPrices(**kw), clock=clock, sleep=clock.sleep,
                               exchange=lambda t: max(t, last))  # the other rank's arrival


@pytest.mark.parametrize("op", OPS)
def test_transfer_between_two_kinds_takes_the_bridge_price_from_the_last_arrival(op: str):
    """A transfer of N bytes between two kinds ends at the last rank's arrival + the
    priced time on the bridge (32 GB/s assumed), whatever the real transfer took."""
    clock = FakeClock()
    p = _pacer(["nvidia-h20", "ascend-910b"], last=0.030, clock=clock)
    assert p.link.cls == "bridge" and p.link.gbps == 32.0
    t = p.arrive()
    clock.now += 0.001  # the real gloo transfer
    priced = p.settle(op, N, t)
    assert priced == pytest.approx(transfer_s(op, N, 2, p.link))
    assert clock.now - 0.030 == pytest.approx(priced, rel=0.10)
    assert p.total_s == pytest.approx(clock.now)  # waiting for the late rank included


@pytest.mark.parametrize("op", OPS)
def test_transfer_inside_one_kind_uses_the_catalog_link(op: str):
    """Inside one kind the link is the catalog's link_gbps (H20: NVLink 900 GB/s)."""
    clock = FakeClock()
    p = _pacer(["nvidia-h20", "nvidia-h20"], last=0.0, clock=clock)
    assert (p.link.cls, p.link.origin) == ("intra", "catalog")
    assert p.link.gbps == get_chip("nvidia-h20").link_gbps.value
    p.settle(op, 9e9, p.arrive())
    assert clock.now == pytest.approx(transfer_s(op, 9e9, 2, p.link), rel=0.10)


def test_a_late_real_transfer_is_not_paid_twice():
    """When the real transfer already took longer than the price, nothing more is waited."""
    clock = FakeClock()
    p = _pacer(["nvidia-h20", "ascend-910b"], last=0.0, clock=clock)
    t = p.arrive()
    clock.now += 1.0
    p.settle("all_reduce", 1000, t)
    assert clock.now == 1.0


def test_as_model_prices_the_named_models_bytes_and_time_scale():
    """Under as_model the bytes are scaled to the named model and the time to time_scale."""
    clock = FakeClock()
    p = LinkPacer.for_group(["nvidia-h20", "kunlun-p800"], [0, 1], LinkPrices(), scale=0.01,
                            clock=clock, sleep=clock.sleep, exchange=lambda t: t)
    assert p.link.cls == "nic"
    p.model_bytes(1000.0, {"all_gather": 2.0})
    assert p.nbytes("all_gather", 10, 4) == 20_000.0
    assert p.nbytes("all_reduce", 10, 4) == 40_000.0  # the element's own size
    p.settle("all_gather", 2e9, p.arrive())
    assert clock.now == pytest.approx(0.01 * transfer_s("all_gather", 2e9, 2, p.link))


def test_real_gloo_transfers_between_two_kinds_take_the_priced_time(tmp_path: Path):
    """Two processes on gloo: an all-reduce, FSDP2's paced all-gather and reduce-scatter and
    a send of 2 MB across a 0.005 GB/s bridge each end within 10% of the priced time after
    the last rank's arrival (rank 1 arrives 40 ms late), on both ranks."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "links.json"
    procs = []
    for r in range(2):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.emulate.links_worker", str(out), str(N)], cwd=REPO,
            env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    recs = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]
    for op in OPS:
        last = max(rec[op][0] for rec in recs)
        priced = recs[0]["priced"][op]
        assert priced > 0.15
        for rec in recs:
            assert rec[op][1] - last == pytest.approx(priced, rel=0.10), (op, rec[op], priced)
