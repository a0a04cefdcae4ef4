"""fedward.common.ml.metrics against scikit-learn's reference implementations."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    multilabel_confusion_matrix,
    recall_score,
    roc_auc_score,
)

from fedward.common.choices import Task
from fedward.common.ml.metrics import METRIC_NAMES, ClassificationMetrics, classification_metrics

TOL = 1e-9
SEEDS = (0, 1, 2)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return probabilities


def _single_label_data(seed: int, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets (N,) and informative, tie-free softmax probabilities (N, K)."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), targets] += 1.0  # better than chance, far from perfect
    probabilities = _softmax(logits)
    assert all(len(np.unique(probabilities[:, j])) == n for j in range(k))  # no ties
    return targets, probabilities


def _multilabel_data(seed: int, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets (N, K) in {0, 1} and tie-free sigmoid probabilities (N, K)."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < rng.uniform(0.1, 0.6, size=k)).astype(np.int64)
    logits = rng.normal(size=(n, k)) + 1.5 * targets - 0.8
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    assert all(len(np.unique(probabilities[:, j])) == n for j in range(k))
    return targets, probabilities


def _specificity(tn: np.ndarray, fp: np.ndarray) -> float:
    return float(np.mean(tn / (tn + fp)))


def _assert_close(actual: float | None, expected: float) -> None:
    assert actual is not None
    assert type(actual) is float
    assert actual == pytest.approx(expected, abs=TOL, rel=0)


def _assert_no_nan(metrics: ClassificationMetrics) -> None:
    for name in METRIC_NAMES:
        value = getattr(metrics, name)
        assert value is None or (type(value) is float and math.isfinite(value)), (name, value)


# --- agreement with scikit-learn -----------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_matches_sklearn(seed: int, threshold: float) -> None:
    y, p = _single_label_data(seed, n=300, k=2)
    pred = (p[:, 1] >= threshold).astype(np.int64)

    m = classification_metrics(Task.BINARY, y, p, loss=0.25, threshold=threshold)

    tn, fp, _fn, _tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    _assert_close(m.auc, roc_auc_score(y, p[:, 1]))
    _assert_close(m.accuracy, accuracy_score(y, pred))
    _assert_close(m.sensitivity, recall_score(y, pred))
    _assert_close(m.specificity, tn / (tn + fp))
    _assert_close(m.f1, f1_score(y, pred))
    assert m.loss == 0.25


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [3, 5])
def test_multiclass_matches_sklearn(seed: int, k: int) -> None:
    y, p = _single_label_data(seed, n=400, k=k)
    pred = p.argmax(axis=1)

    m = classification_metrics(Task.MULTICLASS, y, p)

    mcm = multilabel_confusion_matrix(y, pred, labels=list(range(k)))
    _assert_close(m.auc, roc_auc_score(y, p, multi_class="ovr", average="macro"))
    _assert_close(m.accuracy, accuracy_score(y, pred))
    _assert_close(m.sensitivity, recall_score(y, pred, average="macro"))
    _assert_close(m.specificity, _specificity(mcm[:, 0, 0], mcm[:, 0, 1]))
    _assert_close(m.f1, f1_score(y, pred, average="macro"))
    assert m.loss is None


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_multilabel_matches_sklearn(seed: int, threshold: float) -> None:
    y, p = _multilabel_data(seed, n=300, k=6)
    pred = (p >= threshold).astype(np.int64)

    m = classification_metrics(Task.MULTILABEL, y, p, threshold=threshold)

    mcm = multilabel_confusion_matrix(y, pred)
    _assert_close(m.auc, roc_auc_score(y, p, average="macro"))
    _assert_close(m.accuracy, accuracy_score(y.ravel(), pred.ravel()))
    _assert_close(m.sensitivity, recall_score(y, pred, average="macro"))
    _assert_close(m.specificity, _specificity(mcm[:, 0, 0], mcm[:, 0, 1]))
    _assert_close(m.f1, f1_score(y, pred, average="macro"))


def test_multilabel_accepts_float_and_bool_targets() -> None:
    y, p = _multilabel_data(3, n=100, k=4)
    reference = classification_metrics(Task.MULTILABEL, y, p)
    assert classification_metrics(Task.MULTILABEL, y.astype(np.float32), p) == reference
    assert classification_metrics(Task.MULTILABEL, y.astype(bool), p) == reference


def test_single_label_accepts_medmnist_column_targets() -> None:
    y, p = _single_label_data(4, n=100, k=3)
    assert classification_metrics(Task.MULTICLASS, y[:, None], p) == classification_metrics(Task.MULTICLASS, y, p)


@pytest.mark.parametrize("task", [Task.BINARY, Task.MULTICLASS, Task.MULTILABEL])
def test_auc_with_ties_matches_sklearn(task: Task) -> None:
    n, k = 200, (2 if task is Task.BINARY else 4)
    if task is Task.MULTILABEL:
        y, p = _multilabel_data(7, n=n, k=k)
    else:
        y, p = _single_label_data(7, n=n, k=k)
    p = np.round(p, 1)  # at most 11 distinct values per column: many ties
    if task is not Task.MULTILABEL:  # rows must still sum to 1 (sklearn checks for "ovr")
        top = p.argmax(axis=1)
        p[np.arange(n), top] = np.round(p[np.arange(n), top] + 1.0 - p.sum(axis=1), 1)
    assert all(len(np.unique(p[:, j])) <= 12 for j in range(k))

    m = classification_metrics(task, y, p)

    if task is Task.BINARY:
        expected = roc_auc_score(y, p[:, 1])
    elif task is Task.MULTICLASS:
        expected = roc_auc_score(y, p, multi_class="ovr", average="macro")
    else:
        expected = roc_auc_score(y, p, average="macro")
    _assert_close(m.auc, expected)


# --- perfect and degenerate predictions ---------------------------------------------------


def test_perfect_predictions_score_one() -> None:
    y = np.array([0, 1, 2, 2, 1, 0, 1])
    p = np.eye(3)[y] * 0.8 + 0.2 / 3
    y_bin = (y == 1).astype(np.int64)
    p_bin = np.stack([1.0 - y_bin * 0.9 - 0.05, y_bin * 0.9 + 0.05], axis=1)
    y_ml = np.array([[1, 0, 1], [0, 1, 1], [0, 0, 1], [1, 1, 0]])
    p_ml = np.where(y_ml == 1, 0.9, 0.1)

    for task, targets, probabilities in [
        (Task.BINARY, y_bin, p_bin),
        (Task.MULTICLASS, y, p),
        (Task.MULTILABEL, y_ml, p_ml),
    ]:
        m = classification_metrics(task, targets, probabilities)
        assert m.auc == m.accuracy == m.sensitivity == m.f1 == 1.0, task
        # Label 2 of y_ml is positive in 3 of 4 images: specificity is defined for all labels.
        assert m.specificity == 1.0, task


def test_binary_single_class_targets_give_none_not_nan() -> None:
    y = np.zeros(6, dtype=np.int64)
    p_negative = np.tile([0.8, 0.2], (6, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MONAI's "y values can not be all 0" must not fire
        m = classification_metrics(Task.BINARY, y, p_negative)
    assert m == ClassificationMetrics(
        auc=None, accuracy=1.0, sensitivity=None, specificity=1.0, f1=None, balanced_accuracy=1.0
    )

    p_mixed = np.array([[0.8, 0.2], [0.3, 0.7], [0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    m = classification_metrics(Task.BINARY, y, p_mixed)
    # Predicted positives without any positive target: F1 is defined and 0.
    assert (m.auc, m.sensitivity, m.f1) == (None, None, 0.0)
    _assert_close(m.specificity, 4 / 6)
    _assert_close(m.accuracy, 4 / 6)

    m = classification_metrics(Task.BINARY, np.ones(6, dtype=np.int64), p_mixed)
    assert (m.auc, m.specificity) == (None, None)
    _assert_close(m.sensitivity, 2 / 6)


def test_multiclass_absent_class_averages_over_present_classes() -> None:
    k = 4
    y, p = _single_label_data(11, n=300, k=k)
    present = [0, 1, 3]
    keep = y != 2  # class 2 never occurs in the targets but is still predicted sometimes
    y, p = y[keep], p[keep]
    pred = p.argmax(axis=1)
    assert (pred == 2).any()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(Task.MULTICLASS, y, p)

    per_class_auc = [roc_auc_score(y == c, p[:, c]) for c in present]
    _assert_close(m.auc, float(np.mean(per_class_auc)))
    _assert_close(m.accuracy, accuracy_score(y, pred))
    _assert_close(m.sensitivity, recall_score(y, pred, labels=present, average="macro"))
    mcm = multilabel_confusion_matrix(y, pred, labels=list(range(k)))
    _assert_close(m.specificity, _specificity(mcm[:, 0, 0], mcm[:, 0, 1]))
    # Class 2 is predicted, so sklearn's default labels include it with F1 = 0, as here.
    _assert_close(m.f1, f1_score(y, pred, average="macro"))


def test_multilabel_constant_label_averages_over_defined_labels() -> None:
    y, p = _multilabel_data(5, n=200, k=5)
    y[:, 1] = 0  # label 1 never positive: AUC and sensitivity undefined for it
    y[:, 3] = 1  # label 3 always positive: AUC and specificity undefined for it
    pred = (p >= 0.5).astype(np.int64)

    m = classification_metrics(Task.MULTILABEL, y, p)

    auc_labels, pos_labels, neg_labels = [0, 2, 4], [0, 2, 3, 4], [0, 1, 2, 4]
    _assert_close(m.auc, roc_auc_score(y[:, auc_labels], p[:, auc_labels], average="macro"))
    _assert_close(m.sensitivity, recall_score(y[:, pos_labels], pred[:, pos_labels], average="macro"))
    mcm = multilabel_confusion_matrix(y[:, neg_labels], pred[:, neg_labels])
    _assert_close(m.specificity, _specificity(mcm[:, 0, 0], mcm[:, 0, 1]))
    f1_labels = [j for j in range(5) if y[:, j].any() or pred[:, j].any()]
    _assert_close(m.f1, f1_score(y[:, f1_labels], pred[:, f1_labels], average="macro"))


@pytest.mark.parametrize("task", [Task.BINARY, Task.MULTICLASS, Task.MULTILABEL])
def test_tiny_random_inputs_never_give_nan(task: Task) -> None:
    rng = np.random.default_rng(99)
    for n in (1, 2, 3):
        for _ in range(15):
            k = 2 if task is Task.BINARY else 3
            if task is Task.MULTILABEL:
                y = rng.integers(0, 2, size=(n, k))
                p = rng.random((n, k))
            else:
                y = rng.integers(0, k, size=n)
                p = _softmax(rng.normal(size=(n, k)))
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                m = classification_metrics(task, y, p)
            _assert_no_nan(m)
            assert m.accuracy is not None


# --- result object --------------------------------------------------------------------------


def test_metric_names_follow_field_order() -> None:
    fields = tuple(f.name for f in dataclasses.fields(ClassificationMetrics))
    assert fields[: len(METRIC_NAMES)] == METRIC_NAMES


def test_as_dict_prefixes_keys_and_omits_none() -> None:
    m = ClassificationMetrics(auc=0.9, accuracy=0.8, sensitivity=None, specificity=0.7, f1=0.6, loss=0.5)
    assert m.as_dict("val") == {
        "val-auc": 0.9,
        "val-accuracy": 0.8,
        "val-specificity": 0.7,
        "val-f1": 0.6,
        "val-loss": 0.5,
    }
    full = classification_metrics(Task.BINARY, *_single_label_data(0, n=50, k=2), loss=0.3)
    assert list(full.as_dict("test")) == [*(f"test-{name}" for name in METRIC_NAMES), "test-balanced-accuracy"]
    assert all(type(v) is float for v in full.as_dict("test").values())
    assert ClassificationMetrics(None, None, None, None, None).as_dict("val") == {}


def test_metrics_are_immutable() -> None:
    m = ClassificationMetrics(0.9, 0.8, 0.7, 0.6, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.auc = 0.1


# --- input validation -----------------------------------------------------------------------

_Y2, _P2 = _single_label_data(0, n=10, k=2)
_Y3, _P3 = _single_label_data(0, n=10, k=3)
_YML, _PML = _multilabel_data(0, n=10, k=3)


@pytest.mark.parametrize(
    ("task", "targets", "probabilities", "match"),
    [
        (Task.BINARY, _Y3, _P3, r"\(N, 2\)"),
        (Task.BINARY, _Y2, _P2[:, 1], r"\(N, K\)"),
        (Task.BINARY, _Y2, _P2[:, 1:], r"\(N, 2\)"),
        (Task.BINARY, _Y2[:-1], _P2, "N = 9"),
        (Task.BINARY, _Y2[:0], _P2[:0], "no samples"),
        (Task.BINARY, np.full(10, 2), _P2, "class indices"),
        (Task.BINARY, _Y2[:, None].repeat(2, axis=1), _P2, r"\(N,\) or \(N, 1\)"),
        (Task.MULTICLASS, _Y3, _P3[:, :1], "K >= 2"),
        (Task.MULTICLASS, np.where(_Y3 == 0, 3, _Y3), _P3, "class indices"),
        (Task.MULTICLASS, _Y3 - 1, _P3, "class indices"),
        (Task.MULTICLASS, _Y3 + 0.5, _P3, "class indices"),
        (Task.MULTILABEL, _YML[:, :2], _PML, r"shape of probabilities"),
        (Task.MULTILABEL, _YML[:-1], _PML, r"shape of probabilities"),
        (Task.MULTILABEL, _YML * 2, _PML, "0 or 1"),
        (Task.MULTILABEL, _YML, np.where(_PML > 0.5, np.nan, _PML), "NaN"),
        (Task.MULTILABEL, _YML, _PML * 10 - 5, r"\[0, 1\]"),
        (Task.MULTILABEL, _YML, _PML.astype(str), "dtype"),
    ],
)
def test_bad_inputs_raise_value_error(task: Task, targets: np.ndarray, probabilities: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        classification_metrics(task, targets, probabilities)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, math.nan])
def test_threshold_out_of_range_raises(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        classification_metrics(Task.BINARY, _Y2, _P2, threshold=threshold)


def test_non_finite_loss_and_unknown_task_raise() -> None:
    with pytest.raises(ValueError, match="loss"):
        classification_metrics(Task.BINARY, _Y2, _P2, loss=math.inf)
    with pytest.raises(ValueError, match="unknown task"):
        classification_metrics("regression", _Y2, _P2)


def test_balanced_accuracy_and_per_class_sensitivity() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    p = np.eye(3)[[0, 0, 1, 1, 1, 1, 2, 0]] * 0.8 + 0.2 / 3
    m = classification_metrics(Task.MULTICLASS, y, p, class_names=("benign", "malignant", "normal"))
    _assert_close(m.balanced_accuracy, (0.5 + 1.0 + 0.5) / 3)
    assert dict(m.class_sensitivity) == {"benign": 0.5, "malignant": 1.0, "normal": 0.5}
    keys = m.as_dict("test")
    assert keys["test-sensitivity-malignant"] == 1.0 and "test-balanced-accuracy" in keys
    binary = classification_metrics(Task.BINARY, np.array([0, 0, 1, 1]), np.eye(2)[[0, 1, 1, 1]])
    _assert_close(binary.balanced_accuracy, (1.0 + 0.5) / 2)
