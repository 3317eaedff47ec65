"""RNG states (python, numpy, torch, device) as JSON-able values, for the manifest."""

from __future__ import annotations

import base64
import random
from typing import Any

import numpy as np
import torch

__all__ = ["get_rng_state", "set_rng_state", "raw_rng_state", "set_raw_rng_state"]


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def get_rng_state(device: torch.device) -> dict[str, Any]:
    """The python, numpy, torch (and device) RNG states as JSON-able values."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)
    out: dict[str, Any] = {
        "python": [version, list(state), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    if device.type != "cpu":
        out["device"] = {"type": device.type,
                         "state": _b64(torch.get_device_module(device).get_rng_state(device))}
    return out


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    version, st, gauss = state["python"]
    random.setstate((version, tuple(st), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    dev = state.get("device")
    if dev and device.type == dev["type"]:
        torch.get_device_module(device).set_rng_state(_unb64(dev["state"]), device)


def raw_rng_state(device: torch.device) -> dict[str, Any]:
    """RNG states as JSON-safe values (lists, ints, floats, base64 strings), for memory
    snapshots: nothing in them is unpickled on the way back."""
    return get_rng_state(device)


def set_raw_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`raw_rng_state` returned (a malformed state raises ValueError)."""
    try:
        set_rng_state(state, device)
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"malformed RNG state ({type(e).__name__}: {e})") from None
