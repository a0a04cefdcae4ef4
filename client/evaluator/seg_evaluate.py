"""Evaluate a segmentation model on labelled data: Dice and HD95 per label with bootstrap intervals, overlays, results.

Data is read by :mod:`fedward.client.evaluator.labelled_masks` (a mask folder or a
Decathlon folder, on the model's grid), predicted as training's scoring does
(:func:`~fedward.common.ml.segment.segment`: one forward pass per image, sliding windows
of the grid for volumes) and scored per case and foreground label with
:func:`~fedward.common.ml.segscores.per_image_dice` and
:func:`~fedward.common.ml.segscores.per_image_hd95` (undefined values, NaN, are left out:
Dice where the truth lacks the label, HD95 unless both masks hold it).

Reported per label and as a mean: the mean over cases, and its percentile bootstrap
interval over cases (:func:`~fedward.common.ml.segscores.bootstrap_interval`; Efron &
Tibshirani, 1993), cases resampled ``resamples`` times with a seeded generator. The
``mean`` row averages each case's defined labels first, then the cases, so its interval
resamples cases too. HD95 is in mm for volumes; 2D images without a physical spacing
(PNG, JPEG) report it in pixels of the original image.

Overlays (:mod:`fedward.client.evaluator.overlay`) of the first cases that hold a
structure are written into the output folder with ``results.json``: they show image
content, so they stay on the evaluator's machine, where the images are.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedward.client.evaluator.labelled_masks import LabelledMasks, load_labelled_masks
from fedward.client.evaluator.loaded_model import LoadedModel
from fedward.client.evaluator.model_dir import ModelDir
from fedward.client.evaluator.overlay import write_overlay
from fedward.common.errors import DataError
from fedward.common.ml.segment import EVAL_BATCH_SIZE, segment
from fedward.common.ml.segscores import bootstrap_interval, per_image_dice, per_image_hd95

log = logging.getLogger(__name__)

CONFIDENCE = 0.95
DEFAULT_OVERLAYS = 4
MEAN = "mean"
"""Key of the mean over labels in :attr:`SegEvaluation.dice` and :attr:`SegEvaluation.hd95`."""


@dataclass(frozen=True, slots=True)
class LabelScore:
    """One metric of one label (or the mean) over the cases.

    Attributes:
        value: mean over the cases where it is defined; ``None`` when none is.
        ci95: percentile bootstrap interval of that mean; ``None`` with fewer than 2 cases.
        cases: cases where it is defined.
    """

    value: float | None
    ci95: tuple[float, float] | None
    cases: int

    def to_json(self) -> dict[str, Any]:
        """``{"value", "ci95", "cases"}``."""
        return {"value": self.value, "ci95": list(self.ci95) if self.ci95 else None, "cases": self.cases}


@dataclass(frozen=True, slots=True)
class SegEvaluation:
    """Result of :func:`evaluate_segmentation`.

    Attributes:
        model: the model directory.
        data: what was read.
        dice: label name (and :data:`MEAN`) to its Dice.
        hd95: label name (and :data:`MEAN`) to its HD95, in :attr:`hd95_unit`.
        hd95_unit: ``mm``, or ``px`` for 2D images without physical spacing.
        resamples: bootstrap resamples.
        seed: bootstrap seed.
        overlays: overlay PNGs written.
        results_json: the results file, if written.
    """

    model: ModelDir
    data: LabelledMasks
    dice: dict[str, LabelScore]
    hd95: dict[str, LabelScore]
    hd95_unit: str
    resamples: int
    seed: int
    overlays: tuple[Path, ...] = field(default_factory=tuple)
    results_json: Path | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form (``results.json``, ``--json``)."""
        return {
            **self.model.report_header(),
            "data": self.data.source,
            "split": self.data.split,
            "cases": len(self.data.masks),
            "task": self.model.task.value,
            "classes": list(self.model.classes),
            "metrics": {
                "dice": {name: score.to_json() for name, score in self.dice.items()},
                "hd95": {name: score.to_json() for name, score in self.hd95.items()},
            },
            "hd95_unit": self.hd95_unit,
            "bootstrap": {
                "method": "percentile",
                "unit": "case",
                "resamples": self.resamples,
                "confidence": CONFIDENCE,
                "seed": self.seed,
            },
            "overlays": [str(p) for p in self.overlays],
            "skipped_files": [p.to_json() for p in self.data.problems],
            "warnings": [p.to_json() for p in self.data.warnings],
        }


