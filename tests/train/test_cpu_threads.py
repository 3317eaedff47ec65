"""Intra-op CPU threads per rank: the host's cores over its ranks, unless the fleet (or a
user) fixes the number with ``MIXFLEET_CPU_THREADS``."""

from __future__ import annotations

import os

import pytest

from mixfleet.errors import ConfigError
from mixfleet.train.device import THREADS_VAR, cpu_threads


def test_the_variable_fixes_the_threads_whatever_the_ranks(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """With MIXFLEET_CPU_THREADS=1 a one-rank job takes one thread, not every core (a live
    fleet's emulated jobs share the host); unset, the cores are split over the ranks."""
    monkeypatch.delenv(THREADS_VAR, raising=False)
    cores = len(os.sched_getaffinity(0))
    assert cpu_threads(1) == cores
    assert cpu_threads(cores * 2) == 1
    monkeypatch.setenv(THREADS_VAR, "1")
    assert cpu_threads(1) == 1
    monkeypatch.setenv(THREADS_VAR, "3")
    assert cpu_threads(8) == 3


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_a_bad_value_names_the_variable_and_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                    bad: str) -> None:
    """A value that is not a positive integer raises ConfigError naming the variable."""
    monkeypatch.setenv(THREADS_VAR, bad)
    with pytest.raises(ConfigError, match=f"{THREADS_VAR}='{bad}'.*positive integer"):
        cpu_threads(1)
