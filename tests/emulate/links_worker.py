"""One rank of the emulated-links test (started by tests/emulate/test_links.py with RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT set): paces an all-reduce, an all-gather and a
reduce-scatter (FSDP2's custom comms) and a send of ``N`` bytes between two chip kinds on a
slow bridge, rank 1 arriving ``SKEW`` s late, and writes each transfer's arrival and end.

    python -m tests.emulate.links_worker OUT_JSON N_BYTES
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
import torch.distributed as dist

from mixfleet.emulate.links import LinkPacer
from mixfleet.emulate.pricing import LinkPrices
from mixfleet.train.parallel.fsdp import paced_comms

SKEW = 0.04
PRICES = LinkPrices(bridge_gbps=0.005)  # 5 MB/s: 1 MB takes 200 ms


def main(out: str, nbytes: int) -> None:
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    pacer = LinkPacer.for_group(["nvidia-h20", "kunlun-p800"], None, PRICES,
                                group=dist.new_group(backend="gloo"))
    gather, scatter = paced_comms(pacer)
    n = nbytes // 4
    rec = {}

    def run(op: str, fn) -> None:  # noqa: ANN001
        dist.barrier()
        if rank == 1:
            time.sleep(SKEW)
        t = time.monotonic()
        fn()
        rec[op] = [t, time.monotonic()]

    def all_reduce() -> None:
        x = torch.ones(n)
        with pacer.paced("all_reduce", pacer.nbytes("all_reduce", n, 4)):
            dist.all_reduce(x)
        assert float(x[0]) == 2.0

    def send() -> None:
        x = torch.full((n,), float(rank))
        with pacer.paced("send", pacer.nbytes("send", n, 4)):
            if rank == 0:
                dist.send(x, dst=1)
            else:
                dist.recv(x, src=0)
        assert float(x[-1]) == 0.0

    run("all_reduce", all_reduce)
    run("all_gather", lambda: gather(torch.empty(n), torch.ones(n // 2), dist.group.WORLD))
    run("reduce_scatter", lambda: scatter(torch.empty(n // 2), torch.ones(n),
                                          dist.group.WORLD, dist.ReduceOp.SUM))
    run("send", send)
    rec["priced"] = {op: pacer.price(op, nbytes) for op in
                     ("all_reduce", "all_gather", "reduce_scatter", "send")}
    rec["comm_s"] = pacer.total_s
    with open(f"{out}.{rank}", "w") as f:
        json.dump(rec, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
