"""The run configuration: typed, frozen sections validated once, and what a run finds at setup.

* :mod:`.sections` — one dataclass per ``[section]`` of a run config (import them from there);
* :mod:`.run_config` — :class:`RunConfig`, built from TOML, flags or Flower's run config;
* :mod:`.spec` — :class:`RunSpec`, the config plus the dataset schema and run directory;
* :mod:`.overrides` — loading a config from a file, flags and ``--set`` pairs;
* :mod:`.parsing`, :mod:`.checks` — the converter and validation helpers they share.

This package imports neither torch nor Flower: every ``fedward`` command parses configs fast.
"""

from __future__ import annotations

from fedward.common.config.checks import config_key
from fedward.common.config.overrides import load_config, parse_sets
from fedward.common.config.run_config import SECTIONS, RunConfig
from fedward.common.config.spec import RunSpec

__all__ = ["SECTIONS", "RunConfig", "RunSpec", "config_key", "load_config", "parse_sets"]
