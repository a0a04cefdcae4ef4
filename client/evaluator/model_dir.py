"""A model directory: a pulled global model or a run directory, opened and its weights verified.

Two layouts hold a trained global model:

* **pulled** (``fedward model pull``, :mod:`fedward.client.evaluator.pulled_layout`):
  ``model.safetensors``, ``config.toml``, ``run.json``, ``model_card.json``,
  ``model_card.md`` (the run files the run had) and ``pull.json`` (run, round, sha256);
* **run directory** (written by a run): ``config.toml``, ``run.json``,
  ``models/best.safetensors`` (or ``models/round-NNN.safetensors`` for a chosen round),
  ``models/manifest.json`` and ``model_card.json``.

The dataset schema (task, classes, channels) is read from ``run.json`` first, then from
the model card, then from the config's own declaration, so a model pulled from a run that
has no card yet opens too.

Integrity: the weights' SHA-256 is checked against every hash recorded for that file
(run directories: ``models/manifest.json``, recorded when the file was written, and the
model card's ``weights`` entry; pulled models: ``pull.json`` and the card's entry for the
pulled round; :mod:`fedward.client.evaluator.weights_integrity`). A mismatch raises
:class:`~fedward.common.errors.IntegrityError`; a file with no recorded hash is used and
reported as unverified. Loading the network is :mod:`fedward.client.evaluator.loaded_model`.

Operating point: a classifier is used at the temperature and thresholds the model card's
``operating_point`` entry records for the loaded weights, else at temperature 1 and
threshold 0.5 (:attr:`ModelDir.operating`, :mod:`fedward.client.evaluator.card_operating_point`).

Preprocessing is the training pipeline, reused, never re-implemented: images become
uint8 (N, C, S, S) at the run's image size and channels
(:func:`fedward.common.data.files.to_model_input`,
:func:`fedward.common.data.images.to_model_size`), then float32 in [0, 1]
(:class:`fedward.common.data.images.BatchPipeline` without augmentation).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedward.client.evaluator.card_operating_point import AppliedPoint, applied_point
from fedward.client.evaluator.pulled_layout import PULL_RECORD, PULLED_WEIGHTS
from fedward.client.evaluator.weights_integrity import Recorded, as_int, pulled_hashes, run_hashes, verified_sha256
from fedward.common.choices import FrameMode, ModelName, Task
from fedward.common.config import RunConfig
from fedward.common.data.images import BatchPipeline
from fedward.common.errors import ConfigError, ModelError
from fedward.common.fileio import read_json_object
from fedward.common.ml.operating import OperatingPoint
from fedward.common.rundir.info import read_run_info
from fedward.common.rundir.layout import (
    BEST_RECORD,
    BEST_WEIGHTS,
    CARD_JSON,
    CONFIG_FILE,
    MANIFEST_FILE,
    MODELS_DIR,
    ROUND_WEIGHTS,
    RUN_FILE,
    round_weights,
)
from fedward.common.rundir.manifest import read_manifest
from fedward.common.schema import DatasetSchema

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Preprocessing:
    """How an image becomes model input, exactly as training feeds it.

    1. decode: DICOM display values, PNG/JPEG, or uint8 ``.npz`` pixels;
    2. match channels (gray replicated to RGB, RGB to BT.601 luma), round to uint8 and
       resize to ``image_size`` (MONAI ``Resize``, area when shrinking, bilinear when
       enlarging): uint8 (N, C, S, S);
    3. scale [0, 255] to [0, 1] (MONAI ``ScaleIntensityRange``): float32 (N, C, S, S).

    Attributes:
        image_size: side S of the square model input, pixels.
        channels: image channels C, 1 or 3.
        frames: which frames of multi-frame DICOM files are read (``predict`` uses the
            middle one).
        value_range: range of the scaled model input.
    """

    image_size: int
    channels: int
    frames: FrameMode = FrameMode.MIDDLE
    value_range: tuple[float, float] = (0.0, 1.0)

    def scale(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, S, S) (or float in [0, 255]) to float32 (N, C, S, S) in [0, 1]."""
        scaled: torch.Tensor = BatchPipeline(augment=False).eval()(images)
        return scaled


