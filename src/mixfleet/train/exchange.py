"""Small values between ranks as JSON in uint8 tensors, never pickles (docs/security.md).

``dist.all_gather_object`` and ``dist.broadcast_object_list`` unpickle whatever a peer
sends, and gloo's sockets can be reached by other users of the machine; these two carry
JSON instead, so what arrives is data, never code. A value comes back as
``json.loads(json.dumps(value))`` (tuples as lists, dict keys as strings).
"""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["all_gather_json", "broadcast_json"]


def _device(group: Any) -> torch.device:
    """Where the group's tensors live: the host for gloo, the current accelerator else."""
    if dist.get_backend(group) == "gloo":
        return torch.device("cpu")
    acc = torch.accelerator.current_accelerator()
    if acc is None:
        return torch.device("cpu")
    return torch.device(acc.type, torch.accelerator.current_device_index())


def _encode(value: Any, device: torch.device) -> torch.Tensor:
    data = json.dumps(value, separators=(",", ":")).encode()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)


def _decode(t: torch.Tensor) -> Any:
    return json.loads(t.cpu().numpy().tobytes().decode())


def all_gather_json(value: Any, group: Any = None) -> list[Any]:
    """Every rank's ``value`` of ``group``, in rank order (a collective call)."""
    device = _device(group)
    mine = _encode(value, device)
    world = dist.get_world_size(group)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([mine.numel()], dtype=torch.int64, device=device),
                    group=group)
    lengths = [int(s.item()) for s in sizes]
    padded = torch.zeros(max(lengths), dtype=torch.uint8, device=device)
    padded[:mine.numel()] = mine
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded, group=group)
    return [_decode(t[:n]) for t, n in zip(out, lengths, strict=True)]


def broadcast_json(value: Any, src: int = 0, group: Any = None) -> Any:
    """``value`` of rank ``src`` (a global rank) on every rank of ``group`` (a collective
    call; other ranks' ``value`` is ignored)."""
    device = _device(group)
    mine = dist.get_rank() == src
    data = _encode(value, device) if mine else torch.empty(0, dtype=torch.uint8, device=device)
    size = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    dist.broadcast(size, src=src, group=group)
    if not mine:
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    dist.broadcast(data, src=src, group=group)
    return _decode(data)
