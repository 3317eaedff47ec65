"""Which physical device each rank of a job uses, and what kind of chip it is.

A rank's device string (``cuda``, ``cuda:1``, ``npu``, ``emu:kunlun-p800``, ``cpu``) does not
say the vendor: Kunlun P800, T-Head PPU and AMD present themselves as ``cuda``. The vendor
and chip come from detection (:func:`mixfleet.catalog.detect.detect`) or from the rank's
``[[ranks]] chip = "..."`` override. :func:`place_rank` turns (device string, local rank,
chip override, detection) into a :class:`RankDevice`: its torch index under the vendor's
visible-devices mask, its chip (catalog id), vendor and stable id (UUID / PCI bus id).

Ranks of one node that name a device type without an index take that type's devices in
detection order (each vendor's devices in its torch order), one per rank, so a node of
2 P800 + 2 H20 (all ``cuda``) gives local ranks 0-1 the P800s and 2-3 the H20s; with a chip
override a rank takes the next device of that chip. Use :func:`rank_placements` (every rank
at once) so that ranks of one node never share a device.

An emulated rank has no device to detect: its physical identity (``RankDevice.device_slot``, what
its saved heat belongs to) is the live fleet's ``pool/node:device`` from
``MIXFLEET_DEVICE_SLOTS`` (one entry per local device, set by the scheduler and narrowed by
the launcher when it drops a drained rank), else ``rank:<job rank>``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence

from mixfleet.catalog.detect import Detection, Device, detect
from mixfleet.errors import DeviceError

__all__ = ["RankDevice", "place_rank", "rank_placements", "local_detection", "FAKE_NODE_ENV",
           "on_fake_node", "DEVICE_SLOTS_ENV", "device_slots", "slots_env", "slots_without"]

#: Set by the fake node of the tests (tests/fakes): ranks compute on the CPU, with gloo.
FAKE_NODE_ENV = "MIXFLEET_FAKE_NODE_STATE"
#: The physical device of each local rank, comma-separated (live fleet: ``pool/node:device``).
DEVICE_SLOTS_ENV = "MIXFLEET_DEVICE_SLOTS"


def device_slots(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The local devices' physical identities from ``MIXFLEET_DEVICE_SLOTS``; None unset."""
    raw = (os.environ if environ is None else environ).get(DEVICE_SLOTS_ENV, "")
    return [x.strip() for x in raw.split(",")] if raw.strip() else None


def slots_env(slots: Sequence[tuple[str, str, int]]) -> dict[str, str]:
    """``MIXFLEET_DEVICE_SLOTS`` naming each local device ``(pool, node, device)`` in the
    order of the ranks that use them."""
    return {DEVICE_SLOTS_ENV: ",".join(f"{p}/{n}:{d}" for p, n, d in slots)}


def slots_without(environ: Mapping[str, str], drained: Sequence[int], nproc: int,
                  emulated: bool = True) -> dict[str, str]:
    """``MIXFLEET_DEVICE_SLOTS`` for a relaunch of ``nproc`` ranks without the ``drained``
    ones (job ranks), so each rank left keeps its device's identity (unset: the ranks'
    ``rank:<i>``); ``{}`` when there is no emulated rank or the list is not one per rank."""
    slots = device_slots(environ)
    if slots is None:
        slots = [f"rank:{i}" for i in range(nproc)]
    if not emulated or len(slots) != nproc:
        return {}
    return {DEVICE_SLOTS_ENV: ",".join(s for i, s in enumerate(slots) if i not in drained)}


def on_fake_node(environ: Mapping[str, str] | None = None) -> bool:
    """True on the test suite's fake node (devices described, computation on the CPU)."""
    return bool((os.environ if environ is None else environ).get(FAKE_NODE_ENV))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RankDevice:
    """The device one rank uses."""

    spec: str  # the config's device string
    torch_type: str  # cuda, npu, ... or cpu (emulated chips: the chip's own type)
    index: int | None  # torch index under the vendor's mask; None for cpu / emulated
    vendor: str | None  # None: not known (no tool lists it, no chip override)
    chip: str | None  # catalog id
    stable_id: str | None = None  # UUID, "pci:<bus>" or "index:<i>" (real devices)
    tool_index: int | None = None  # the vendor tool's index of the device
    visible_var: str | None = None  # the vendor's visible-devices variable
    emulated: bool = False
    device_slot: str | None = None  # an emulated rank's physical device (module doc)

    @property
    def kind(self) -> str:
        """Chip kind = vendor + chip: the catalog id; ``cpu``; the bare torch type when
        the vendor is unknown (``cuda`` of an unlisted vendor)."""
        if self.chip is not None:
            return self.chip
        if self.vendor is not None:
            return f"{self.vendor}-{self.torch_type}"
        return self.torch_type

    def to_dict(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "kind": self.kind}


