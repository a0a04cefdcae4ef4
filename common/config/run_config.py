"""The run configuration: every section of a run in one typed, frozen object, validated once.

A run is configured by a TOML file with one table per section, by CLI flags that override
it, or by Flower's run config (flat ``section.key`` strings). All three go through
:meth:`RunConfig.from_mapping`, which checks every value and raises
:class:`~fedward.common.errors.ConfigError` naming the field (``federation.hospitals``)
and what is allowed. Nothing downstream re-reads raw dictionaries.

Naming: config keys are kebab-case (Flower's convention, ``local-epochs``); Python fields
are snake_case (``local_epochs``); :func:`~fedward.common.config.checks.config_key` maps them.
What a run finds when it is set up (the dataset's schema, its run directory) is not part of
the config: see :class:`~fedward.common.config.spec.RunSpec`.

Example TOML::

    [data]
    dataset = "pneumoniamnist"
    data-dir = "../shared/data"

    [federation]
    hospitals = 5
    partition = "dirichlet"
    alpha = 0.5
    rounds = 20

    [strategy]
    name = "fedprox"
    proximal-mu = 0.01
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import tomli_w

from fedward.common.choices import MASK_SUPERVISED_MODELS, ClientDp, StrategyName, TargetKind
from fedward.common.config.checks import check_image_size, config_key
from fedward.common.config.evaluation import EvaluationConfig
from fedward.common.config.parsing import anchor_paths, build_section, flatten, suggest, to_plain, unflatten
from fedward.common.config.sections import (
    DataConfig,
    FederationConfig,
    ModelConfig,
    PrivacyConfig,
    RunOptions,
    SimulationConfig,
    StrategyConfig,
    TrainConfig,
)
from fedward.common.config.tracking import TrackingConfig
from fedward.common.errors import ConfigError

SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "federation": FederationConfig,
    "strategy": StrategyConfig,
    "simulation": SimulationConfig,
    "privacy": PrivacyConfig,
    "evaluation": EvaluationConfig,
    "tracking": TrackingConfig,
    "run": RunOptions,
}
"""The config's sections by table name, in file order."""


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything that defines a run. Build it with :meth:`from_mapping` or a loader."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    run: RunOptions = field(default_factory=RunOptions)

    def __post_init__(self) -> None:
        check_image_size(self.model.name, self.data.image_size)
        if self.data.hospital_dirs and len(self.data.hospital_dirs) != self.federation.hospitals:
            raise ConfigError(
                f"data.hospital-dirs lists {len(self.data.hospital_dirs)} folders but federation.hospitals "
                f"is {self.federation.hospitals}; give one folder per hospital"
            )
        privacy = self.privacy
        if privacy.client_dp is not ClientDp.NONE:
            if privacy.delta >= 1 / self.federation.hospitals:
                raise ConfigError(
                    f"privacy.delta ({privacy.delta:g}) must be below 1 / federation.hospitals "
                    f"({1 / self.federation.hospitals:g}): a larger delta can release a whole hospital"
                )
            if self.strategy.name in (StrategyName.FEDMEDIAN, StrategyName.FEDTRIMMEDAVG, StrategyName.KRUM):
                raise ConfigError(
                    f"privacy.client-dp with strategy {self.strategy.name.value}: the noise is calibrated to the "
                    "mean of clipped updates, which this strategy does not compute; use fedavg, fedprox, "
                    "fedadam, fedyogi or fedavgm"
                )
        if privacy.dpsgd and self.strategy.name is StrategyName.FEDPROX:
            raise ConfigError(
                "privacy.dpsgd with strategy fedprox: Opacus clips per-sample gradients of the loss only, "
                "the proximal term would escape clipping; use another strategy"
            )
        self._check_mask_supervision()
        if self.strategy.name is StrategyName.KRUM:
            f = self.strategy.num_malicious
            if self.federation.hospitals <= 2 * f + 2:
                raise ConfigError(
                    f"strategy krum with num-malicious={f} needs more than {2 * f + 2} "
                    f"hospitals; federation.hospitals is {self.federation.hospitals}"
                )

    def _check_mask_supervision(self) -> None:
        """``data.target = "class+mask"`` and a network that segments while it classifies go together."""
        supervised = self.model.name in MASK_SUPERVISED_MODELS
        if self.data.target is TargetKind.CLASS_AND_MASK and not supervised:
            fits = ", ".join(sorted(m.value for m in MASK_SUPERVISED_MODELS))
            raise ConfigError(
                f'data.target = "class+mask" trains a network that segments while it classifies; model.name '
                f"{self.model.name.value} only classifies (use {fits})"
            )
        if supervised and self.data.target is not TargetKind.CLASS_AND_MASK:
            raise ConfigError(
                f"model.name {self.model.name.value} learns classes with lesion masks: set "
                'data.target = "class+mask" (an image + mask folder such as BUSI)'
            )
        if supervised and self.privacy.dpsgd:
            raise ConfigError(
                f"privacy.dpsgd with model.name {self.model.name.value}: DP-SGD is not supported for a network "
                "trained on two outputs (class and lesion mask); use unet-encoder, or no DP-SGD"
            )

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Self:
        """Build and validate a config from nested tables (``{"train": {"lr": 0.01}}``).

        Flat dotted keys (``{"train.lr": 0.01}``, Flower's run config) are accepted too.

        Raises:
            ConfigError: on an unknown section or key, a value of the wrong type or out
                of range; the message names the field.
        """
        nested = unflatten(raw)
        unknown = set(nested) - set(SECTIONS)
        if unknown:
            name = sorted(unknown)[0]
            raise ConfigError(f"unknown config section [{name}]{suggest(name, SECTIONS)}")
        sections: dict[str, Any] = {}
        for name, section_cls in SECTIONS.items():
            table = nested.get(name, {})
            if not isinstance(table, Mapping):
                raise ConfigError(f"[{name}] must be a table of settings, got {table!r}")
            sections[name] = build_section(section_cls, name, table)
        return cls(**sections)

    @classmethod
    def from_toml(cls, path: Path, overrides: Mapping[str, Any] | None = None) -> Self:
        """Read a TOML file, apply ``overrides`` (dotted keys win over the file), validate.

        Relative paths written in the file (``data-dir``, ``init-weights``, ``output-dir``)
        are relative to the file's folder, so a config works from any working directory;
        paths in ``overrides`` (command-line flags) stay relative to the working directory.

        Raises:
            ConfigError: if the file is missing or not valid TOML, or on any invalid value.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
        merged = unflatten(table)
        anchor_paths(merged, SECTIONS, Path(path).resolve().parent)
        for key, value in flatten(dict(overrides or {})).items():
            section, _, name = key.partition(".")
            merged.setdefault(section, {})[name] = value
        return cls.from_mapping(merged)

    @classmethod
    def from_flower(cls, run_config: Mapping[str, Any]) -> Self:
        """Parse Flower's run config (``context.run_config``) as sent by the driver.

        Raises:
            ConfigError: as :meth:`from_mapping`.
        """
        return cls.from_mapping(run_config)

    # ------------------------------------------------------------------ writing
    def to_mapping(self) -> dict[str, dict[str, Any]]:
        """Nested tables of plain TOML values (unset optional values are left out)."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            section = getattr(self, name)
            table: dict[str, Any] = {}
            for f in dataclasses.fields(section):
                value = to_plain(getattr(section, f.name))
                if value is not None:
                    table[config_key(f.name)] = value
            out[name] = table
        return out

    def to_flower(self) -> dict[str, bool | int | float | str]:
        """Flat ``section.key`` run config for Flower (lists become JSON strings)."""
        flat: dict[str, bool | int | float | str] = {}
        for section, table in self.to_mapping().items():
            for key, value in table.items():
                flat[f"{section}.{key}"] = json.dumps(value) if isinstance(value, list) else value
        return flat

    def to_toml(self) -> str:
        """The config as TOML text (what ``config.toml`` in a run directory holds)."""
        return tomli_w.dumps(self.to_mapping())

    def replace(self, **sections: Any) -> RunConfig:
        """Return a copy with whole sections replaced (``cfg.replace(run=new_run)``)."""
        return dataclasses.replace(self, **sections)
