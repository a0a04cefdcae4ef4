"""The run configuration: one typed, frozen object, parsed and validated once.

A run is configured by a TOML file with one table per section, by CLI flags that override
it, or by Flower's run config (flat ``section.key`` strings). All three go through
:meth:`RunConfig.from_mapping`, which checks every value and raises
:class:`~fedward.common.errors.ConfigError` naming the field (``federation.hospitals``)
and what is allowed. Nothing downstream re-reads raw dictionaries.

Naming: config keys are kebab-case (Flower's convention, ``local-epochs``); Python fields
are snake_case (``local_epochs``). :func:`config_key` is the one place that maps them.

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
import difflib
import json
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import tomli_w

from fedward.common.choices import (
    ClassWeighting,
    ClientDp,
    DeviceChoice,
    FrameMode,
    ModelName,
    OptimizerName,
    Partition,
    Schedule,
    StrategyName,
    Task,
    choose,
)
from fedward.common.data.npz import DatasetSchema
from fedward.common.errors import ConfigError

IMAGE_SIZES: tuple[int, ...] = (28, 64, 128, 224)
"""Image sizes MedMNIST v2 / MedMNIST+ ship, and the sizes a run may train at (pixels)."""


def config_key(field_name: str) -> str:
    """Map a Python field name to its config key (``local_epochs`` -> ``local-epochs``)."""
    return field_name.replace("_", "-")


@dataclass(frozen=True, slots=True)
class DataConfig:
    """What data every hospital trains on and how images reach the model.

    Attributes:
        dataset: MedMNIST 2D dataset name (``pneumoniamnist``) or the stem of any ``.npz``
            with the MedMNIST key layout in ``data_dir``.
        data_dir: folder holding ``<dataset>.npz``; ``None`` means ``$FEDWARD_DATA_DIR``,
            else ``~/.fedward/data`` (see :func:`fedward.common.data.locate.locate_dataset`).
        image_size: side of the square model input in pixels, one of 28, 64, 128, 224.
        augment: train-time augmentation (random flip, rotation, zoom).
        val_fraction: fraction of each hospital's training images held out as its local
            validation split, in (0, 0.5].
        frames: multi-frame images give their ``middle`` frame or ``all`` frames as samples.
        hospital_dirs: simulation over hospital folders (DICOM, PNG/JPEG or ``.npz``): one
            folder per simulated hospital, instead of partitioning ``dataset``.
        cache_dir: where hospitals cache decoded images (``None``: ``~/.fedward/cache/decoded``).
        cache: cache decoded images at all.
        task: resolved classification task (filled from the dataset when the run starts).
        classes: resolved class (or label) names, index order.
        channels: resolved number of image channels (1 or 3); 0 until resolved.
    """

    dataset: str = "pneumoniamnist"
    data_dir: Path | None = None
    image_size: int = 28
    augment: bool = True
    val_fraction: float = 0.1
    frames: FrameMode = FrameMode.MIDDLE
    hospital_dirs: tuple[Path, ...] = ()
    cache_dir: Path | None = None
    cache: bool = True
    task: Task | None = None
    classes: tuple[str, ...] = ()
    channels: int = 0

    def __post_init__(self) -> None:
        if not self.dataset.strip():
            raise ConfigError("data.dataset must name a dataset, e.g. 'pneumoniamnist'")
        if self.image_size not in IMAGE_SIZES:
            raise ConfigError(
                f"data.image-size must be one of {', '.join(map(str, IMAGE_SIZES))}; got {self.image_size}"
            )
        _check_range("data.val-fraction", self.val_fraction, low=0.0, high=0.5, low_open=True)
        if self.channels not in (0, 1, 3):
            raise ConfigError(f"data.channels must be 1 or 3; got {self.channels}")
        if self.classes and len(set(self.classes)) != len(self.classes):
            raise ConfigError("data.classes holds a class name twice")

    @property
    def resolved(self) -> bool:
        """Whether task, classes and channels have been filled in from the dataset."""
        return self.task is not None and bool(self.classes) and self.channels > 0

    def schema(self) -> DatasetSchema:
        """The dataset schema (task, classes, channels) every participant must agree on.

        Raises:
            ConfigError: if it was not resolved from the dataset before the run started
                (``fedward simulate`` and ``fedward run start`` do this).
        """
        if self.task is None or not self.classes or self.channels == 0:
            raise ConfigError("data.task, data.classes and data.channels are not set; start runs through fedward")
        return DatasetSchema(self.task, self.classes, self.channels)

    def with_schema(self, schema: DatasetSchema) -> DataConfig:
        """A copy with task, classes and channels taken from ``schema``."""
        return dataclasses.replace(self, task=schema.task, classes=schema.classes, channels=schema.channels)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Which network to train.

    Attributes:
        name: registry name (:class:`~fedward.common.choices.ModelName`).
        init_weights: optional ``.safetensors`` or ``.pt`` state dict to start from
            (transfer learning); layers whose shapes differ (e.g. the classifier head)
            keep their fresh initialisation.
    """

    name: ModelName = ModelName.SMALL_CNN
    init_weights: Path | None = None


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Local training at each hospital (and in the centralized baseline).

    Attributes:
        local_epochs: epochs over the hospital's training split per round (>= 1).
        batch_size: images per step (>= 1).
        optimizer: ``adamw`` or ``sgd``.
        lr: base learning rate (> 0).
        weight_decay: decoupled weight decay (AdamW) or L2 penalty (SGD), >= 0.
        momentum: SGD momentum in [0, 1).
        schedule: ``cosine`` anneals the rate to 0 over rounds x local epochs; ``constant``.
        class_weighting: ``balanced`` weights the loss by inverse class frequency of the
            hospital's own labels; ``none``.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        amp: automatic mixed precision (float16 autocast + gradient scaling) on CUDA;
            ignored on CPU.
        threads: PyTorch CPU threads; 0 keeps PyTorch's default (in simulation: the
            hospital's CPU share).
    """

    local_epochs: int = 3
    batch_size: int = 64
    optimizer: OptimizerName = OptimizerName.ADAMW
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: Schedule = Schedule.COSINE
    class_weighting: ClassWeighting = ClassWeighting.BALANCED
    device: DeviceChoice = DeviceChoice.AUTO
    amp: bool = True
    threads: int = 0

    def __post_init__(self) -> None:
        _check_min("train.local-epochs", self.local_epochs, 1)
        _check_min("train.batch-size", self.batch_size, 1)
        _check_range("train.lr", self.lr, low=0.0, high=10.0, low_open=True)
        _check_range("train.weight-decay", self.weight_decay, low=0.0, high=1.0)
        _check_range("train.momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _check_min("train.threads", self.threads, 0)


@dataclass(frozen=True, slots=True)
class FederationConfig:
    """The hospitals and the rounds.

    Attributes:
        hospitals: number of hospitals (simulated SuperNodes, or expected SuperNodes in
            deployment), >= 1.
        partition: how simulation splits the training images across hospitals.
        alpha: Dirichlet concentration for ``dirichlet`` and ``quantity`` (> 0); smaller
            means more skew.
        min_hospital_size: smallest number of training images a simulated hospital may get.
        rounds: federated rounds (>= 1).
        fraction_train: share of connected hospitals sampled for training each round, (0, 1].
        fraction_evaluate: share sampled for federated evaluation each round, [0, 1].
        min_available: hospitals that must be connected before a round starts; 0 means all
            ``hospitals``.
        round_timeout: seconds the server waits for replies in one round (> 0); late
            hospitals are left out of that round.
    """

    hospitals: int = 5
    partition: Partition = Partition.IID
    alpha: float = 0.5
    min_hospital_size: int = 20
    rounds: int = 20
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_available: int = 0
    round_timeout: float = 600.0

    def __post_init__(self) -> None:
        _check_min("federation.hospitals", self.hospitals, 1)
        _check_range("federation.alpha", self.alpha, low=0.0, high=1e6, low_open=True)
        _check_min("federation.min-hospital-size", self.min_hospital_size, 1)
        _check_min("federation.rounds", self.rounds, 1)
        _check_range("federation.fraction-train", self.fraction_train, low=0.0, high=1.0, low_open=True)
        _check_range("federation.fraction-evaluate", self.fraction_evaluate, low=0.0, high=1.0)
        _check_min("federation.min-available", self.min_available, 0)
        if self.min_available > self.hospitals:
            raise ConfigError(
                f"federation.min-available ({self.min_available}) cannot exceed federation.hospitals ({self.hospitals})"
            )
        _check_range("federation.round-timeout", self.round_timeout, low=0.0, high=7 * 86400.0, low_open=True)

    @property
    def required_hospitals(self) -> int:
        """Hospitals that must be connected before a round starts."""
        return self.min_available or self.hospitals


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    """The aggregation strategy and its parameters (unset ones keep Flower's defaults).

    Attributes:
        name: a :mod:`flwr.serverapp.strategy` strategy.
        proximal_mu: FedProx proximal term weight (Li et al., 2020), >= 0.
        server_lr: server learning rate: ``eta`` of FedAdam/FedYogi (Reddi et al., 2021;
            unset: 0.01, as Flower's FedYogi; Flower's FedAdam has 0.1), ``server_learning_rate``
            of FedAvgM (Hsu et al., 2019; unset: 1.0).
        server_momentum: FedAvgM server momentum in [0, 1).
        beta_1: FedAdam/FedYogi first-moment decay in [0, 1).
        beta_2: FedAdam/FedYogi second-moment decay in [0, 1).
        tau: FedAdam/FedYogi adaptivity (> 0).
        trim_beta: FedTrimmedAvg fraction cut from each end, in [0, 0.5).
        num_malicious: Krum's assumed number of Byzantine hospitals f (>= 0); Krum
            needs hospitals > 2f + 2 (Blanchard et al., 2017).
    """

    name: StrategyName = StrategyName.FEDAVG
    proximal_mu: float = 0.01
    server_lr: float | None = None
    server_momentum: float | None = None
    beta_1: float | None = None
    beta_2: float | None = None
    tau: float | None = None
    trim_beta: float = 0.2
    num_malicious: int = 0

    def __post_init__(self) -> None:
        _check_range("strategy.proximal-mu", self.proximal_mu, low=0.0, high=1e6)
        if self.server_lr is not None:
            _check_range("strategy.server-lr", self.server_lr, low=0.0, high=1e3, low_open=True)
        for key, value in (
            ("strategy.server-momentum", self.server_momentum),
            ("strategy.beta-1", self.beta_1),
            ("strategy.beta-2", self.beta_2),
        ):
            if value is not None:
                _check_range(key, value, low=0.0, high=1.0, high_open=True)
        if self.tau is not None:
            _check_range("strategy.tau", self.tau, low=0.0, high=1.0, low_open=True)
        _check_range("strategy.trim-beta", self.trim_beta, low=0.0, high=0.5, high_open=True)
        _check_min("strategy.num-malicious", self.num_malicious, 0)


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """Resources of each simulated hospital on Flower's Ray backend.

    Attributes:
        client_cpus: CPU cores reserved per hospital (> 0); ``cores / client_cpus``
            hospitals train at once.
        client_gpus: GPU fraction per hospital in [0, 1] (e.g. 0.25 puts four hospitals
            on one GPU); 0 trains on CPU.
    """

    client_cpus: float = 1.0
    client_gpus: float = 0.0

    def __post_init__(self) -> None:
        _check_range("simulation.client-cpus", self.client_cpus, low=0.0, high=1024.0, low_open=True)
        _check_range("simulation.client-gpus", self.client_gpus, low=0.0, high=1.0)


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    """Differential privacy: client-level (a hospital's contribution) and/or DP-SGD (an image).

    Attributes:
        client_dp: client-level DP mode (see :class:`~fedward.common.choices.ClientDp`).
        clipping_norm: L2 norm each hospital's model update is clipped to (initial norm for
            adaptive clipping), > 0.
        noise_multiplier: Gaussian noise standard deviation on the sum of clipped updates
            divided by the clipping norm, >= 0; set it or ``target_epsilon``.
        target_epsilon: client-level epsilon at ``delta`` after all rounds, > 0; the noise
            multiplier is computed from it.
        delta: client-level delta, in (0, 1 / federation.hospitals).
        max_epsilon: client-level budget, > 0: the run stops after the last round that fits.
        target_clipped_quantile: adaptive clipping's target quantile of update norms, [0, 1].
        clip_norm_lr: adaptive clipping's learning rate of the clipping norm, > 0.
        dpsgd: sample-level DP-SGD at every hospital (Opacus; Abadi et al., 2016).
        dpsgd_clipping_norm: per-sample gradient clipping norm, > 0.
        dpsgd_noise_multiplier: per-step noise multiplier, >= 0; set it or ``dpsgd_target_epsilon``.
        dpsgd_target_epsilon: each hospital's epsilon at ``dpsgd_delta`` over all planned
            rounds x local epochs, > 0.
        dpsgd_delta: record-level delta, in (0, 1); each hospital checks it is below 1 / its images.
    """

    client_dp: ClientDp = ClientDp.NONE
    clipping_norm: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    max_epsilon: float | None = None
    target_clipped_quantile: float = 0.5
    clip_norm_lr: float = 0.2
    dpsgd: bool = False
    dpsgd_clipping_norm: float = 1.0
    dpsgd_noise_multiplier: float | None = None
    dpsgd_target_epsilon: float | None = None
    dpsgd_delta: float = 1e-5

    def __post_init__(self) -> None:
        _check_range("privacy.clipping-norm", self.clipping_norm, low=0.0, high=1e6, low_open=True)
        _check_range("privacy.dpsgd-clipping-norm", self.dpsgd_clipping_norm, low=0.0, high=1e6, low_open=True)
        for key, value in (("privacy.noise-multiplier", self.noise_multiplier),
                           ("privacy.dpsgd-noise-multiplier", self.dpsgd_noise_multiplier)):  # fmt: skip
            if value is not None:
                _check_range(key, value, low=0.0, high=1e3)
        for key, value in (("privacy.target-epsilon", self.target_epsilon),
                           ("privacy.max-epsilon", self.max_epsilon),
                           ("privacy.dpsgd-target-epsilon", self.dpsgd_target_epsilon)):  # fmt: skip
            if value is not None:
                _check_range(key, value, low=0.0, high=1e4, low_open=True)
        _check_range("privacy.delta", self.delta, low=0.0, high=1.0, low_open=True, high_open=True)
        _check_range("privacy.dpsgd-delta", self.dpsgd_delta, low=0.0, high=1.0, low_open=True, high_open=True)
        _check_range("privacy.target-clipped-quantile", self.target_clipped_quantile, low=0.0, high=1.0)
        _check_range("privacy.clip-norm-lr", self.clip_norm_lr, low=0.0, high=10.0, low_open=True)
        if self.client_dp is ClientDp.NONE:
            if self.noise_multiplier is not None or self.target_epsilon is not None or self.max_epsilon is not None:
                raise ConfigError(
                    "privacy.noise-multiplier, target-epsilon and max-epsilon need privacy.client-dp "
                    "(server-fixed, client-fixed, server-adaptive or client-adaptive)"
                )
        elif (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError(
                f"privacy.client-dp {self.client_dp.value}: set privacy.noise-multiplier or target-epsilon"
            )
        elif self.noise_multiplier == 0 and self.max_epsilon is not None:
            raise ConfigError("privacy.max-epsilon cannot be accounted with privacy.noise-multiplier = 0 (no noise)")
        if self.dpsgd:
            if (self.dpsgd_noise_multiplier is None) == (self.dpsgd_target_epsilon is None):
                raise ConfigError("privacy.dpsgd: set privacy.dpsgd-noise-multiplier or dpsgd-target-epsilon")
        elif self.dpsgd_noise_multiplier is not None or self.dpsgd_target_epsilon is not None:
            raise ConfigError("privacy.dpsgd-noise-multiplier and dpsgd-target-epsilon need privacy.dpsgd = true")

    @property
    def enabled(self) -> bool:
        """Whether any differential privacy is on."""
        return self.client_dp is not ClientDp.NONE or self.dpsgd


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Reproducibility and where results go.

    Attributes:
        seed: seed of every random choice (partition, initial weights, batches,
            augmentation, hospital sampling), >= 0.
        name: run name used in the run directory's name; empty means the dataset name.
        output_dir: parent folder of run directories.
        dir: the run directory itself, set when the run starts.
        resume: continue the run in ``dir`` from its checkpoint (``fedward simulate --resume``,
            ``fedward run resume``) instead of starting at round 1.
    """

    seed: int = 0
    name: str = ""
    output_dir: Path = Path("runs")
    dir: Path | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        _check_range("run.seed", self.seed, low=0, high=2**32 - 1)
        if any(c in self.name for c in "/\\\0"):
            raise ConfigError(f"run.name must not contain path separators; got {self.name!r}")
        if self.resume and self.dir is None:
            raise ConfigError("run.resume needs run.dir, the run directory to continue")


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
    run: RunOptions = field(default_factory=RunOptions)

    def __post_init__(self) -> None:
        # Imported here: the registry pulls in torch and MONAI, config parsing should not.
        from fedward.common.ml.networks import check_image_size

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
        if self.strategy.name is StrategyName.KRUM:
            f = self.strategy.num_malicious
            if self.federation.hospitals <= 2 * f + 2:
                raise ConfigError(
                    f"strategy krum with num-malicious={f} needs more than {2 * f + 2} "
                    f"hospitals; federation.hospitals is {self.federation.hospitals}"
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
        nested = _unflatten(raw)
        unknown = set(nested) - set(_SECTIONS)
        if unknown:
            name = sorted(unknown)[0]
            raise ConfigError(f"unknown config section [{name}]{_suggest(name, _SECTIONS)}")
        sections: dict[str, Any] = {}
        for name, section_cls in _SECTIONS.items():
            table = nested.get(name, {})
            if not isinstance(table, Mapping):
                raise ConfigError(f"[{name}] must be a table of settings, got {table!r}")
            sections[name] = _build_section(section_cls, name, table)
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
        merged = _unflatten(table)
        _anchor_paths(merged, Path(path).resolve().parent)
        for key, value in _flatten(dict(overrides or {})).items():
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
        for name in _SECTIONS:
            section = getattr(self, name)
            table: dict[str, Any] = {}
            for f in dataclasses.fields(section):
                value = _to_plain(getattr(section, f.name))
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
        """The resolved config as TOML text (what ``config.toml`` in a run directory holds)."""
        return tomli_w.dumps(self.to_mapping())

    def replace(self, **sections: Any) -> RunConfig:
        """Return a copy with whole sections replaced (``cfg.replace(run=new_run)``)."""
        return dataclasses.replace(self, **sections)


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "federation": FederationConfig,
    "strategy": StrategyConfig,
    "simulation": SimulationConfig,
    "privacy": PrivacyConfig,
    "run": RunOptions,
}


# ---------------------------------------------------------------------- parsing helpers
def _build_section(section_cls: type, section: str, table: Mapping[str, Any]) -> Any:
    fields = {config_key(f.name): f for f in dataclasses.fields(section_cls)}
    hints = typing.get_type_hints(section_cls)
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"unknown config key {section}.{key}{_suggest(key, fields)}")
        f = fields[key]
        kwargs[f.name] = _convert(value, hints[f.name], f"{section}.{key}")
    return section_cls(**kwargs)


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Convert one raw value to the annotated type; ``""`` means unset for optionals."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or value == "":
            return None
        inner = next(a for a in args if a is not type(None))
        return _convert(value, inner, where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{where} must be true or false; got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{where} must be an integer; got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where} must be an integer; got {value!r}") from None
        if not number.is_integer():
            raise ConfigError(f"{where} must be an integer; got {value!r}")
        return int(number)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number; got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number; got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number; got {value!r}")
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string; got {value!r}")
        return value
    if annotation is Path:
        if not isinstance(value, str | Path) or not str(value).strip():
            raise ConfigError(f"{where} must be a path; got {value!r}")
        return Path(str(value)).expanduser()
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return choose(value, annotation, where)
    if origin is tuple:
        items = json.loads(value) if isinstance(value, str) and value.startswith("[") else value
        inner = args[0]
        kind = "paths" if inner is Path else "strings"
        if not isinstance(items, list | tuple) or not all(isinstance(i, str | Path) for i in items):
            raise ConfigError(f"{where} must be a list of {kind}; got {value!r}")
        return tuple(_convert(item, inner, where) for item in items)
    raise ConfigError(f"{where}: unsupported setting type {annotation!r}")  # pragma: no cover