def evaluate_segmentation(
    loaded: LoadedModel,
    data: Path,
    *,
    split: str = "test",
    out_dir: Path | None = None,
    resamples: int = 1000,
    seed: int = 0,
    overlays: int = DEFAULT_OVERLAYS,
    strict: bool = False,
) -> SegEvaluation:
    """Evaluate a segmentation model on a labelled folder; write ``results.json`` and overlays.

    Args:
        loaded: the model.
        data: a mask folder or a Decathlon folder (see :func:`load_labelled_masks`).
        split: the split to evaluate.
        out_dir: folder for ``results.json`` and ``overlay-NNN.png`` (``None``: write nothing).
        resamples: bootstrap resamples (>= 1).
        seed: bootstrap seed.
        overlays: number of overlay PNGs (>= 0).
        strict: refuse a data set of another modality or channels than the model's
            (:class:`~fedward.common.data.modality.ModalityMismatchError`) instead of warning.

    Raises:
        DataError: as :func:`load_labelled_masks`, or ``resamples`` < 1 or ``overlays`` < 0.
    """
    if resamples < 1 or overlays < 0:
        raise DataError(f"--resamples must be >= 1 and --overlays >= 0; got {resamples} and {overlays}")
    labelled = load_labelled_masks(data, loaded.model_dir, split, strict=strict)
    shown = _overlay_cases(labelled, overlays if out_dir is not None else 0)
    dice, hd95, predicted = _score(loaded, labelled, shown)
    names = loaded.model_dir.schema.foreground
    result = SegEvaluation(
        loaded.model_dir,
        labelled,
        _summaries(dice, names, resamples, seed),
        _summaries(hd95, names, resamples, seed),
        "mm" if labelled.masks.spatial_dims == 3 else "px",
        resamples,
        seed,
    )
    if out_dir is None:
        return result
    out = Path(out_dir)
    masks = labelled.masks
    written = tuple(
        write_overlay(out / f"overlay-{index:03d}.png", masks.images[index], masks.masks[index], predicted[index])
        for index in shown
    )
    result = replace(result, overlays=written, results_json=out / "results.json")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return result


def _overlay_cases(labelled: LabelledMasks, count: int) -> list[int]:
    """Indices of the first ``count`` cases whose truth holds a structure (then of any case)."""
    masks = labelled.masks.masks
    holding = [i for i in range(len(masks)) if masks[i].any()]
    others = [i for i in range(len(masks)) if not masks[i].any()]
    return (holding + others)[:count]


@torch.no_grad()
def _score(
    loaded: LoadedModel, labelled: LabelledMasks, keep: list[int]
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """float64 (N, L) Dice and HD95 per case and label, and the predicted label maps of the ``keep`` cases."""
    split = labelled.masks
    network = loaded.network.to(loaded.device).eval()
    labels = len(loaded.model_dir.schema.foreground)
    dice, hd95, kept = [], [], {}
    for start in range(0, len(split), EVAL_BATCH_SIZE):
        stop = min(start + EVAL_BATCH_SIZE, len(split))
        images = torch.from_numpy(split.images[start:stop]).to(loaded.device)
        predicted = segment(network, images, split.spatial_dims).argmax(dim=1).cpu()
        truth = torch.from_numpy(split.masks[start:stop])
        dice.append(per_image_dice(predicted, truth, labels))
        hd95.append(per_image_hd95(predicted, truth, split.spacing[start:stop], labels))
        kept.update({i: predicted[i - start].numpy().astype(np.uint8) for i in keep if start <= i < stop})
    return np.concatenate(dice), np.concatenate(hd95), kept


def _summaries(values: np.ndarray, names: tuple[str, ...], resamples: int, seed: int) -> dict[str, LabelScore]:
    """Per label and :data:`MEAN`: mean over cases of (N, L) ``values`` (NaN: undefined) and its bootstrap interval."""
    defined = ~np.isnan(values)
    counts = defined.sum(axis=1)
    per_case = np.full(values.shape[0], np.nan)
    per_case[counts > 0] = np.nansum(values[counts > 0], axis=1) / counts[counts > 0]
    columns = {name: values[:, i] for i, name in enumerate(names)}
    return {name: _summary(column, resamples, seed) for name, column in {MEAN: per_case, **columns}.items()}


def _summary(column: np.ndarray, resamples: int, seed: int) -> LabelScore:
    kept = column[~np.isnan(column)]
    value = float(kept.mean()) if kept.size else None
    interval = bootstrap_interval(column, samples=resamples, level=CONFIDENCE, seed=seed)
    return LabelScore(value, interval, int(kept.size))
