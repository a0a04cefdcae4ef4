"""Classification metrics of a scored split at an operating point (calibrated probabilities, chosen thresholds).

The server's test split, the centralized baseline's test split and the model card report
a classifier as it will be used: probabilities divided by the run's temperature, decisions
at the thresholds chosen on validation (:class:`~fedward.common.ml.operating.OperatingPoint`).
AUC does not change with either; sensitivity, specificity, accuracy and F1 do, and the
calibration figures (ECE over 15 bins, Guo et al., ICML 2017; Brier score, Brier 1950)
are those of the calibrated probabilities.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedward.common.choices import Task
from fedward.common.ml.calibration import CalibrationStats
from fedward.common.ml.metrics import ClassificationMetrics, classification_metrics
from fedward.common.ml.operating import OperatingPoint


@dataclass(frozen=True, slots=True)
class ScoredSplit:
    """A split's logits and targets, kept in the scoring process to re-score at an operating point.

    Attributes:
        task: the task.
        logits: float64 (N, K), uncalibrated.
        targets: int64 (N,) or (N, K) 0/1.
        loss: the mean unweighted loss at temperature 1.
        auc: the AUC of the network's own probabilities, when scored: a temperature does
            not change their order, so it is reported as is (recomputing it from the
            calibrated float64 values would only move float32 ties).
    """

    task: Task
    logits: np.ndarray
    targets: np.ndarray
    loss: float
    auc: float | None = None


def scores_at(point: OperatingPoint, scored: ScoredSplit, classes: tuple[str, ...] = ()) -> ClassificationMetrics:
    """The metrics of ``scored``'s predictions at ``point``.

    Args:
        point: the temperature and thresholds.
        scored: the split's logits (N, K) and targets.
        classes: class names for per-class sensitivity (multi-class).

    Returns:
        The metrics at the point, with ``ece`` and ``brier`` of the calibrated probabilities.

    Raises:
        ValueError: as :func:`~fedward.common.ml.metrics.classification_metrics`.
    """
    task = scored.task
    probabilities = point.probabilities(scored.logits, task)
    metrics = metrics_at_thresholds(task, scored.targets, probabilities, point.thresholds, scored.loss, classes)
    calibration = CalibrationStats.of(scored.logits / point.temperature, scored.targets, task)
    neutral = calibration.index_of(1.0)
    auc = scored.auc if scored.auc is not None else metrics.auc
    return dataclasses.replace(metrics, auc=auc, ece=calibration.ece(neutral), brier=calibration.mean_brier(neutral))


def metrics_at_thresholds(
    task: Task,
    targets: np.ndarray,
    probabilities: np.ndarray,
    thresholds: Sequence[float],
    loss: float | None = None,
    classes: tuple[str, ...] = (),
) -> ClassificationMetrics:
    """:func:`~fedward.common.ml.metrics.classification_metrics` with one threshold per label.

    Args:
        task: binary, multi-class or multi-label.
        targets: as :func:`~fedward.common.ml.metrics.classification_metrics` takes them.
        probabilities: float (N, K) calibrated probabilities.
        thresholds: binary: one (on P(class 1)); multi-label: one for every label, or one
            per label; multi-class: ignored (arg-max). Empty: 0.5.
        loss: mean loss passed through.
        classes: class names for per-class sensitivity (multi-class).

    Raises:
        ValueError: as :func:`~fedward.common.ml.metrics.classification_metrics`, or if a
            multi-label task gets neither one threshold nor one per label.
    """
    cuts = tuple(float(t) for t in thresholds) or (0.5,)
    if task is Task.MULTILABEL and len(set(cuts)) > 1:
        probabilities = _recentred(np.asarray(probabilities, dtype=np.float64), cuts)  # thresholds at 0.5
        cuts = (0.5,)
    return classification_metrics(task, targets, probabilities, loss=loss, threshold=cuts[0], class_names=classes)


def _recentred(probabilities: np.ndarray, thresholds: tuple[float, ...]) -> np.ndarray:
    """Per-label probabilities moved so that each label's threshold sits at 0.5 (same order within a label).

    ``sigmoid(logit(p) - logit(t_k))`` is at least 0.5 exactly when ``p >= t_k``; AUC,
    a rank statistic per label, is unchanged.

    Raises:
        ValueError: if there is not one threshold per label.
    """
    if len(thresholds) != probabilities.shape[1]:
        raise ValueError(f"{len(thresholds)} thresholds for {probabilities.shape[1]} labels")
    eps = 1e-12
    p = np.clip(probabilities, eps, 1 - eps)
    t = np.clip(np.array(thresholds), eps, 1 - eps)
    shifted = np.log(p / (1 - p)) - np.log(t / (1 - t))[None, :]
    return np.asarray(1.0 / (1.0 + np.exp(-shifted)))
