"""Loading a config from its sources: defaults <- TOML file <- flags and ``--set section.key=value``.

The CLI and the benchmarks read their flags into dotted overrides and call
:func:`load_config`; ``--set`` pairs are parsed by :func:`parse_sets`, the one reader of
that syntax.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedward.common.config.run_config import RunConfig
from fedward.common.errors import ConfigError


def parse_sets(items: Iterable[str]) -> dict[str, str]:
    """Dotted overrides from ``section.key=value`` strings (values stay text; the config converts them).

    Raises:
        ConfigError: if an item is not ``section.key=value``.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def load_config(config: Path | None, overrides: Mapping[str, Any]) -> RunConfig:
    """Defaults <- TOML file (when given) <- ``overrides`` (dotted keys), validated.

    Raises:
        ConfigError: if the file is unreadable or any value is invalid, naming the field.
    """
    if config is not None:
        return RunConfig.from_toml(config, overrides)
    return RunConfig.from_mapping(overrides)