def _anchor_paths(nested: dict[str, Any], base: Path) -> None:
    """Make relative path settings in ``nested`` relative to ``base`` (in place)."""
    for section, section_cls in _SECTIONS.items():
        table = nested.get(section)
        if not isinstance(table, dict):
            continue
        hints = typing.get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            key = config_key(f.name)
            value = table.get(key)
            is_path = Path in (hints[f.name], *typing.get_args(hints[f.name]))
            if is_path and isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                table[key] = str(base / value)
            elif is_path and isinstance(value, list):
                table[key] = [
                    str(base / v) if isinstance(v, str) and not Path(v).expanduser().is_absolute() else v for v in value
                ]


def _to_plain(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [str(v) if isinstance(v, Path) else v for v in value]
    return value


def _unflatten(raw: Mapping[str, Any]) -> dict[str, Any]:
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


def _flatten(raw: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping):
            for name, inner in value.items():
                flat[f"{key}.{name}"] = inner
        else:
            flat[key] = value
    return flat


def _suggest(name: str, options: Mapping[str, Any] | typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_min(where: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{where} must be >= {low}; got {value}")


def _check_range(
    where: str,
    value: float,
    *,
    low: float,
    high: float,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ConfigError(f"{where} must be in {left}{low:g}, {high:g}{right}; got {value!r}")
