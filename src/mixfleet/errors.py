"""One exception tree for mixfleet.

    MixfleetError                 base of everything mixfleet raises on purpose
    ├── ConfigError               bad input: a file, a flag, a field (CLI exit code 2)
    │   ├── DeviceError           an unknown or unavailable device / backend
    │   ├── WorkloadError         an unknown workload or a user factory that misbehaves
    │   └── UnsafePathError       a run directory or a file in it that is not safe to use
    ├── CheckpointError           a checkpoint cannot be written or read
    └── LaunchError               the launcher (torchrun) failed for good

Every message names the value involved and the fix, e.g.
``checkpoint.interval must be >= 1 (got 0); set [checkpoint] interval = 50``.
"""

from __future__ import annotations


class MixfleetError(Exception):
    """Base of every error mixfleet raises on purpose."""


class ConfigError(MixfleetError):
    """Bad user input (config file, CLI flag, data file). The CLI exits with code 2."""


class DeviceError(ConfigError):
    """An unknown or unavailable device or collective backend."""


class WorkloadError(ConfigError):
    """An unknown workload, or a user factory that does not return what it must."""


class UnsafePathError(ConfigError):
    """A run directory owned by another user or writable by others, or a link (or a
    non-regular file) where a file of a run directory should be: refused, not followed."""


class CheckpointError(MixfleetError):
    """A checkpoint cannot be written, committed or read."""


class LaunchError(MixfleetError):
    """The elastic launcher gave up (restarts exhausted or the job failed)."""
