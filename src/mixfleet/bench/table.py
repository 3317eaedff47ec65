"""The throughput table (moved to :mod:`mixfleet.catalog.table`, below both ``bench``, which
writes it, and ``emulate``/``fleet``, which read it); re-exported here."""

from mixfleet.catalog.table import SCHEMA_VERSION, ThroughputRow, read_table, write_table

__all__ = ["ThroughputRow", "write_table", "read_table", "SCHEMA_VERSION"]
