"""Config fields: a help text and the bounds of each field, checked for every instance.

``field(64, help=..., ge=1)`` declares a field of a config dataclass (``gt``, ``le``,
``lt`` and ``choices`` alike); :class:`Section`, the base of those dataclasses, checks the
bounds before the class's own ``__post_init__``, and :func:`mixfleet.config.from_dict`
checks them where the loader reads the value, naming it by its place in the file.
A refusal names the field, the value and the fix (``train.steps must be >= 1 (got 0);
set [train] steps = 1000``). See docs/architecture.md, "Configs".
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import Any, ClassVar

from mixfleet.errors import ConfigError

__all__ = ["field", "Section", "check_field", "check_fields", "bounds_text", "fix_text",
           "toml_value"]


def field(default: Any = dataclasses.MISSING, *, help: str, ge: float | None = None,
          gt: float | None = None, le: float | None = None, lt: float | None = None,
          choices: tuple[Any, ...] | None = None, example: Any = None, flag: str = "",
          **kw: Any) -> Any:
    """A dataclass field with a help text and its bounds (``ge``: >=, ``gt``: >, ``le``: <=,
    ``lt``: <, ``choices``: one of; on each item of a list; ``None`` values pass), listed by
    ``mixfleet train --help-config``. ``example``: the value a refusal suggests (default:
    the field's default when it is in bounds); ``flag``: the command-line flag that sets it
    too (``--nproc``), named in the fix, and naming the field in a config without a
    section (a command's flags, as ``mixfleet dashboard``'s)."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt),
                                ("choices", choices)) if v is not None}
    meta: dict[str, Any] = {"help": help, "bounds": bounds, "example": example, "flag": flag}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def bounds_text(bounds: dict[str, Any]) -> str:
    """``{"ge": 0, "lt": 1}`` -> ``in [0, 1)``; ``{"gt": 0}`` -> ``> 0``; '' for none."""
    if "choices" in bounds:
        return "one of " + ", ".join(toml_value(c) for c in bounds["choices"])
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds \
        else None
    high = (bounds["le"], "]") if "le" in bounds else (bounds["lt"], ")") if "lt" in bounds \
        else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[0]:g}{high[1]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    if high:
        return f"{'<=' if high[1] == ']' else '<'} {high[0]:g}"
    return ""


def _in_bounds(v: Any, b: dict[str, Any]) -> bool:
    if "choices" in b:
        return v in b["choices"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return False
    return (v >= b.get("ge", v) and v <= b.get("le", v) and ("gt" not in b or v > b["gt"])
            and ("lt" not in b or v < b["lt"]))


def fix_text(where: str, f: dataclasses.Field[Any], b: dict[str, Any] | None = None) -> str:
    """How to set the field ``where`` right: ``set [train] steps = 1000``."""
    if b is None:
        b = f.metadata.get("bounds") or {}
    default = f.default if f.default is not dataclasses.MISSING else \
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None
    ex = f.metadata.get("example")
    if ex is None and default is not None and (
            all(_in_bounds(v, b) for v in default) if isinstance(default, (list, tuple))
            else _in_bounds(default, b)):
        ex = default
    if ex is None:
        ex = (b["choices"][0] if "choices" in b else b["ge"] if "ge" in b else
              b["le"] if "le" in b else None)
        if ex is not None and isinstance(default, (list, tuple)):
            ex = [ex]
    text = bounds_text(b)
    value = (f"<a value {text}>" if text else "<value>") if ex is None else toml_value(ex)
    if where.startswith("--"):  # a command's own flag (a config without a section)
        arg = value if ex is None else " ".join(map(str, ex)) if isinstance(ex, list) else ex
        return f"pass {where} {arg}"
    section, _, key = where.rpartition(".")
    flag = f" (or pass {f.metadata['flag']} {value})" if f.metadata.get("flag") else ""
    if not section:
        return f"set {key} = {value}{flag}"
    if "[" in section or " " in section:
        return f"set {key} = {value} in {section}{flag}"
    return f"set [{section}] {key} = {value}{flag}"


def check_field(f: dataclasses.Field[Any], value: Any, where: str) -> None:
    """Refuse ``value`` of field ``f`` (named ``where`` in the message) when it breaks the
    bounds declared on ``f``: ConfigError naming the field, the value and the fix."""
    b = f.metadata.get("bounds") if f.metadata else None
    if not b or value is None:
        return
    items = value if isinstance(value, (list, tuple)) else (value,)
    for v in items:
        if not _in_bounds(v, b):
            got = f"{v!r} in {value!r}" if items is value else repr(v)
            raise ConfigError(f"{where} must be {bounds_text(b)} (got {got}); "
                              f"{fix_text(where, f, b)}")


class Section:
    """Base of config dataclasses (``class TrainConfig(Section, section="train")``): the
    bounds declared on the fields hold for every instance, checked before the class's own
    ``__post_init__`` (which keeps the checks that relate several fields). ``section``
    names the fields in messages (``train.steps``) when the class is built in code; the
    loader names them by where they are in the file. A subclass's ``__post_init__`` may
    call ``super().__post_init__()``: the fields are checked once, by the outermost."""

    _section: ClassVar[str] = ""

    def __init_subclass__(cls, section: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if section is not None:
            cls._section = section
        own = cls.__dict__.get("__post_init__")
        if own is not None and not getattr(own, "checks_fields", False):
            @functools.wraps(own)
            def post_init(self: Any) -> None:
                if type(self).__post_init__ is post_init:  # not a subclass's super() call
                    check_fields(self)
                own(self)
            post_init.checks_fields = True  # type: ignore[attr-defined]
            cls.__post_init__ = post_init  # type: ignore[method-assign]

    def __post_init__(self) -> None:
        check_fields(self)


def check_fields(obj: Any, prefix: str | None = None) -> None:
    """Check every field of dataclass ``obj`` against its declared bounds."""
    pre = type(obj)._section if prefix is None else prefix
    for f in dataclasses.fields(obj):
        where = f"{pre}.{f.name}" if pre else f.metadata.get("flag") or f.name
        check_field(f, getattr(obj, f.name), where)


def toml_value(v: Any) -> str:
    """``v`` as a TOML value (strings quoted, lists and inline tables)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")
