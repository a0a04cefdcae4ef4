"""Classification metrics of a model's predictions on one split, computed with MONAI.

Every evaluation in fedward (a hospital's validation split, the server's test split, the
centralized baseline) reports the same six numbers, :data:`METRIC_NAMES`:

- ``auc``: area under the ROC curve (Hanley & McNeil, 1982), computed by
  :func:`monai.metrics.compute_roc_auc` from the probabilities. It equals the
  Mann-Whitney U statistic: the probability that a random positive scores higher than a
  random negative, ties counting one half. Multi-class: macro average of the
  one-vs-rest AUCs of the classes (Provost & Domingos, 2000; scikit-learn's
  ``roc_auc_score(..., multi_class="ovr", average="macro")``). Multi-label: macro
  average of the per-label AUCs. AUC is threshold-free, so it is the primary metric of
  MedMNIST (Yang et al., "MedMNIST v2", Scientific Data 2023).
- ``accuracy``: fraction of correct predictions. Binary and multi-class: fraction of
  images whose predicted class is the target. Multi-label: fraction of the N x K
  (image, label) decisions that are correct (MedMNIST's convention).
- ``sensitivity``: recall, true positive rate TP / (TP + FN).
- ``specificity``: true negative rate TN / (TN + FP).
- ``f1``: harmonic mean of precision and recall, 2 TP / (2 TP + FP + FN)
  (van Rijsbergen, 1979).

TP, FP, TN and FN come from :func:`monai.metrics.get_confusion_matrix` and the rates from
:func:`monai.metrics.compute_confusion_matrix_metric`. Binary tasks report class 1 (the
positive class) against class 0; multi-class tasks treat every class one-vs-rest and
macro-average sensitivity, specificity and F1 over classes; multi-label tasks
macro-average them over labels.

Predictions: binary, ``P(class 1) >= threshold``; multi-class, the arg-max class (the
first one on ties); multi-label, ``P(label) >= threshold`` for each label.

Undefined values are ``None``, never NaN: AUC of a class or label whose targets are all
equal, sensitivity without positives, specificity without negatives, F1 without
positives and without predicted positives. Macro averages are taken over the classes or
labels where the metric is defined and are ``None`` when it is defined for none of them.
Where scikit-learn counts such a class as 0 (``zero_division``) or raises, this module
leaves it out of the average.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch
from monai.metrics.confusion_matrix import compute_confusion_matrix_metric, get_confusion_matrix
from monai.metrics.rocauc import compute_roc_auc

from fedward.common.choices import Task

log = logging.getLogger(__name__)

METRIC_NAMES: tuple[str, ...] = ("auc", "accuracy", "sensitivity", "specificity", "f1", "loss")
"""Names of the metrics, in :class:`ClassificationMetrics` field order."""

_TP: Final = 0
"""Column of the true positives in MONAI's confusion matrix ``[TP, FP, TN, FN]``."""


