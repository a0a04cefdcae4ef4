"""Model cards (Mitchell et al., "Model Cards for Model Reporting", FAT* 2019) of finished runs.

Every run directory gets ``model_card.json`` (for machines) and ``model_card.md`` (for
people, :mod:`fedward.common.rundir.card_markdown`): what was trained on which data at
which hospitals, how the federation ran, how well the selected model does, what privacy
guarantee holds, library versions, and the SHA-256 of the weights so an evaluator can
prove a file is the one the run produced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedward.common.choices import Modality, Task
from fedward.common.config.federation import FederationConfig
from fedward.common.data.catalog import lookup
from fedward.common.fileio import atomic_write, sha256_of
from fedward.common.ml.networks import NETWORKS
from fedward.common.ml.tasks import head_for
from fedward.common.rundir.card_markdown import render_markdown
from fedward.common.rundir.card_operating import operating_point_section
from fedward.common.rundir.layout import BEST_WEIGHTS, CARD_JSON, CARD_MD, MODELS_DIR
from fedward.common.rundir.recorder import RunRecorder
from fedward.common.timestamps import now_iso
from fedward.common.version import library_versions

CARD_FORMAT = "fedward-model-card/1"
NO_PRIVACY: dict[str, Any] = {
    "differential_privacy": "none",
    "statement": "Model updates were not noised; no formal (epsilon, delta) guarantee holds. "
    "Images never left the hospitals.",
    "guarantees": [],
}


@dataclass(frozen=True, slots=True)
class HospitalEntry:
    """A hospital as the model card lists it (counts only).

    Attributes:
        name: hospital name.
        train_images: images it trained on.
        val_images: images in its local validation split.
        class_counts: training + validation images per class, if known (simulation).
        files_skipped: image files the hospital could not use (image folders).
        fedward: the fedward version the hospital ran (federated runs; ``None`` if unknown).
        device: where it trained and in what precision, e.g. ``cpu (bfloat16)`` or
            ``cuda (float16)`` (``None`` if unknown).
    """

    name: str
    train_images: int
    val_images: int
    class_counts: tuple[int, ...] | None = None
    files_skipped: int = 0
    fedward: str | None = None
    device: str | None = None


@dataclass(frozen=True, slots=True)
class RunEnding:
    """How a run ended and what only its runner knows, for the model card.

    Attributes:
        status: ``completed``, ``failed`` or ``stopped``.
        reason: why the run stopped early, if it did.
        hospitals: the participating hospitals and their sizes.
        parameters: trainable parameter count of the model.
        test_images: size of the server-side test split, if one was scored.
        privacy: the privacy section (:func:`fedward.server.app.dp_plan.privacy_card`);
            ``None`` means no differential privacy.
    """

    status: str
    reason: str = ""
    hospitals: Sequence[HospitalEntry] = ()
    parameters: int | None = None
    test_images: int | None = None
    privacy: Mapping[str, Any] | None = field(default=None)


def build_model_card(recorder: RunRecorder, ending: RunEnding) -> dict[str, Any]:
    """Assemble the model card of a finished (or stopped) run.

    Args:
        recorder: the run's recorder (its spec, rows, best round, files).
        ending: how the run ended.

    Returns:
        A JSON-serialisable dict (see ``CARD_FORMAT``).

    Raises:
        OSError: if a weight file cannot be hashed.
    """
    cfg = recorder.spec.config
    best_round = recorder.best_round if recorder.best_round is not None else recorder.last_round
    reported = head_for(recorder.spec.schema).reported
    rows = recorder.server_rows
    return {
        "format": CARD_FORMAT,
        "run": _run_section(recorder, ending),
        "dataset": _dataset_section(recorder, ending),
        "hospitals": [asdict(h) for h in ending.hospitals],
        "partition": {
            "method": cfg.federation.partition.value,
            "alpha": cfg.federation.alpha,
            "hospitals": cfg.federation.hospitals,
            "validation_fraction": cfg.data.val_fraction,
        },
        "model": {
            "name": cfg.model.name.value,
            "summary": NETWORKS[cfg.model.name].summary,
            "parameters": ending.parameters,
            "init_weights": str(cfg.model.init_weights) if cfg.model.init_weights else None,
        },
        "training": _training_section(recorder),
        "selection": _selection_section(recorder, best_round),
        "metrics": {
            "best": _metrics_at(rows, best_round, reported),
            "final": _metrics_at(rows, recorder.last_round, reported),
        },
        "operating_point": operating_point_section(recorder, best_round),
        "privacy": dict(ending.privacy) if ending.privacy is not None else NO_PRIVACY,
        "weights": _weights_section(recorder, best_round),
        "versions": library_versions(),
        "intended_use": "Research on federated training of medical-image classifiers and segmentation networks. "
        "Not a medical device; "
        "not for clinical decisions.",
        "limitations": [
            f"Trained on {cfg.data.image_size} px images; performance on other resolutions or sources is unknown.",
            "Metrics come from the dataset's official test split; other hospitals' populations may differ.",
        ],
        "strategy_name": cfg.strategy.name.value,
    }


def _selection_section(recorder: RunRecorder, best_round: int) -> dict[str, Any]:
    """Which round the card's model is, by what validation metric, and how validation was gathered."""
    federated = recorder.mode == "federated"
    return {
        "metric": recorder.selection_metric,
        "round": best_round,
        "value": None if recorder.best_round is None else recorder.best_value,
        "note": "the best round is chosen on validation data; test metrics never choose a model",
        "validation": validation_note(recorder.spec.config.federation) if federated else "the pooled validation split",
    }


