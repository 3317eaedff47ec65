"""Small values between ranks travel as JSON, never as pickles."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mixfleet.train.exchange import all_gather_json, broadcast_json

VALUES = [{"rank": 0, "steps": [1, 2, 3], "t": (1.5, "x")}, ["é", None, True, {"3": [4]}],
          {"per_rank": {"rng": [7] * 1000}}]


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (Path(self.marker),))  # type: ignore[return-value]


def _worker(rank: int, world: int, init: str, out: str, marker: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    gathered = all_gather_json(VALUES[rank])
    sent = broadcast_json(VALUES[2] if rank == 2 else "ignored", src=2)
    # rank 1 speaks the same wire format with a pickle that would write the marker
    refused = False
    if rank == 1:
        payload = torch.frombuffer(bytearray(pickle.dumps(_Payload(marker))), dtype=torch.uint8)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([payload.numel()]))
        padded = torch.zeros(int(max(sizes).item()), dtype=torch.uint8)
        padded[:payload.numel()] = payload
        dist.all_gather([torch.empty_like(padded) for _ in range(world)], padded)
    else:
        try:
            all_gather_json("ok")
        except ValueError:
            refused = True
    (Path(out) / f"r{rank}.json").write_text(json.dumps({"gathered": gathered, "sent": sent,
                                                          "refused": refused}))
    dist.destroy_process_group()


def test_gather_and_broadcast_give_every_rank_the_json_of_each_value(tmp_path):
    """all_gather_json returns every rank's value in rank order and broadcast_json the
    source's value, both as JSON round-trips them (tuples as lists), on every rank; a
    pickle a peer sends in their place is refused, never unpickled (its marker stays absent)."""
    world, marker = 3, tmp_path / "marker"
    mp.start_processes(_worker, args=(world, f"file://{tmp_path / 'store'}", str(tmp_path),
                                      str(marker)), nprocs=world, join=True,
                       start_method="fork")
    want = json.loads(json.dumps(VALUES))
    for r in range(world):
        got = json.loads((tmp_path / f"r{r}.json").read_text())
        assert got["gathered"] == want
        assert got["sent"] == want[2]
        assert got["refused"] is (r != 1)
    assert not marker.exists()