@dataclass(frozen=True, slots=True)
class ClassificationMetrics:
    """Quality of a classifier on one split; every value is a plain float in [0, 1] or None.

    ``None`` marks a metric that is undefined on this split (see the module docstring),
    e.g. the AUC of a hospital whose validation images all carry the same label.

    Attributes:
        auc: ROC AUC; macro one-vs-rest (multi-class) or macro over labels (multi-label).
        accuracy: fraction of correct predictions (multi-label: of all N x K decisions).
        sensitivity: recall TP / (TP + FN) of class 1 (binary), macro over classes or labels.
        specificity: TN / (TN + FP) of class 1 (binary), macro over classes or labels.
        f1: F1 score of class 1 (binary), macro over classes or labels.
        loss: mean loss, if the caller computed one (not bounded by 1).
        balanced_accuracy: mean recall over the classes present (binary and multi-class;
            Brodersen et al., 2010); ``None`` for multi-label.
        class_sensitivity: multi-class: ``(class name, recall)`` per class with images, when
            the caller named the classes.
        ece: expected calibration error of the probabilities (15 bins, Guo et al., 2017),
            when the caller computed it (at an operating point).
        brier: mean Brier score of the probabilities (Brier, 1950), when computed.
    """

    auc: float | None
    accuracy: float | None
    sensitivity: float | None
    specificity: float | None
    f1: float | None
    loss: float | None = None
    balanced_accuracy: float | None = None
    class_sensitivity: tuple[tuple[str, float], ...] = ()
    ece: float | None = None
    brier: float | None = None

    def as_dict(self, prefix: str) -> dict[str, float]:
        """The defined metrics keyed ``"{prefix}-{name}"``, ready for a Flower MetricRecord.

        Args:
            prefix: the split, e.g. ``"val"`` or ``"test"``.

        Returns:
            ``{"val-auc": 0.91, "val-accuracy": 0.85, ...}`` in :data:`METRIC_NAMES` order,
            then ``val-balanced-accuracy`` and ``val-sensitivity-<class>``; metrics that are
            ``None`` are left out.
        """
        values = (self.auc, self.accuracy, self.sensitivity, self.specificity, self.f1, self.loss)
        out = {f"{prefix}-{name}": value for name, value in zip(METRIC_NAMES, values, strict=True) if value is not None}
        if self.balanced_accuracy is not None:
            out[f"{prefix}-balanced-accuracy"] = self.balanced_accuracy
        out.update({f"{prefix}-sensitivity-{name}": value for name, value in self.class_sensitivity})
        out.update({f"{prefix}-{name}": v for name, v in (("ece", self.ece), ("brier", self.brier)) if v is not None})
        return out

    def wire(self, prefix: str) -> dict[str, float]:
        """What a hospital sends: :meth:`as_dict` (classification metrics combine as weighted means)."""
        return self.as_dict(prefix)


def classification_metrics(
    task: Task,
    targets: np.ndarray,
    probabilities: np.ndarray,
    loss: float | None = None,
    threshold: float = 0.5,
    class_names: tuple[str, ...] = (),
) -> ClassificationMetrics:
    """AUC, accuracy, sensitivity, specificity and F1 of predicted probabilities.

    Args:
        task: binary, multi-class or multi-label.
        targets: the true labels.
            Binary: integer (N,) in {0, 1}. Multi-class: integer (N,) in 0..K-1. For both,
            shape (N, 1) is accepted too (MedMNIST's label layout). Multi-label: (N, K) of
            0/1, integer, bool or float.
        probabilities: float (N, K) model outputs in [0, 1], any real dtype (computed in
            float64). Binary: softmax (N, 2), column 1 is P(positive). Multi-class:
            softmax (N, K), K >= 2. Multi-label: sigmoid (N, K), one column per label.
        loss: mean loss on the same data, passed through to the result; must be finite.
        threshold: decision threshold in [0, 1] on P(positive) (binary) or on each
            label's probability (multi-label); unused for multi-class (arg-max).
        class_names: multi-class: the classes' names in index order, to report each
            class's sensitivity; ``()`` reports none.

    Returns:
        The metrics as plain Python floats; a metric undefined on these targets is ``None``.

    Raises:
        ValueError: if ``task`` is not a :class:`~fedward.common.choices.Task`; if there
            are no samples; if the shapes do not match the task (e.g. probabilities not
            (N, 2) for a binary task, or targets with another N); if probabilities are not
            finite or outside [0, 1]; if targets are not valid labels of the task; if
            ``threshold`` is outside [0, 1] or ``loss`` is not finite.
    """
    task = _check_task(task)
    scores = _check_probabilities(task, probabilities)
    n = scores.shape[0]
    cutoff = _check_threshold(threshold)
    mean_loss = _check_loss(loss)
    truth, scores, predicted = _decisions(task, targets, scores, cutoff)
    auc = _macro(_roc_auc_per_column(scores, truth), "auc", task)
    confusion = _confusion_per_column(predicted, truth)
    sensitivity = _macro(_rate("sensitivity", confusion), "sensitivity", task)
    specificity = _macro(_rate("specificity", confusion), "specificity", task)
    return ClassificationMetrics(
        auc=auc,
        accuracy=_accuracy(task, confusion, n),
        sensitivity=sensitivity,
        specificity=specificity,
        f1=_macro(_rate("f1 score", confusion), "f1", task),
        loss=mean_loss,
        balanced_accuracy=_balanced_accuracy(task, sensitivity, specificity),
        class_sensitivity=_class_sensitivity(task, confusion, class_names),
    )