def _run_section(recorder: RunRecorder, ending: RunEnding) -> dict[str, Any]:
    return {
        "name": recorder.run_dir.name,
        "mode": recorder.mode,
        "status": ending.status,
        "stop_reason": ending.reason,
        "started": recorder.started,
        "finished": now_iso(),
        "wall_time_s": round(recorder.wall_seconds(), 1),
        "rounds_completed": max(recorder.last_round, 0),
        "rounds_planned": recorder.spec.config.federation.rounds,
        "seed": recorder.spec.config.run.seed,
        "resumed_after_rounds": [int(r["after-round"]) for r in recorder.resumed],
    }


def _dataset_section(recorder: RunRecorder, ending: RunEnding) -> dict[str, Any]:
    data, schema = recorder.spec.config.data, recorder.spec.schema
    entry = lookup(data.dataset)
    return {
        "name": data.dataset,
        "task": schema.task.value,
        "classes": list(schema.classes),
        "channels": schema.channels,
        "spatial_dims": schema.spatial_dims,
        "modality": schema.modality.value if schema.modality is not None else None,
        "image_size": data.image_size,
        "preprocessing": _preprocessing(recorder),
        "source": "MedMNIST v2 (Yang et al., Scientific Data 10, 41, 2023)" if entry else "user-provided data set",
        "license": entry.license if entry else "unknown",
        "test_images": ending.test_images,
    }


def _preprocessing(recorder: RunRecorder) -> dict[str, Any]:
    """How images reach the model: grid, spacing and intensity pipeline (segmentation), or the square size."""
    data, schema = recorder.spec.config.data, recorder.spec.schema
    if schema.task is not Task.SEGMENTATION:
        return {"resize": f"{data.image_size} x {data.image_size} px (MONAI Resize)", "intensity": "x / 255"}
    grid = list(data.volume_size) or "largest extent of the data set, rounded up to a multiple of 16"
    return {
        "grid": grid if schema.spatial_dims == 3 else [data.image_size, data.image_size],
        "orientation": "RAS" if schema.spatial_dims == 3 else None,
        "spacing_mm": list(data.spacing) or "as acquired",
        "intensity": data.intensity.value,
        "ct_window_hu": list(data.ct_window) if schema.modality is Modality.CT else None,
        "inference": "sliding window over the grid (MONAI)" if schema.spatial_dims == 3 else "whole image",
    }


def _training_section(recorder: RunRecorder) -> dict[str, Any]:
    cfg = recorder.spec.config
    return {
        "strategy": dict(cfg.to_mapping()["strategy"]),
        "rounds": cfg.federation.rounds,
        "local_epochs": cfg.train.local_epochs,
        "fraction_train": cfg.federation.fraction_train,
        "optimizer": cfg.train.optimizer.value,
        "learning_rate": cfg.train.lr,
        "schedule": cfg.train.schedule.value,
        "batch_size": cfg.train.batch_size,
        "class_weighting": cfg.train.class_weighting.value,
        "augmentation": cfg.data.augment,
        "target": cfg.data.target.value,
        "seg_loss": cfg.train.seg_loss.value,
    }


def _weights_section(recorder: RunRecorder, best_round: int) -> dict[str, Any]:
    weights: dict[str, Any] = {}
    if recorder.best_file.is_file():
        weights["best"] = {
            "file": BEST_WEIGHTS,
            "round": best_round,
            "sha256": sha256_of(recorder.best_file),
        }
    final_file = recorder.round_file(recorder.last_round)
    if recorder.last_round >= 0 and final_file.is_file():
        weights["final"] = {
            "file": f"{MODELS_DIR}/{final_file.name}",
            "round": recorder.last_round,
            "sha256": sha256_of(final_file),
        }
    return weights


def _metrics_at(rows: Sequence[Mapping[str, Any]], server_round: int | None, reported: Sequence[str]) -> dict[str, Any]:
    for row in rows:
        if row.get("round") == server_round:
            keep = {"round": server_round}
            for split in ("val", "test"):
                for name in reported:
                    key = f"{split}-{name}"
                    if row.get(key) is not None:
                        keep[key] = row[key]
            return keep
    return {}


def finish_run(recorder: RunRecorder, ending: RunEnding) -> dict[str, Any]:
    """Close a run: plots, the model card (JSON and Markdown), then the final status.

    ``status.json`` in a terminal state is written last: whoever sees it (``fedward
    simulate``, the registry) finds the card and plots complete.

    Returns:
        The card.
    """
    recorder.conclude()
    card = build_model_card(recorder, ending)
    write_model_card(recorder.run_dir, card)
    recorder.mark_finished(ending.status, ending.reason)
    return card


def write_model_card(run_dir: Path, card: Mapping[str, Any]) -> None:
    """Write ``model_card.json`` and ``model_card.md`` into ``run_dir``."""
    atomic_write(Path(run_dir) / CARD_JSON, json.dumps(card, indent=2))
    atomic_write(Path(run_dir) / CARD_MD, render_markdown(card))


def validation_note(federation: FederationConfig) -> str:
    """How the hospitals' validation metrics of each round were gathered (``federation.evaluate-in-train``)."""
    if federation.fraction_evaluate == 0.0:
        return "no federated validation (federation.fraction-evaluate 0)"
    if federation.carries_evaluation:
        return (
            "each round's global model was scored on the hospitals' validation splits at the start of the "
            "next round's training message (the last round's by an evaluation message); a hospital that "
            "failed that training sent no scores for the round"
        )
    return "each round's global model was scored on the hospitals' validation splits by an evaluation message"
