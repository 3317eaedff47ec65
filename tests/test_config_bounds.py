"""Bounds declared on config fields (``field(..., ge=1)``): the typed loader and every
construction enforce them with one message form naming the field, the value and the fix."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from mixfleet.cli import main
from mixfleet.config import Section, field, from_dict, require
from mixfleet.errors import ConfigError
from tests.train.helpers import DIGITS

#: The form of every refusal of a value out of its declared bounds.
STANDARD = re.compile(r"(?P<field>\S+) must be (?P<bound>.+) \(got (?P<value>.+)\); "
                      r"set (?P<fix>.+)$")


@dataclasses.dataclass(kw_only=True, frozen=True)
class _Knobs(Section, section="knobs"):
    count: int = field(4, help="how many", ge=1)
    ratio: float = field(0.5, help="a fraction", gt=0, lt=1)
    kind: str = field("a", help="which", choices=("a", "b"))
    sizes: list[int] = field([1], help="sizes", ge=1)
    limit: float | None = field(None, help="optional", gt=0, example=2.0)

    def __post_init__(self) -> None:
        require(100 % self.count == 0, f"knobs.count must divide 100 (got {self.count})")


@pytest.mark.parametrize(("data", "message"), [
    ({"count": 0}, "knobs.count must be >= 1 (got 0); set [knobs] count = 4"),
    ({"ratio": 1.0}, "knobs.ratio must be in (0, 1) (got 1.0); set [knobs] ratio = 0.5"),
    ({"kind": "c"}, "knobs.kind must be one of \"a\", \"b\" (got 'c'); set [knobs] kind = \"a\""),
    ({"sizes": [2, 0]}, "knobs.sizes must be >= 1 (got 0 in [2, 0]); set [knobs] sizes = [1]"),
    ({"limit": -1.0}, "knobs.limit must be > 0 (got -1.0); set [knobs] limit = 2.0"),
])
def test_a_bound_declared_on_a_field_is_enforced_by_the_loader(data: dict[str, Any],
                                                               message: str) -> None:
    """The loader refuses a value out of a field's declared bounds with the standard
    message (field, value, fix), and building the config in code refuses it alike."""
    with pytest.raises(ConfigError) as loaded:
        from_dict(_Knobs, data, prefix="knobs")
    assert str(loaded.value) == message and STANDARD.fullmatch(message)
    with pytest.raises(ConfigError) as built:
        _Knobs(**data)
    assert str(built.value) == message


def test_bounds_hold_before_the_class_checks_that_relate_fields() -> None:
    """The class's own __post_init__ runs on values within bounds only (count = 0 never
    reaches its 100 % count), and still refuses what it checks; a non-finite number is
    out of any numeric bound; in-bounds values pass."""
    with pytest.raises(ConfigError, match="divide 100"):
        _Knobs(count=3)
    with pytest.raises(ConfigError, match=r"knobs\.ratio must be in \(0, 1\) \(got inf\)"):
        _Knobs(ratio=float("inf"))
    assert _Knobs(count=5, sizes=[3], limit=None).count == 5


def test_the_loader_names_a_nested_value_by_its_place_in_the_file() -> None:
    """A list entry is named by its index, and the fix says where to set it."""
    @dataclasses.dataclass(kw_only=True, frozen=True)
    class Outer(Section):
        knobs: list[_Knobs] = field([], help="entries")

    with pytest.raises(ConfigError) as e:
        from_dict(Outer, {"knobs": [{}, {"ratio": 0}]})
    assert str(e.value) == ("knobs[1].ratio must be in (0, 1) (got 0.0); set ratio = 0.5 in "
                            "knobs[1]")


def _exit_2_message(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err.removeprefix("mixfleet: error: ")


def test_a_run_config_a_fleet_file_and_a_jobs_file_refuse_alike(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad value in a run config, a fleet file or a jobs file exits 2 through the same
    loader: one line in the standard form naming the file's field, the value and the fix."""
    run = _exit_2_message(["train", str(DIGITS), "--run-dir", str(tmp_path / "r"), "--set",
                           "train.steps=0"], capsys)
    assert STANDARD.search(run) and "train.steps must be >= 1 (got 0)" in run
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[pool]]\nchip = "nvidia-h20"\nnodes = 0\nper_node = 8\n')
    root = Path(__file__).resolve().parents[1] / "examples"
    got = _exit_2_message(["plan", "--fleet", str(fleet), "--jobs", str(root / "jobs.toml")],
                          capsys)
    assert got == (f"{fleet}: pool[0].nodes must be >= 1 (got 0); set nodes = 8 in pool[0]")
    assert STANDARD.search(got)
    jobs = tmp_path / "jobs.toml"
    jobs.write_text('[[job]]\nworkload = "cnn"\ndevices = 1\nref_hours = -2\n')
    got = _exit_2_message(["plan", "--fleet", str(root / "fleet-mixed.toml"), "--jobs",
                           str(jobs)], capsys)
    assert got == (f"{jobs}: job[0].ref_hours must be > 0 (got -2.0); set ref_hours = 12.0 "
                   f"in job[0]")
    assert not (tmp_path / "r").exists()


@dataclasses.dataclass(kw_only=True, frozen=True)
class _MoreKnobs(_Knobs):
    extra: int = field(1, help="one more", ge=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.extra <= self.count, f"knobs.extra must be <= knobs.count (got "
                f"{self.extra})")


def test_a_subclass_calling_super_checks_every_bound_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A section extending another (``[parallel]`` over the pipeline fields) holds its own
    and its base's bounds and both classes' relations, each field checked once."""
    import mixfleet.fields as F

    calls: list[str] = []
    real = F.check_fields
    monkeypatch.setattr(F, "check_fields", lambda obj, prefix=None: (
        calls.append(type(obj).__name__), real(obj, prefix))[1])
    _MoreKnobs(extra=2)
    assert calls == ["_MoreKnobs"]
    for kw, match in (({"count": 0}, r"knobs\.count must be >= 1"),
                      ({"extra": -1}, r"knobs\.extra must be >= 0"),
                      ({"count": 3}, "divide 100"), ({"extra": 5}, "extra must be <=")):
        with pytest.raises(ConfigError, match=match):
            _MoreKnobs(**kw)