def _balanced_accuracy(task: Task, sensitivity: float | None, specificity: float | None) -> float | None:
    """Mean recall over the classes present: (TPR + TNR) / 2 for binary, macro recall for multi-class."""
    if task is Task.MULTICLASS:
        return sensitivity  # macro one-vs-rest recall over the classes with images
    if task is Task.BINARY:
        defined = [v for v in (sensitivity, specificity) if v is not None]
        return math.fsum(defined) / len(defined) if defined else None
    return None


def _class_sensitivity(task: Task, confusion: torch.Tensor, names: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """Multi-class: each named class's recall (classes without images left out)."""
    if task is not Task.MULTICLASS or len(names) != confusion.shape[0]:
        return ()
    rates = _rate("sensitivity", confusion)
    return tuple((name, rate) for name, rate in zip(names, rates, strict=True) if not math.isnan(rate))


def _check_threshold(threshold: float) -> float:
    """The decision threshold as a float in [0, 1]."""
    cutoff = _as_float(threshold, "threshold")
    if not 0.0 <= cutoff <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return cutoff


def _check_loss(loss: float | None) -> float | None:
    """The caller's mean loss as a finite float, or None."""
    mean_loss = None if loss is None else _as_float(loss, "loss")
    if mean_loss is not None and not math.isfinite(mean_loss):
        raise ValueError(f"loss must be a finite number or None, got {loss!r}")
    return mean_loss


def _decisions(
    task: Task, targets: np.ndarray, scores: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(truth, scores, predicted)`` per scored column: bool (N, C), float64 (N, C), bool (N, C).

    Binary: C = 1, class 1 against class 0. Multi-class: C = K one-vs-rest columns, the
    arg-max class predicted. Multi-label: C = K labels, each thresholded at ``cutoff``.
    """
    n, k = scores.shape
    if task is Task.MULTILABEL:
        return _check_multilabel_targets(targets, n, k), scores, scores >= cutoff
    labels = _check_class_targets(task, targets, n, k)
    truth = np.eye(k, dtype=bool)[labels]
    if task is Task.BINARY:
        # Class 1 against class 0: one column of scores, truth and predictions.
        return truth[:, 1:], scores[:, 1:], scores[:, 1:] >= cutoff
    return truth, scores, np.eye(k, dtype=bool)[np.argmax(scores, axis=1)]


def _accuracy(task: Task, confusion: torch.Tensor, n: int) -> float | None:
    """Accuracy from the per-column ``[TP, FP, TN, FN]`` counts of ``n`` images."""
    if task is Task.MULTICLASS:
        # Exactly one class is predicted per image, so the correct images are the summed TPs.
        return float(confusion[:, _TP].sum().item()) / n
    # Binary: the one column; multi-label: micro over all N x K decisions.
    return _rate("accuracy", confusion.sum(dim=0, keepdim=True))[0]


def _as_float(value: float, what: str) -> float:
    if isinstance(value, bool | str | bytes):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None


def _check_task(task: Task) -> Task:
    try:
        return Task(task)
    except ValueError:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(t.value for t in Task)}") from None


def _check_probabilities(task: Task, probabilities: np.ndarray) -> np.ndarray:
    """float64 (N, K) copy of ``probabilities`` after checking shape and values."""
    array = np.asarray(probabilities)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"probabilities must be a real floating-point array, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"probabilities must have shape (N, K), got {array.shape}")
    n, k = array.shape
    if n == 0:
        raise ValueError("no samples: probabilities has N = 0 rows")
    if task is Task.BINARY and k != 2:
        raise ValueError(
            f"binary task: probabilities must have shape (N, 2) (softmax over classes 0 and 1), got {array.shape}"
        )
    if task is Task.MULTICLASS and k < 2:
        raise ValueError(f"multiclass task: probabilities must have shape (N, K) with K >= 2, got {array.shape}")
    if task is Task.MULTILABEL and k < 1:
        raise ValueError(f"multilabel task: probabilities must have shape (N, K) with K >= 1, got {array.shape}")
    scores = array.astype(np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("probabilities contain NaN or infinite values (did the model diverge?)")
    if scores.min() < 0.0 or scores.max() > 1.0:
        raise ValueError(
            f"probabilities must lie in [0, 1] (softmax or sigmoid outputs, not logits); "
            f"got values in [{scores.min():.4g}, {scores.max():.4g}]"
        )
    return scores


def _check_class_targets(task: Task, targets: np.ndarray, n: int, k: int) -> np.ndarray:
    """int64 (N,) class indices in 0..K-1 (binary: K = 2)."""
    array = np.asarray(targets)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{task.value} task: targets must have shape (N,) or (N, 1), got {np.shape(targets)}")
    if array.shape[0] != n:
        raise ValueError(f"targets have N = {array.shape[0]} samples but probabilities have N = {n}")
    values = _as_real(array, "targets")
    if not (np.all(values == np.round(values)) and values.min() >= 0 and values.max() <= k - 1):
        raise ValueError(
            f"{task.value} task: targets must be class indices in 0..{k - 1}, got values "
            f"{np.unique(values)[:10].tolist()}"
        )
    return values.astype(np.int64)


def _check_multilabel_targets(targets: np.ndarray, n: int, k: int) -> np.ndarray:
    """bool (N, K) label indicators."""
    array = np.asarray(targets)
    if array.shape != (n, k):
        raise ValueError(
            f"multilabel task: targets must have the shape of probabilities, ({n}, {k}), got {array.shape}"
        )
    values = _as_real(array, "targets")
    if not np.all((values == 0) | (values == 1)):
        raise ValueError(f"multilabel task: targets must be 0 or 1, got values {np.unique(values)[:10].tolist()}")
    return np.asarray(values == 1, dtype=np.bool_)


def _as_real(array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"{what} must be a real numeric array, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return array


def _roc_auc_per_column(scores: np.ndarray, truth: np.ndarray) -> list[float]:
    """ROC AUC of each column with MONAI; NaN where the column's targets are all equal.

    Degenerate columns are not passed to MONAI, which would warn and return NaN.
    """
    aucs: list[float] = []
    for column in range(scores.shape[1]):
        positives = int(truth[:, column].sum())
        if positives in (0, truth.shape[0]):
            aucs.append(math.nan)
            continue
        auc = compute_roc_auc(
            torch.from_numpy(np.ascontiguousarray(scores[:, column])),
            torch.from_numpy(truth[:, column].astype(np.int64)),
        )
        aucs.append(float(auc))  # type: ignore[arg-type]
    return aucs


def _confusion_per_column(predicted: np.ndarray, truth: np.ndarray) -> torch.Tensor:
    """float64 (C, 4) ``[TP, FP, TN, FN]`` counts of each column, summed over the samples.

    MONAI counts per sample (0/1 in float32); the sum is taken in float64 so the counts
    stay exact however many samples there are.
    """
    per_sample = get_confusion_matrix(
        torch.from_numpy(predicted.astype(np.float32)), torch.from_numpy(truth.astype(np.float32))
    )  # (N, C, 4)
    return per_sample.sum(dim=0, dtype=torch.float64)


def _rate(name: str, confusion: torch.Tensor) -> list[float]:
    """A MONAI confusion-matrix metric for each row of ``confusion`` (NaN where 0 / 0)."""
    return [float(v) for v in compute_confusion_matrix_metric(name, confusion).tolist()]


def _macro(values: list[float], name: str, task: Task) -> float | None:
    """Mean of the defined (non-NaN) values, or None if there are none."""
    defined = [v for v in values if not math.isnan(v)]
    if len(defined) < len(values):
        undefined = [i for i, v in enumerate(values) if math.isnan(v)]
        if task is Task.BINARY:
            log.debug("%s is undefined for these binary targets", name)
        else:
            log.debug(
                "%s is undefined for %s %s; averaging over the other %d",
                name,
                "labels" if task is Task.MULTILABEL else "classes",
                undefined,
                len(defined),
            )
    if not defined:
        return None
    return math.fsum(defined) / len(defined)
