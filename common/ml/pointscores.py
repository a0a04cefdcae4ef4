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
from typing import TYPE_CHECKING

import numpy as np

from fedward.common.choices import Task
from fedward.common.ml.calibration import CalibrationStats
from fedward.common.ml.metrics import ClassificationMetrics, classification_metrics
from fedward.common.ml.operating import OperatingPoint

if TYPE_CHECKING:
    from fedward.common.ml.classify import ScoredSplit


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
    threshold = 0.5
    if task is Task.BINARY:
        threshold = point.threshold()
    elif task is Task.MULTILABEL and point.thresholds:
        probabilities = _recentred(probabilities, point)  # per-label thresholds become 0.5, ranks kept
    metrics = classification_metrics(
        task, scored.targets, probabilities, loss=scored.loss, threshold=threshold, class_names=classes
    )
    calibration = CalibrationStats.of(scored.logits / point.temperature, scored.targets, task)
    neutral = calibration.index_of(1.0)
    return dataclasses.replace(metrics, ece=calibration.ece(neutral), brier=calibration.mean_brier(neutral))


def _recentred(probabilities: np.ndarray, point: OperatingPoint) -> np.ndarray:
    """Per-label probabilities moved so that each label's threshold sits at 0.5 (same order within a label).

    ``sigmoid(logit(p) - logit(t_k))`` is at least 0.5 exactly when ``p >= t_k``; AUC,
    a rank statistic per label, is unchanged.
    """
    eps = 1e-12
    p = np.clip(probabilities, eps, 1 - eps)
    t = np.clip(np.array([point.threshold(k) for k in range(p.shape[1])]), eps, 1 - eps)
    shifted = np.log(p / (1 - p)) - np.log(t / (1 - t))[None, :]
    return np.asarray(1.0 / (1.0 + np.exp(-shifted)))
