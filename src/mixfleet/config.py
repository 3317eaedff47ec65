"""Typed configs from TOML files and ``--set section.key=value`` overrides.

Each component owns a ``@dataclass(kw_only=True, frozen=True)`` config next to the class
it configures, subclassing :class:`Section` (``class TrainConfig(Section, section="train")``).
Its fields carry a help text and their bounds: ``field(64, help=..., ge=1)``, with ``gt``,
``le``, ``lt`` and ``choices`` alike. The bounds hold for every instance (``Section``
checks them before the class's own ``__post_init__``, which keeps only the checks that
relate several fields) and are listed by ``mixfleet train --help-config``.
This module turns nested dicts (run configs, fleet files, job files) into those
dataclasses with strict checks: unknown keys, wrong types, missing required fields and
values out of bounds raise :class:`ConfigError` naming the field, the value and the fix.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from mixfleet.errors import ConfigError
from mixfleet.fields import Section, bounds_text, check_field, field, fix_text, toml_value

T = TypeVar("T")

__all__ = ["load_toml", "apply_overrides", "from_dict", "parse_as", "to_dict", "config_hash",
           "field",
           "Section", "require", "read_text", "check_values",
           "MAX_INT", "MAX_DEPTH"]

#: Integers in input files must fit a signed 64-bit integer (torch, numpy, the simulator).
MAX_INT = 2**63 - 1
#: Tables and arrays nest at most this deep in input files.
MAX_DEPTH = 32
#: Input files larger than this are refused (a config, fleet or jobs file is kilobytes).
MAX_TOML_BYTES = 16 * 2**20


def require(cond: bool, msg: str) -> None:
    """Raise ConfigError(msg) unless ``cond`` (for ``__post_init__`` validation)."""
    if not cond:
        raise ConfigError(msg)


def read_text(path: str | Path, what: str, *, max_bytes: int | None = None) -> str:
    """The text of a user's input file, as UTF-8 (a BOM is dropped). Not UTF-8, NUL bytes,
    too large, or unreadable -> ConfigError naming the file, the place and the fix."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{what} {str(p)!r} cannot be read ({e.strerror or e}); pass a "
                          f"readable file") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise ConfigError(f"{what} {str(p)!r} is {len(data)} bytes, more than the "
                          f"{max_bytes} such a file can be; pass the right file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{what} {str(p)!r} is not UTF-8 text (byte {e.start}, line "
                          f"{line}: {data[e.start:e.start + 1]!r}); save it as UTF-8, or pass "
                          f"the right file") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ConfigError(f"{what} {str(p)!r} holds a NUL byte (line {line}): a binary or "
                          f"damaged file; pass the text file")
    return text


def check_values(data: Any, where: str, *, depth: int = 0) -> None:
    """Refuse values no mixfleet input has: NaN or infinite numbers, integers beyond 64 bits,
    dates and times, nesting deeper than MAX_DEPTH (ConfigError naming the key)."""
    if depth > MAX_DEPTH:
        raise ConfigError(f"{where} nests deeper than {MAX_DEPTH} levels; no mixfleet file "
                          f"does, fix the brackets")
    if isinstance(data, dict):
        for k, v in data.items():
            check_values(v, f"{where}.{k}" if where else str(k), depth=depth + 1)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            check_values(v, f"{where}[{i}]", depth=depth + 1)
    elif isinstance(data, bool):
        return
    elif isinstance(data, int):
        if not -MAX_INT - 1 <= data <= MAX_INT:
            raise ConfigError(f"{where} = {str(data)[:20]}... ({len(str(data))} digits) is out "
                              f"of range; use an integer below 2**63")
    elif isinstance(data, float):
        if not math.isfinite(data):
            raise ConfigError(f"{where} = {data!r} is not a finite number; write a number")
    elif isinstance(data, (datetime.date, datetime.time)):
        raise ConfigError(f"{where} = {data!r} is a date/time, which no mixfleet setting is; "
                          f"quote it if you meant text")


