"""Evaluate a loaded model on labelled data: metrics, bootstrap intervals, ``results.json`` and ``roc.png``.

Data is read by :mod:`fedward.client.evaluator.labelled_data`, ROC curves are drawn by
:mod:`fedward.client.evaluator.roc`. Metrics are those of :mod:`fedward.common.ml.metrics`
(AUC, accuracy, sensitivity, specificity, F1) of the calibrated probabilities, decided at
the model's operating point (:attr:`~fedward.client.evaluator.model_dir.ModelDir.operating`:
the thresholds chosen on validation, else 0.5; ``threshold`` overrides them), and the
calibration of those probabilities: ECE and Brier score
(:mod:`fedward.client.evaluator.calibration_report`). Their 95% intervals are percentile
bootstrap intervals (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993):
images are resampled with replacement ``resamples`` times with a seeded NumPy generator
and the metrics recomputed; a resample where a metric is undefined (e.g. AUC when it
holds one class only) is skipped for that metric and counted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedward.client.evaluator.calibration_report import CALIBRATION, ECE_BINS, calibration, decision_metrics
from fedward.client.evaluator.card_operating_point import AppliedPoint
from fedward.client.evaluator.labelled_data import LabelledData, load_labelled
from fedward.client.evaluator.loaded_model import LoadedModel
from fedward.client.evaluator.model_dir import ModelDir
from fedward.client.evaluator.roc import RocCurve, plot_roc, roc_curves
from fedward.common.choices import Task
from fedward.common.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95
REPORTED = ("auc", "accuracy", "sensitivity", "specificity", "f1")
"""Metrics evaluated and bootstrapped, in report order (then :data:`CALIBRATION`: ece, brier)."""


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Percentile bootstrap intervals.

    Attributes:
        intervals: metric (:data:`REPORTED`, then ece and brier) -> (low, high), ``None``
            when too few resamples define it.
        resamples: resamples drawn.
        skipped: metric -> resamples where it was undefined and left out.
        seed: seed of the NumPy generator.
        confidence: coverage of the intervals (0.95).
    """

    intervals: dict[str, tuple[float, float] | None]
    resamples: int
    skipped: dict[str, int]
    seed: int
    confidence: float


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Result of :func:`evaluate_model`.

    Attributes:
        model: one line describing the model.
        data: :class:`LabelledData` description.
        metrics: point estimates of :data:`REPORTED` at the operating point (``None``:
            undefined on this data).
        bootstrap: intervals.
        class_auc: one-vs-rest (or per-label) AUC per class, ``None`` where undefined.
        class_counts: images per class (positives per label).
        operating: the temperature and thresholds used, and their source.
        calibration: ECE and Brier score of the calibrated probabilities.
        roc_png: the ROC figure, if written.
        results_json: the results file, if written.
    """

    model: ModelDir
    data: LabelledData
    metrics: dict[str, float | None]
    bootstrap: Bootstrap
    class_auc: dict[str, float | None]
    class_counts: dict[str, int]
    operating: AppliedPoint
    calibration: dict[str, float]
    roc_png: Path | None = None
    results_json: Path | None = None

    @property
    def threshold(self) -> float | list[float] | None:
        """The decision threshold: one (binary, or every label), one per label, or ``None`` (arg-max)."""
        cuts = self.operating.thresholds()
        return None if not cuts else (cuts[0] if len(set(cuts)) == 1 else list(cuts))

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form (``results.json``, ``--json``)."""
        boot = self.bootstrap
        ci95 = {name: _pair(boot.intervals.get(name)) for name in (*REPORTED, *CALIBRATION)}
        return {
            **self.model.report_header(),
            "data": self.data.source,
            "split": self.data.split,
            "images": len(self.data.dataset),
            "task": self.model.task.value,
            "classes": list(self.model.classes),
            "class_counts": self.class_counts,
            "threshold": self.threshold,
            "operating_point": self.operating.to_json(),
            "metrics": {name: {"value": self.metrics.get(name), "ci95": ci95[name]} for name in REPORTED},
            "calibration": {
                **{name: {"value": value, "ci95": ci95[name]} for name, value in self.calibration.items()},
                "ece_bins": ECE_BINS,
                "temperature": self.operating.point.temperature,
            },
            "class_auc": self.class_auc,
            "bootstrap": {
                "method": "percentile",
                "resamples": boot.resamples,
                "confidence": boot.confidence,
                "seed": boot.seed,
                "skipped": boot.skipped,
            },
            "roc_png": str(self.roc_png) if self.roc_png else None,
            "skipped_files": [p.to_json() for p in self.data.problems],
            "warnings": [p.to_json() for p in self.data.warnings],
        }


