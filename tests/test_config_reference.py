"""`mixfleet train --help-config` lists every key a run config accepts, each with help."""

from __future__ import annotations

import subprocess
import sys

from mixfleet.config import reference
from mixfleet.train.config import RunConfig


def test_every_key_of_a_run_config_is_listed_with_its_help() -> None:
    """Nested sections expand; lists of tables show as [[key]]; no key lacks a help text."""
    ref = {key: (default, text) for key, default, _, text in reference(RunConfig)}
    assert ref["train.steps"][0] == "(required)"
    assert ref["emulate.bridge_gbps"][0] == "32.0"
    assert "[[ranks]].device" in ref
    assert all(text for _, text in ref.values()), [k for k, (_, t) in ref.items() if not t]


def test_help_config_prints_the_reference_and_exits_0() -> None:
    """The flag works without a config file, as --help does."""
    out = subprocess.run([sys.executable, "-P", "-m", "mixfleet", "train", "--help-config"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "checkpoint.interval = " in out.stdout


def test_help_config_lists_every_declared_bound() -> None:
    """A field's bounds, declared once on the field, appear in the reference beside it."""
    bounds = {key: b for key, _, b, _ in reference(RunConfig)}
    assert bounds["train.steps"] == ">= 1" and bounds["train.momentum"] == "in [0, 1)"
    assert bounds["[[ranks]].speed"] == "in (0, 1]"
    assert bounds["launch.backend"].startswith('one of "auto", "gloo"')
    assert bounds["train.optimizer"] == 'one of "sgd", "adamw"'  # a Literal type's values
    out = subprocess.run([sys.executable, "-P", "-m", "mixfleet", "train", "--help-config"],
                         capture_output=True, text=True, timeout=60).stdout
    assert "train.steps = (required)  (>= 1)" in out
