"""mixfleet: train AI models on a mixed fleet of accelerators without losing work."""

__version__ = "0.1.0"

from mixfleet.errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    DeviceError,
    LaunchError,
    MixfleetError,
    UnsafePathError,
    WorkloadError,
)

__all__ = [
    "__version__",
    "MixfleetError",
    "ConfigError",
    "CheckpointError",
    "DeviceError",
    "LaunchError",
    "WorkloadError",
    "UnsafePathError",
]
