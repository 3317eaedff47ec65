"""A fake multi-chip node: vendor tools and NVML that describe devices from a state file.

``FakeNode(root, ["nvidia-h20", "nvidia-h20", "kunlun-p800", "kunlun-p800"])`` writes

* ``root/state.json``: one entry per device (chip, UUID, PCI bus id, temperature, clock,
  power, utilization, memory, ``failed``) plus ``tool_errors`` (tool name -> message: that
  tool exits 9 printing it);
* ``root/bin/``: executables ``nvidia-smi``, ``ppu-smi``, ``npu-smi``, ``xpu_smi``,
  ``xpu-smi``, ``amd-smi``, ``rocm-smi``, ``hl-smi`` (small Python scripts);
* ``root/pylib/pynvml.py``: a fake ``pynvml`` module.

:meth:`FakeNode.env` gives the environment that puts them first (``PATH``, ``PYTHONPATH``,
``MIXFLEET_FAKE_NODE_STATE``); :meth:`FakeNode.activate` does the same in this process
(pytest's ``monkeypatch``). :meth:`FakeNode.set` rewrites a device's readings atomically
while things run. Each vendor's tool numbers its own devices from 0 in the order given.

By hand::

    python -m tests.fakes.node /tmp/node nvidia-h20 nvidia-h20 kunlun-p800 kunlun-p800
    export PATH=/tmp/node/bin:$PATH PYTHONPATH=/tmp/node/pylib \\
           MIXFLEET_FAKE_NODE_STATE=/tmp/node/state.json
    mixfleet devices
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.fakes.tools import CHIPS, TOOL_VENDOR

HERE = Path(__file__).resolve().parent
TOOLS = tuple(TOOL_VENDOR)
STATE_ENV = "MIXFLEET_FAKE_NODE_STATE"

__all__ = ["FakeNode", "TOOLS", "STATE_ENV"]


def _uuid(chip: str, i: int) -> str:
    h = hashlib.sha256(f"{chip}/{i}".encode()).hexdigest()
    prefix = "GPU-" if chip.startswith("nvidia-") else ""
    return f"{prefix}{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class FakeNode:
    """N devices of chosen kinds (catalog chip ids) on a fake node under ``root``."""

    def __init__(self, root: str | Path, chips: Sequence[str], *, temp_c: float = 40.0,
                 clock_mhz: float = 1800.0) -> None:
        self.root = Path(root)
        self.bin = self.root / "bin"
        self.pylib = self.root / "pylib"
        self.state_path = self.root / "state.json"
        unknown = [c for c in chips if c not in CHIPS]
        if unknown:
            raise ValueError(f"fake node: unknown chips {unknown}; known: {sorted(CHIPS)}")
        self.bin.mkdir(parents=True, exist_ok=True)
        self.pylib.mkdir(parents=True, exist_ok=True)
        devices = [{"chip": c, "name": CHIPS[c][1], "uuid": _uuid(c, i),
                    "bus_id": f"0000:{0x18 + 0x11 * i:02x}:00.0", "temp_c": temp_c,
                    "clock_mhz": clock_mhz, "power_w": 90.0, "util_pct": 0.0,
                    "mem_used_mib": 1.0, "mem_total_mib": 98304, "failed": False}
                   for i, c in enumerate(chips)]
        self.state: dict[str, Any] = {"devices": devices, "tool_errors": {}}
        self._write()
        vendors = {CHIPS[c][0] for c in chips}
        for tool in TOOLS:
            if TOOL_VENDOR[tool] not in vendors:
                continue  # a vendor's tool is installed only where its devices are
            exe = self.bin / tool
            exe.write_text(f"#!{sys.executable} -S\nimport os, sys\n"
                           f"os.environ.setdefault({STATE_ENV!r}, {str(self.state_path)!r})\n"
                           f"sys.path.insert(0, {str(HERE)!r})\n"
                           f"from tools import main\nsys.exit(main({tool!r}))\n")
            exe.chmod(0o755)
        shutil.copyfile(HERE / "pylib" / "pynvml.py", self.pylib / "pynvml.py")

    # -- state ---------------------------------------------------------------------------
    def _write(self) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.state_path)

    @property
    def devices(self) -> list[dict[str, Any]]:
        return list(self.state["devices"])

    def set(self, i: int, **fields: Any) -> None:
        """Change device ``i``'s readings (node order), e.g. ``set(2, temp_c=92.0)``."""
        bad = set(fields) - set(self.state["devices"][i])
        if bad:
            raise KeyError(f"fake node: unknown device fields {sorted(bad)}")
        self.state["devices"][i].update(fields)
        self._write()

    def fail_tool(self, tool: str, message: str | None = "error: driver not loaded") -> None:
        """Make ``tool`` exit 9 with ``message`` (None: work again)."""
        if message is None:
            self.state["tool_errors"].pop(tool, None)
        else:
            self.state["tool_errors"][tool] = message
        self._write()

    # -- environment ---------------------------------------------------------------------
    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default os.environ) with the fake tools and NVML first."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.pylib),
                                                        env.get("PYTHONPATH")) if p)
        env[STATE_ENV] = str(self.state_path)
        return env

    @contextmanager
    def activated(self) -> Iterator[FakeNode]:
        """Put the fake tools and NVML first in this process (restored afterwards)."""
        old_env = {k: os.environ.get(k) for k in ("PATH", "PYTHONPATH", STATE_ENV)}
        os.environ.update({k: v for k, v in self.env().items() if k in old_env})
        sys.path.insert(0, str(self.pylib))
        old_mod = sys.modules.pop("pynvml", None)
        try:
            yield self
        finally:
            sys.path.remove(str(self.pylib))
            sys.modules.pop("pynvml", None)
            if old_mod is not None:
                sys.modules["pynvml"] = old_mod
            for k, v in old_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit("usage: python -m tests.fakes.node DIR CHIP [CHIP ...]")
    node = FakeNode(sys.argv[1], sys.argv[2:])
    print(f"export PATH={node.bin}:$PATH PYTHONPATH={node.pylib} "
          f"{STATE_ENV}={node.state_path}")
