"""``mixfleet dashboard``: a local, read-only web app over runs, chips, simulations and the
live fleet (docs/dashboard.md). The web app is in :mod:`mixfleet.dashboard.app`, the
socket and uvicorn in :mod:`mixfleet.dashboard.server`."""

from mixfleet.dashboard.config import DashboardConfig, is_loopback

__all__ = ["DashboardConfig", "is_loopback"]
