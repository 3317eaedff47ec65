"""Emulated chips ``emu:<chip-id>``: the real computation on the CPU, made to look like the chip.

An emulated device imposes three things on a step that really runs on the CPU, all seeded
so a run repeats exactly, and everything it produces is marked ``emulated``:

* **relative speed** - each step is padded to a calibrated *time budget*:
  ``budget = base x headroom / (speed x clock_factor)``. ``base`` is the median compute
  time of the first ``calibration_steps`` steps, lowered whenever the median of as many
  recent steps is lower (a calibration under start-up contention does not pad the whole
  run), never raised (or fixed by :meth:`EmulatedDevice.calibrate`);
  ``speed`` is the chip's throughput relative to the fastest emulated chip in the job, from a
  measured throughput table when it covers the chips, else from the catalog's BF16 peaks.
  Padding to a budget (not adding a fixed sleep) keeps the speed right when several
  emulated ranks share the CPU cores: contention only eats into the padding. ``headroom``
  (default 1.5 x max(1, ranks / cores)) leaves room for that contention.
* **heat** - :class:`ThermalModel`: temperature follows load with a time constant; past the
  throttle point the clock drops (steps get slower by ``1 / throttle_clock``) until it cools;
  near the limit a crash hazard rises.
* **failures** - a constant hazard from the chip's MTBF.

Heat and hazards run on *virtual* time: each step advances it by ``virtual_step_s``, so the
thermal trajectory and the fault steps depend only on the seed, never on wall-clock noise.
Per-chip parameters live in ``profiles.toml`` (``[default]`` + ``[chips.<id>]``).

API for a trainer - one line per step::

    from mixfleet.emulate import EmulatedDevice, EmulationConfig, EmulatedFault

    emu = EmulatedDevice.create("emu:kunlun-p800", peers=all_rank_devices,
                                config=EmulationConfig(seed=cfg.seed, local_ranks=nproc,
                                                       attempt=restart_count), rank=rank)
    model.to(emu.torch_device)              # always "cpu"
    for batch in batches:
        with emu.step():                    # pads to the budget; raises EmulatedFault
            loss = step(model, batch)       #   at the end of a step that crashed
        events.extend(emu.drain_events())   # throttle-start / -end, thermal-crash, failure

``step_begin()`` / ``step_end() -> StepReport`` do the same in two calls. After an
:class:`EmulatedFault` the device stays dead (every later step raises); a restarted worker
builds a new device with ``attempt`` + 1 so it does not replay the same fault, and may
restore heat with ``load_state_dict``. ``idle(virtual_s)`` lets a paused chip cool.
``snapshot()`` gives thread-safe telemetry (see :class:`mixfleet.telemetry.EmulatedReader`).

Modules (step costs, links and ``as_model``: ``docs/emulation.md``)::

    device.py   EmulatedDevice: pads a step to its budget, heat, faults
    profile.py  per-chip parameters (profiles.toml): thermal, hazard, step-cost shape
    speed.py    relative speeds from a throughput table or the catalog
    thermal.py  the seeded thermal and failure model
    pricing.py  pure prices: StepCost, link classes, transfer times
    links.py    LinkPacer: paces transfers between emulated ranks to their price
    asmodel.py  as_model: a named model's shape, memory need and per-chip pace
    stagepace.py a pipeline's chunks paced at their chip's time

Modules:

    device.py    EmulatedDevice: pads each step to its budget, heat, faults, calibration
    records.py   StepReport and EmuSnapshot (what a device reports)
    profile.py   per-chip parameters (profiles.toml): heat, hazards, step-cost shape
    pricing.py   the step-cost shape and the link classes' prices (shared with the cost model);
                 EmulateConfig, the [emulate] table of a run config
    links.py     LinkPacer: emulated transfers paced to their priced time
    asmodel.py   as_model: pace a small model as a named large one; its memory need
    speed.py     relative speeds of emulated chips; thermal.py the thermal model
"""

from mixfleet.emulate.device import EmulatedDevice, EmulatedFault, EmulationConfig
from mixfleet.emulate.profile import EmuProfile, get_profile, load_profiles
from mixfleet.emulate.records import EmuSnapshot, StepReport
from mixfleet.emulate.speed import is_emulated, parse_emu_device, relative_speeds
from mixfleet.emulate.thermal import ThermalModel, ThermalState

__all__ = ["EmulatedDevice", "EmulatedFault", "EmulationConfig", "EmuSnapshot", "StepReport",
           "EmuProfile", "get_profile", "load_profiles", "is_emulated", "parse_emu_device",
           "relative_speeds", "ThermalModel", "ThermalState"]