@dataclass(frozen=True, slots=True)
class ModelDir:
    """An opened, verified model directory (the weights are not loaded yet).

    Attributes:
        path: the directory.
        kind: ``pulled`` or ``run``.
        cfg: the run configuration the model was trained with.
        schema: task, classes and channels.
        weights: the weights file used.
        round: the round that produced the weights, if known.
        sha256: hex SHA-256 of the weights file.
        verified_against: where the matching recorded hashes come from (empty: unverified).
        card: the model card (``{}`` when there is none).
    """

    path: Path
    kind: str
    cfg: RunConfig
    schema: DatasetSchema
    weights: Path
    round: int | None
    sha256: str
    verified_against: tuple[str, ...] = ()
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> Task:
        """The task: binary, multi-class, multi-label or segmentation."""
        return self.schema.task

    @property
    def classes(self) -> tuple[str, ...]:
        """Class (or label) names, output order."""
        return self.schema.classes

    @property
    def model_name(self) -> ModelName:
        """Registry name of the network."""
        return self.cfg.model.name

    @property
    def private(self) -> bool:
        """Whether the network was built Opacus-compatible (any differential privacy on)."""
        return self.cfg.privacy.enabled

    @property
    def preprocessing(self) -> Preprocessing:
        """The training-time input pipeline of this model."""
        return Preprocessing(self.cfg.data.image_size, self.schema.channels, self.cfg.data.frames)

    @property
    def run_name(self) -> str:
        """The run's name (from the card, the pull record or the folder name)."""
        run = self.card.get("run")
        if isinstance(run, dict) and run.get("name"):
            return str(run["name"])
        return self.path.name

    @property
    def operating(self) -> AppliedPoint:
        """The operating point the weights are used at, and its source (the card's, else T 1 and threshold 0.5).

        Raises:
            ModelError: if the card's ``operating_point`` entry is malformed (naming the card).
        """
        best = self.weights.name == Path(BEST_WEIGHTS).name
        return applied_point(self.card, self.path / CARD_JSON, self.schema, self.round, best)

    @property
    def operating_point(self) -> OperatingPoint:
        """Temperature and thresholds of :attr:`operating` (``operating.source`` says where they come from)."""
        return self.operating.point

    def report_header(self) -> dict[str, Any]:
        """The model's entries of an evaluation's ``results.json``: its description, folder and weights file."""
        weights = {"file": str(self.weights), "round": self.round, "sha256": self.sha256}
        return {"model": self.describe(), "model_dir": str(self.path), "weights": weights}

    def describe(self) -> str:
        """One line: run, round, network, data, grid (pixels, or the volume grid in voxels), integrity."""
        where = f"round {self.round}" if self.round is not None else "unknown round"
        check = f"sha256 verified against {', '.join(self.verified_against)}" if self.verified_against else "unverified"
        data = self.cfg.data
        volumes = self.schema.spatial_dims == 3
        sides = "x".join(map(str, data.volume_size))
        grid = (f"{sides} voxel grid" if sides else "the data set's grid") if volumes else f"{data.image_size} px"
        return (
            f"{self.run_name} {where}: {self.model_name.value} on {data.dataset} "
            f"({self.task.value}: {', '.join(self.classes)}), {grid}, {check}"
        )


def open_model_dir(path: Path, round: int | None = None) -> ModelDir:
    """Open a model directory and verify its weights.

    Args:
        path: a pulled model folder or a run directory.
        round: run directories only: use ``models/round-NNN.safetensors`` instead of the
            best model.

    Returns:
        The opened directory.

    Raises:
        ModelError: if the folder is not a model directory, a file it needs (config,
            weights) is missing, or a JSON record is unreadable; the message names the file.
        ConfigError: if ``config.toml`` is invalid, or ``round`` is given for a pulled model.
        IntegrityError: if the weights' SHA-256 differs from a recorded one.
        ModelError: if the card's ``operating_point`` entry is malformed.
    """
    path = Path(path)
    pulled = _is_pulled(path)
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise ModelError(f"{config_file} is missing: the model directory must hold the run's {CONFIG_FILE}")
    cfg = RunConfig.from_toml(config_file)
    card = _read_json(path / CARD_JSON)
    schema = _schema(cfg, card, path)
    if pulled:
        if round is not None:
            raise ConfigError(f"--round applies to run directories; {path} holds one pulled model")
        weights, model_round, recorded = _pulled_weights(path, card)
    else:
        weights, model_round, recorded = _run_weights(path, card, round)
    sha256 = verified_sha256(weights, recorded)
    kind = "pulled" if pulled else "run"
    sources = tuple(source for source, _ in recorded)
    opened = ModelDir(path, kind, cfg, schema, weights, model_round, sha256, sources, card)
    _ = opened.operating  # a malformed operating point is refused when the directory opens
    return opened


