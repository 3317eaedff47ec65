"""Measure workloads on devices and keep the results as a throughput table.

Modules: :mod:`.table` (the table schema, JSON/CSV), :mod:`.runner` (measurement),
:mod:`.mlp` (the ``mlp-matmul`` workload with closed-form FLOPs), :mod:`.compare`,
:mod:`.chart`, :mod:`.output`, :mod:`.classes` and :mod:`.planner` (``--class``),
:mod:`.llamaclass` (``--class llama``: per-component rows for the pipeline's split).
Import them directly: this package imports only the table so that :mod:`mixfleet.emulate`
can read tables without importing the runner.
"""

from mixfleet.bench.table import SCHEMA_VERSION, ThroughputRow, read_table, write_table

__all__ = ["SCHEMA_VERSION", "ThroughputRow", "read_table", "write_table"]