# --------------------------------------------------------------------------- statistics
def bootstrap_intervals(
    task: Task,
    labels: np.ndarray,
    probabilities: np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    threshold: float | Sequence[float] = 0.5,
) -> Bootstrap:
    """Percentile bootstrap intervals of :data:`REPORTED` metrics and the calibration (ece, brier).

    Args:
        task: the task.
        labels: int (N, 1) class indices or (N, K) 0/1 labels.
        probabilities: float (N, K).
        resamples: number of resamples (>= 1).
        seed: seed of ``numpy.random.default_rng``.
        confidence: interval coverage in (0, 1).
        threshold: decision threshold (binary, multi-label), or one per label (multi-label).

    Returns:
        Intervals and, per metric, how many resamples were skipped because it was undefined.

    Raises:
        DataError: if ``resamples`` < 1, ``confidence`` is outside (0, 1) or there are no images.
    """
    if resamples < 1:
        raise DataError(f"--resamples must be >= 1; got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise DataError(f"confidence must be in (0, 1); got {confidence}")
    n = labels.shape[0]
    if n == 0:
        raise DataError("no images to bootstrap")
    cuts = (threshold,) if isinstance(threshold, int | float) else tuple(threshold)
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {name: [] for name in (*REPORTED, *CALIBRATION)}
    for _ in range(resamples):
        rows = rng.integers(0, n, size=n)
        for name, value in _measures(task, labels[rows], probabilities[rows], cuts).items():
            if value is not None:
                values[name].append(value)
    tail = 100.0 * (1.0 - confidence) / 2.0
    intervals: dict[str, tuple[float, float] | None] = {}
    for name, found in values.items():
        if len(found) < 2:
            intervals[name] = None
            continue
        low, high = np.percentile(np.asarray(found), [tail, 100.0 - tail])
        intervals[name] = (float(low), float(high))
    skipped = {name: resamples - len(found) for name, found in values.items()}
    if skipped["auc"]:
        log.info("bootstrap: %d of %d resamples had a single class and were skipped for AUC", skipped["auc"], resamples)
    return Bootstrap(intervals, resamples, skipped, seed, confidence)


def _measures(
    task: Task, labels: np.ndarray, probabilities: np.ndarray, thresholds: Sequence[float]
) -> dict[str, float | None]:
    """:data:`REPORTED` metrics at ``thresholds``, then ece and brier, of one (re)sample."""
    metrics = decision_metrics(task, labels, probabilities, thresholds)
    return {**{name: getattr(metrics, name) for name in REPORTED}, **calibration(task, labels, probabilities)}


# ------------------------------------------------------------------------------- driver
def evaluate_model(
    loaded: LoadedModel,
    data: Path,
    *,
    split: str = "test",
    out_dir: Path | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    threshold: float | None = None,
    strict: bool = False,
) -> Evaluation:
    """Evaluate a loaded model on labelled data; write ``results.json`` and ``roc.png``.

    Args:
        loaded: the model.
        data: see :func:`~fedward.client.evaluator.labelled_data.load_labelled`.
        split: the split to evaluate.
        out_dir: folder for ``results.json`` and ``roc.png`` (``None``: write nothing).
        resamples: bootstrap resamples.
        seed: bootstrap seed.
        threshold: decision threshold of every label (binary, multi-label), in [0, 1];
            ``None``: the model's operating point.
        strict: leave out images of another modality or channels than the model's
            (listed as skipped) instead of evaluating them with a warning.

    Raises:
        DataError: as :func:`~fedward.client.evaluator.labelled_data.load_labelled` and
            :func:`bootstrap_intervals`, or a threshold outside [0, 1].
    """
    operating = loaded.model_dir.operating.override(threshold)
    labelled = load_labelled(data, loaded.model_dir, split, strict=strict)
    result, curves = _measure(loaded, labelled, resamples=resamples, seed=seed, operating=operating)
    if out_dir is None:
        return result
    return _write_results(result, curves, Path(out_dir), Path(data).name)


def _measure(
    loaded: LoadedModel, labelled: LabelledData, *, resamples: int, seed: int, operating: AppliedPoint
) -> tuple[Evaluation, list[RocCurve]]:
    """Point metrics, calibration, bootstrap intervals, per-class AUC and ROC curves of the model on the data."""
    model_dir = loaded.model_dir
    probabilities = loaded.probabilities(labelled.dataset.images)
    labels = labelled.dataset.labels
    task, classes = model_dir.task, model_dir.classes
    cuts = operating.thresholds()
    point = decision_metrics(task, labels, probabilities, cuts)
    metrics = {name: getattr(point, name) for name in REPORTED}
    boot = bootstrap_intervals(task, labels, probabilities, resamples=resamples, seed=seed, threshold=cuts or 0.5)
    curves = roc_curves(task, labels, probabilities, classes)
    by_name = {c.name: c.auc for c in curves}
    class_auc = {c: by_name.get(c) for c in classes if task is not Task.BINARY or c == classes[1]}
    counts = labelled.dataset.class_counts()
    result = Evaluation(
        model_dir,
        labelled,
        metrics,
        boot,
        class_auc,
        {c: int(k) for c, k in zip(classes, counts, strict=True)},
        operating,
        calibration(task, labels, probabilities),
    )
    return result, curves


def _write_results(result: Evaluation, curves: list[RocCurve], out_dir: Path, data_name: str) -> Evaluation:
    """Write ``roc.png`` (when there is a curve) and ``results.json`` into ``out_dir``.

    Returns:
        ``result`` with the paths written.
    """
    png = None
    if curves:
        title = f"ROC: {result.model.run_name} on {data_name} ({result.data.split})"
        png = plot_roc(curves, out_dir / "roc.png", title)
    else:
        log.warning("no ROC curve: every class is absent or is the only one in the data")
    written = dataclasses.replace(result, roc_png=png, results_json=out_dir / "results.json")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(
        json.dumps(written.to_json(), indent=2, default=_plain) + "\n", encoding="utf-8"
    )
    return written


def default_out_dir(model_dir: ModelDir, data: Path, split: str) -> Path:
    """``<model dir>/evaluations/<data name>-<split>``."""
    return model_dir.path / "evaluations" / f"{Path(data).stem or 'data'}-{split}"


def _pair(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [interval[0], interval[1]]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