def _is_pulled(path: Path) -> bool:
    """Whether ``path`` is a pulled model (else a run directory).

    Raises:
        ModelError: if it is neither, or does not exist.
    """
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist")
    pulled = (path / PULLED_WEIGHTS).is_file() and not (path / MODELS_DIR).is_dir()
    if not pulled and not (path / MODELS_DIR).is_dir():
        raise ModelError(
            f"{path} is not a model directory: it has neither {PULLED_WEIGHTS} (a model from 'fedward model pull') "
            f"nor {MODELS_DIR}/ (a run directory)"
        )
    return pulled


def _pulled_weights(path: Path, card: dict[str, Any]) -> tuple[Path, int | None, Recorded]:
    """A pulled model's weights file, round and recorded hashes (``pull.json``, the card)."""
    weights = path / PULLED_WEIGHTS
    record = _read_json(path / PULL_RECORD)
    model_round = as_int(record.get("round")) if record else _metadata_round(weights)
    return weights, model_round, pulled_hashes(record, card, model_round)


def _run_weights(path: Path, card: dict[str, Any], round: int | None) -> tuple[Path, int | None, Recorded]:
    """A run directory's weights file (best or ``round``), round and recorded hashes (manifest, card).

    Raises:
        ModelError: if the weights file is missing.
    """
    weights = path / (BEST_WEIGHTS if round is None else round_weights(round))
    if not weights.is_file():
        raise ModelError(_missing_weights(path, weights, round))
    entry = _manifest_entry(path, weights.name)
    return weights, _round_of(path, weights, entry), run_hashes(weights, entry, card)


# ---------------------------------------------------------------------------- helpers
def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file; ``{}`` when it does not exist.

    Raises:
        ModelError: if it exists but is unreadable or not a JSON object, naming the file.
    """
    if not path.is_file():
        return {}
    try:
        return read_json_object(path)
    except (OSError, ValueError) as err:
        raise ModelError(
            f"{path} cannot be read as a JSON object ({type(err).__name__}); restore or pull it again"
        ) from None


def _schema(cfg: RunConfig, card: dict[str, Any], path: Path) -> DatasetSchema:
    """Task, classes and channels: from ``run.json``, else the model card, else the config's declaration."""
    if (path / RUN_FILE).is_file():
        try:
            return read_run_info(path).schema
        except ConfigError as err:
            raise ModelError(str(err)) from None
    data = card.get("dataset") if isinstance(card.get("dataset"), dict) else None
    if data is not None and data.get("task") and data.get("classes") and data.get("channels"):
        with contextlib.suppress(ConfigError):
            return DatasetSchema.from_json(data, str(path / CARD_JSON))
    declared = cfg.data.declared_schema()
    if declared is not None:
        return declared
    raise ModelError(
        f"{path} does not say the model's task, classes and channels: neither {RUN_FILE}, {CARD_JSON} "
        f"nor data.task/classes/channels in {CONFIG_FILE}; use the files the run wrote"
    )


def _metadata_round(weights: Path) -> int | None:
    """The round fedward wrote into a safetensors header, if any."""
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            return as_int((handle.metadata() or {}).get("round"))
    except Exception:  # an unreadable file is reported when the weights are loaded
        return None


def _round_of(path: Path, weights: Path, entry: Any) -> int | None:
    if isinstance(entry, dict) and as_int(entry.get("round")) is not None:
        return as_int(entry.get("round"))
    match = ROUND_WEIGHTS.fullmatch(weights.name)
    if match:
        return int(match.group(1))
    best = _read_json(path / BEST_RECORD)
    return as_int(best.get("round")) if best else _metadata_round(weights)


def _missing_weights(path: Path, weights: Path, round: int | None) -> str:
    if round is None:
        return f"{weights} is missing: the run in {path} has no best model yet (has it finished a round?)"
    rounds = sorted(int(m.group(1)) for p in (path / MODELS_DIR).iterdir() if (m := ROUND_WEIGHTS.fullmatch(p.name)))
    listed = ", ".join(map(str, rounds)) if rounds else "none"
    return f"{weights} is missing: the run in {path} has no weights for round {round} (rounds: {listed})"


def _manifest_entry(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The manifest's record of weight file ``name``; a damaged manifest records nothing (warned)."""
    try:
        return read_manifest(run_dir).get(name)
    except (OSError, ValueError) as err:
        log.warning("%s is unreadable (%s); its hashes cannot be checked", run_dir / MANIFEST_FILE, err)
        return None
