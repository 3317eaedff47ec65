"""Growable numeric columns and the server-side downsampling of a series (min/max per
bucket, so a spike in a million points still shows in a thousand)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["Column", "envelope", "to_json_floats"]


class Column:
    """A float64 column that grows by doubling; :meth:`view` is valid after later appends
    (a reallocation leaves old views on the old buffer)."""

    def __init__(self) -> None:
        self._buf = np.empty(1024, dtype=np.float64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def extend(self, values: Iterable[float]) -> None:
        arr = np.fromiter(values, dtype=np.float64)
        need = self._n + arr.size
        if need > self._buf.size:
            cap = self._buf.size
            while cap < need:
                cap *= 2
            grown = np.empty(cap, dtype=np.float64)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n:need] = arr
        self._n = need

    def view(self) -> np.ndarray:
        return self._buf[: self._n]


def envelope(x: np.ndarray, y: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` points of (x, y): the series itself when it is that short, else
    the minimum and the maximum of each of ``points // 2`` consecutive buckets, in order.
    NaN values are ignored unless a whole bucket is NaN."""
    n = int(x.size)
    if n <= points:
        return x, y
    buckets = max(1, points // 2)
    k = n // buckets
    main = buckets * k
    lo = np.where(np.isnan(y), np.inf, y)
    hi = np.where(np.isnan(y), -np.inf, y)
    base = np.arange(buckets) * k
    imin = base + lo[:main].reshape(buckets, k).argmin(axis=1)
    imax = base + hi[:main].reshape(buckets, k).argmax(axis=1)
    idx = np.sort(np.stack([imin, imax], axis=1), axis=1).ravel()
    if main < n:  # the remainder joins the last bucket
        rest = np.arange(main, n)
        last = np.concatenate([idx[-2:], rest])
        keep = [last[lo[last].argmin()], last[hi[last].argmax()]]
        idx = np.concatenate([idx[:-2], np.sort(np.unique(keep))])
    idx = np.unique(idx)
    return x[idx], y[idx]


def to_json_floats(a: np.ndarray, digits: int = 6) -> list[float | None]:
    """Floats for JSON: NaN and infinities become null; ``digits`` significant digits."""
    out: list[float | None] = []
    for v in a.tolist():
        if v != v or v in (math.inf, -math.inf):
            out.append(None)
        else:
            out.append(float(f"{v:.{digits}g}"))
    return out
