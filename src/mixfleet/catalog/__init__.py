"""Chip catalog (a data file) and vendor/device detection."""

from mixfleet.catalog.base import Chip, Figure, get_chip, load_catalog, match_chip

__all__ = ["Chip", "Figure", "get_chip", "load_catalog", "match_chip"]