def load_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read a TOML file; a missing, non-UTF-8, binary, malformed, too deep file or a value
    out of range (see :func:`check_values`) raises ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist; pass the path of a TOML "
                          f"file, e.g. examples/digits-cnn.toml")
    text = read_text(p, what, max_bytes=MAX_TOML_BYTES)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} {str(p)!r} is not valid TOML ({e}); fix the syntax "
                          f"at that line") from None
    except RecursionError:
        raise ConfigError(f"{what} {str(p)!r} nests arrays or tables too deeply to read; "
                          f"fix the brackets") from None
    except ValueError as e:  # e.g. an integer of thousands of digits
        raise ConfigError(f"{what} {str(p)!r} has a value out of range ({str(e)[:120]}); "
                          f"fix that value") from None
    try:
        check_values(data, "")
    except ConfigError as e:
        raise ConfigError(f"{what} {str(p)!r}: {e}") from None
    return data


def _parse_value(text: str, key: str = "value") -> Any:
    """Parse the right-hand side of ``--set key=value`` as a TOML value, else a string."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except (RecursionError, ValueError):
        raise ConfigError(f"--set {key}: {text[:40]!r} is nested too deeply or out of range; "
                          f"fix the value") from None
    check_values(value, f"--set {key}")
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a nested dict (returns a new dict)."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not of the form section.key=value; "
                              f"e.g. --set checkpoint.interval=50")
        key, _, raw = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r} has an empty key; e.g. --set train.steps=100")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is a value, not a section")
            node = nxt
        node[parts[-1]] = _parse_value(raw.strip(), ".".join(parts))
    return out


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if errors else ConfigError(f"{where} must not be empty")
    if origin is typing.Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, allowed))} "
                              f"(got {value!r}); set {where} = {allowed[0]!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list (got {value!r}); e.g. {where} = []")
        (inner, *_) = get_args(tp) or (Any,)
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table (got {value!r})")
        return dict(value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"[{where}] must be a table (got {value!r}); write it as "
                              f"[{where}] with key = value lines")
        return from_dict(tp, value, prefix=where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false (got {value!r}); "
                              f"set {where} = true")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int) or \
                not -MAX_INT - 1 <= value <= MAX_INT:
            raise ConfigError(f"{where} must be an integer below 2**63 (got "
                              f"{str(value)[:40]}); set {where} = <integer>")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value):
            raise ConfigError(f"{where} must be a number (got {value!r}); "
                              f"set {where} = <number>")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string (got {value!r}); "
                              f'set {where} = "..."')
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{prefix}] must be a table (got {data!r})")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else key
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key {where!r}; known keys"
                              f"{' in [' + prefix + ']' if prefix else ''}: {known}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        where = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], where)
            check_field(f, kwargs[name], where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key {where!r}; "
                              f"{fix_text(where, f)}")
    return cls(**kwargs)


def parse_as(cls: type[T], data: Any, source: str, *, prefix: str = "") -> T:
    """:func:`from_dict` for the content of a file: a refusal names ``source`` first
    (``fleet.toml: pool[0].nodes must be >= 1 (got 0); ...``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [{prefix}] must be a table (got {data!r})")
    try:
        return from_dict(cls, data, prefix=prefix)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass config as plain nested dicts (None values dropped, for TOML)."""
    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return clean(dataclasses.asdict(obj))


def config_hash(obj: Any) -> str:
    """A stable short hash of a config (its JSON form)."""
    text = json.dumps(to_dict(obj), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dumps_toml(data: dict[str, Any]) -> str:
    """Write nested dicts (tables one level deep, plus arrays of tables) as TOML."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def reference(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Every key of config dataclass ``cls``: ``(section.key, default, bounds, help)``,
    nested sections (fields whose type is a dataclass) expanded, lists of tables as
    ``[[key]]``; bounds as :func:`bounds_text` writes them (a ``Literal`` type's values as
    choices; '' for none)."""
    hints = get_type_hints(cls)
    out: list[tuple[str, str, str, str]] = []
    for f in dataclasses.fields(cls):
        tp, name = hints[f.name], f"{prefix}{f.name}"
        inner = get_args(tp)[0] if get_origin(tp) is list and get_args(tp) else None
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            out += reference(tp, f"{name}.")
        elif dataclasses.is_dataclass(inner) and isinstance(inner, type):
            out += reference(inner, f"[[{name}]].")
        else:
            if f.default is not dataclasses.MISSING:
                default = repr(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = repr(f.default_factory())
            else:
                default = "(required)"
            bounds = f.metadata.get("bounds") or (
                {"choices": get_args(tp)} if get_origin(tp) is typing.Literal else {})
            out.append((name, default, bounds_text(bounds), f.metadata.get("help", "")))
    return out