@functools.lru_cache(maxsize=1)
def _cached_detection() -> Detection:
    return detect()


def local_detection(refresh: bool = False) -> Detection:
    """This node's detection, run once per process (the tools cost ~0.1 s each)."""
    if refresh:
        _cached_detection.cache_clear()
    return _cached_detection()


def _chip_record(chip: str) -> tuple[str, str]:
    from mixfleet.catalog.base import get_chip

    c = get_chip(chip)  # unknown id -> ConfigError naming the known ones
    return c.vendor, c.torch_device


def place_rank(spec: str, local_rank: int = 0, *, chip: str | None = None,
               detection: Detection | None = None) -> RankDevice:
    """The device of a rank whose device string is ``spec`` (see the module docstring)."""
    if spec.startswith("emu:"):
        from mixfleet.emulate import parse_emu_device

        cid = parse_emu_device(spec)
        vendor, ttype = _chip_record(cid)
        return RankDevice(spec=spec, torch_type=ttype, index=None, vendor=vendor, chip=cid,
                          emulated=True)
    ttype, _, idx = spec.partition(":")
    if ttype in ("cpu", "auto"):
        return RankDevice(spec=spec, torch_type="cpu", index=None, vendor=None, chip=None)
    want = int(idx) if idx.isdigit() else None
    det = local_detection() if detection is None else detection
    cands = [d for d in det.devices if d.torch_type == ttype and d.torch_index is not None]
    if chip is not None:
        vendor, chip_type = _chip_record(chip)
        if chip_type != ttype:
            raise DeviceError(f"ranks.chip {chip!r} is a {chip_type!r} device, but the rank's "
                              f"device is {spec!r}; set device = \"{chip_type}\" or fix chip")
        cands = [d for d in cands if d.chip_id == chip or (d.chip_id is None
                                                          and d.vendor == vendor)]
    elif cands:
        owner = cands[0].vendor  # one vendor owns an indexed device string
        if want is not None:
            cands = [d for d in cands if d.vendor == owner]
    vendors = list(dict.fromkeys(d.vendor for d in cands))  # detection order
    cands.sort(key=lambda d: (vendors.index(d.vendor), d.torch_index or 0))
    hit: Device | None
    if want is not None:
        hit = next((d for d in cands if d.torch_index == want), None)
    else:
        hit = cands[local_rank % len(cands)] if cands else None
    if hit is None:  # no tool lists it: trust the override, or leave the vendor unknown
        index = want if want is not None else local_rank
        known = _chip_record(chip)[0] if chip is not None else None
        return RankDevice(spec=spec, torch_type=ttype, index=index, vendor=known, chip=chip)
    return RankDevice(spec=spec, torch_type=ttype, index=hit.torch_index, vendor=hit.vendor,
                      chip=chip or hit.chip_id, stable_id=hit.stable_id, tool_index=hit.index,
                      visible_var=hit.visible_var)


def rank_placements(devices: Sequence[str], *, chips: Sequence[str | None] | None = None,
                    local_world: int | None = None, detection: Detection | None = None,
                    slots: Sequence[str] | None = None) -> list[RankDevice]:
    """Every rank's :class:`RankDevice` as this node sees it (rank ``r`` has local rank
    ``r % local_world``; default: torchrun's ``LOCAL_WORLD_SIZE``, else every rank on this
    node). ``slots``: the local devices' identities (default: :func:`device_slots`; a list
    that is not one per local rank is ignored)."""
    env_lw = os.environ.get("LOCAL_WORLD_SIZE", "")
    n = local_world or (int(env_lw) if env_lw.isdigit() else 0) or len(devices) or 1
    ch = list(chips) if chips is not None else [None] * len(devices)
    needs_tools = any(not d.startswith(("emu:", "cpu", "auto")) for d in devices)
    det = detection if detection is not None or not needs_tools else local_detection()
    if det is None:
        det = Detection(devices=(), tools=(), accelerator=None, accelerator_count=0)
    ids = list(slots) if slots is not None else device_slots()
    if ids is not None and len(ids) != n:
        ids = None
    out = []
    for r, (d, c) in enumerate(zip(devices, ch, strict=True)):
        # the rank's slot: its order among this node's ranks of the same device and chip,
        # so [[ranks]] chips = [p800, h20, p800, h20] give P800 #0, H20 #0, P800 #1, H20 #1
        node0 = r - r % n
        slot = sum(1 for q in range(node0, r) if (devices[q], ch[q]) == (d, c))
        p = place_rank(d, slot, chip=c, detection=det)
        if p.emulated:
            p = dataclasses.replace(p, device_slot=ids[r % n] if ids is not None
                                    else f"rank:{r}")
        out.append(p)
    return out
