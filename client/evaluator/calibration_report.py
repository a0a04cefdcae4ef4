"""Calibration of a classifier's probabilities, and its metrics at per-label thresholds.

``fedward model evaluate`` reports, next to the decision metrics, how well the
(temperature-scaled) probabilities are calibrated:

* **ECE**, expected calibration error (Naeini et al., AAAI 2015, as in Guo et al., "On
  calibration of modern neural networks", ICML 2017): the top-label confidences are put
  in :data:`ECE_BINS` equal-width bins ``[b/15, (b+1)/15)`` (the last one closed) and
  ``ECE = sum_b |B_b| / n * |accuracy(B_b) - confidence(B_b)|``. The confidence of an
  image is its predicted class's probability (binary: ``max(p, 1 - p)`` of P(class 1),
  multi-class: the largest probability; ties go to the first class), correct when that
  class is the true one; multi-label tasks count every (image, label) pair, confidence
  ``max(p, 1 - p)``, correct when ``p >= 0.5`` matches the label.
* **Brier score** (Brier, "Verification of forecasts expressed in terms of probability",
  Monthly Weather Review 78, 1950): binary, ``mean (p1 - y)^2`` of P(class 1);
  multi-class, ``mean_i sum_k (p_ik - 1[y_i = k])^2``; multi-label, the mean of
  ``(p - y)^2`` over every (image, label) pair.

Both are counted by :mod:`fedward.common.ml.calibration`, as the run's own records count
them. :func:`decision_metrics` is :func:`~fedward.common.ml.metrics.classification_metrics`
at one threshold per label (:func:`~fedward.common.ml.pointscores.metrics_at_thresholds`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedward.common.choices import Task
from fedward.common.ml.calibration import RELIABILITY_BINS, calibration_of
from fedward.common.ml.metrics import ClassificationMetrics
from fedward.common.ml.pointscores import metrics_at_thresholds

ECE_BINS = RELIABILITY_BINS
"""Equal-width confidence bins of the expected calibration error (Guo et al., 2017)."""
CALIBRATION = ("ece", "brier")
"""Calibration measures evaluated and bootstrapped, in report order."""


def calibration(task: Task, labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """``{"ece": ..., "brier": ...}`` of calibrated probabilities (:data:`CALIBRATION` order).

    Counted as the run's records count them (:func:`~fedward.common.ml.calibration.calibration_of`).

    Args:
        task: binary, multi-class or multi-label.
        labels: int (N,) or (N, 1) class indices, or (N, K) 0/1 labels (multi-label).
        probabilities: float (N, K) calibrated probabilities.

    Raises:
        ValueError: if there are no images or the shapes do not fit the task.
    """
    ece, brier = calibration_of(probabilities, labels, task)
    return {"ece": ece, "brier": brier}


def decision_metrics(
    task: Task, labels: np.ndarray, probabilities: np.ndarray, thresholds: Sequence[float]
) -> ClassificationMetrics:
    """The metrics at one threshold per label (:func:`~fedward.common.ml.pointscores.metrics_at_thresholds`).

    Args:
        task: binary, multi-class or multi-label.
        labels: int (N,) or (N, 1) class indices, or (N, K) 0/1 labels (multi-label).
        probabilities: float (N, K) calibrated probabilities.
        thresholds: binary: one (on P(class 1)); multi-label: one, or one per label;
            multi-class: ignored (arg-max).

    Raises:
        ValueError: as :func:`~fedward.common.ml.metrics.classification_metrics`.
    """
    return metrics_at_thresholds(task, labels, probabilities, thresholds)
