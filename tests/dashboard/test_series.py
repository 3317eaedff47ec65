"""Growable columns and min/max downsampling."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mixfleet.dashboard.series import Column, envelope, to_json_floats


def test_a_short_series_is_returned_unchanged() -> None:
    """At most ``points`` points: the series comes back as it is."""
    x = np.arange(10.0)
    y = np.sin(x)
    xs, ys = envelope(x, y, 10)
    assert np.array_equal(xs, x) and np.array_equal(ys, y)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(101, 5000), points=st.integers(10, 100), seed=st.integers(0, 10**6))
def test_envelope_keeps_every_buckets_extremes(n: int, points: int, seed: int) -> None:
    """Downsampled to ``points``: at most that many points, in order, and every bucket's
    minimum and maximum (hence the global ones) are among them."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.random(n))
    y = rng.normal(size=n)
    xs, ys = envelope(x, y, points)
    assert xs.size <= points + 2 and np.all(np.diff(xs) > 0)
    assert y.max() in ys and y.min() in ys
    buckets = points // 2
    k = n // buckets
    for b in range(buckets - 1):  # the last bucket also holds the remainder
        seg = y[b * k:(b + 1) * k]
        assert seg.max() in ys and seg.min() in ys


def test_a_spike_among_a_million_points_survives() -> None:
    """One spike in 1,000,000 points is still there in 1,000."""
    y = np.ones(1_000_000)
    y[654_321] = 50.0
    xs, ys = envelope(np.arange(1_000_000, dtype=float), y, 1000)
    assert ys.size <= 1000 and ys.max() == 50.0 and xs[ys.argmax()] == 654_321


def test_nan_values_are_skipped_unless_a_bucket_is_all_nan() -> None:
    """NaN never hides a real extreme; JSON gets null for NaN."""
    y = np.full(1000, np.nan)
    y[500] = 3.0
    y[10] = -1.0
    xs, ys = envelope(np.arange(1000.0), y, 100)
    assert 3.0 in ys and -1.0 in ys
    assert to_json_floats(np.array([np.nan, np.inf, 1.23456789]), 4) == [None, None, 1.235]


def test_column_views_stay_valid_while_it_grows() -> None:
    """A view taken before appends keeps its values; the column holds everything."""
    c = Column()
    c.extend(range(1000))
    v = c.view()
    c.extend(range(1000, 5000))
    assert np.array_equal(v, np.arange(1000.0))
    assert np.array_equal(c.view(), np.arange(5000.0)) and len(c) == 5000
