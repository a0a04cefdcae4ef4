"""Raw settings to typed section values: the one converter from TOML, flags and Flower's run config.

Values arrive as TOML types (a config file), strings (``--set`` flags, Flower's run config,
where lists travel as JSON) or Python values (flags). :func:`build_section` converts each
by the annotation of its field and refuses unknown keys with a "did you mean" hint.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from fedward.common.choices import choose
from fedward.common.config.checks import config_key
from fedward.common.errors import ConfigError


def build_section(section_cls: type, section: str, table: Mapping[str, Any]) -> Any:
    """Instantiate ``section_cls`` from a table of raw values keyed by config key.

    Raises:
        ConfigError: on an unknown key (with the closest known one), a value of the wrong
            type, or whatever the section's own validation refuses.
    """
    fields = {config_key(f.name): f for f in dataclasses.fields(section_cls)}
    hints = typing.get_type_hints(section_cls)
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"unknown config key {section}.{key}{suggest(key, fields)}")
        f = fields[key]
        kwargs[f.name] = convert(value, hints[f.name], f"{section}.{key}")
    return section_cls(**kwargs)


def convert(value: Any, annotation: Any, where: str) -> Any:
    """Convert one raw value to the annotated type; ``""`` means unset for optionals.

    Raises:
        ConfigError: naming ``where`` when the value cannot be converted.
    """
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or value == "":
            return None
        inner = next(a for a in args if a is not type(None))
        return convert(value, inner, where)
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return choose(value, annotation, where)
    if origin is tuple:
        return _to_tuple(value, args[0], where)
    converter = _SCALARS.get(annotation)
    if converter is None:  # pragma: no cover - every section field has a known type
        raise ConfigError(f"{where}: unsupported setting type {annotation!r}")
    return converter(value, where)


def _to_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{where} must be true or false; got {value!r}")


def _to_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where} must be an integer; got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{where} must be an integer; got {value!r}") from None
    if not number.is_integer():
        raise ConfigError(f"{where} must be an integer; got {value!r}")
    return int(number)


def _to_float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a number; got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a number; got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where} must be a finite number; got {value!r}")
    return number


def _to_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string; got {value!r}")
    return value


def _to_path(value: Any, where: str) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise ConfigError(f"{where} must be a path; got {value!r}")
    return Path(str(value)).expanduser()


_SCALARS: dict[Any, Callable[[Any, str], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
    Path: _to_path,
}


def _to_tuple(value: Any, inner: Any, where: str) -> tuple[Any, ...]:
    """A list setting: TOML arrays, Python sequences, or JSON text (Flower's run config)."""
    items = json.loads(value) if isinstance(value, str) and value.startswith("[") else value
    numeric = inner in (int, float)
    kind = "numbers" if numeric else "paths" if inner is Path else "strings"
    allowed: tuple[type, ...] = (int, float) if numeric else (str, Path)
    if not isinstance(items, list | tuple) or not all(
        isinstance(i, allowed) and not isinstance(i, bool) for i in items
    ):
        raise ConfigError(f"{where} must be a list of {kind}; got {value!r}")
    return tuple(convert(item, inner, where) for item in items)


def anchor_paths(nested: dict[str, Any], sections: Mapping[str, type], base: Path) -> None:
    """Make relative path settings in ``nested`` relative to ``base`` (in place)."""
    for section, section_cls in sections.items():
        table = nested.get(section)
        if not isinstance(table, dict):
            continue
        hints = typing.get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            key = config_key(f.name)
            value = table.get(key)
            if Path not in (hints[f.name], *typing.get_args(hints[f.name])):
                continue
            if isinstance(value, str) and value:
                table[key] = _anchored(value, base)
            elif isinstance(value, list):
                table[key] = [_anchored(v, base) if isinstance(v, str) else v for v in value]


def _anchored(value: str, base: Path) -> str:
    return value if Path(value).expanduser().is_absolute() else str(base / value)


def to_plain(value: Any) -> Any:
    """A section value as a plain TOML/JSON value (enums by value, paths as strings)."""
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [str(v) if isinstance(v, Path) else v for v in value]
    return value


def unflatten(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Nested tables from a mapping of tables and/or dotted keys (``{"train.lr": 0.01}``).

    Raises:
        ConfigError: on a key that sits in no section.
    """
    nested: dict[str, Any] = {}
    for key, value in raw.items():
        if "." in key:
            section, _, name = key.partition(".")
            nested.setdefault(section, {})[name] = value
        elif isinstance(value, Mapping):
            nested.setdefault(key, {}).update(value)
        else:
            raise ConfigError(
                f"config key {key!r} must sit in a section such as [federation] (or be written as 'section.{key}')"
            )
    return nested


def flatten(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys from a mapping of tables (the inverse of :func:`unflatten`)."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping):
            for name, inner in value.items():
                flat[f"{key}.{name}"] = inner
        else:
            flat[key] = value
    return flat


def suggest(name: str, options: Mapping[str, Any] | Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or an empty string."""
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
