"""fedward.common.ml.calibration against scikit-learn and direct per-image formulas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import log_softmax
from sklearn.metrics import log_loss

from fedward.common.choices import Task
from fedward.common.ml import calibration
from fedward.common.ml.calibration import (
    RELIABILITY_BINS,
    TEMPERATURES,
    UNCALIBRATED,
    CalibrationStats,
    plot_reliability,
)
from fedward.common.ml.operating import OperatingPoint

SEEDS = (0, 1, 2)


def _single_label(seed: int, n: int, k: int, sharpen: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, K) and targets (N,) drawn from softmax(logits / sharpen): calibrated at T = sharpen."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(scale=1.5, size=(n, k))
    p = OperatingPoint().probabilities(true_logits, Task.MULTICLASS)
    targets = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return true_logits * sharpen, np.minimum(targets, k - 1)


def _multilabel(seed: int, n: int, k: int, sharpen: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(scale=1.5, size=(n, k))
    targets = (rng.random((n, k)) < 1.0 / (1.0 + np.exp(-true_logits))).astype(np.int64)
    return true_logits * sharpen, targets


def _ece_reference(confidence: np.ndarray, correct: np.ndarray) -> float:
    """ECE with 15 equal-width bins, one bin at a time."""
    total = 0.0
    for b in range(RELIABILITY_BINS):
        low, high = b / RELIABILITY_BINS, (b + 1) / RELIABILITY_BINS
        inside = (confidence >= low) & ((confidence < high) | (b == RELIABILITY_BINS - 1))
        if inside.any():
            total += inside.sum() / confidence.size * abs(correct[inside].mean() - confidence[inside].mean())
    return total


def test_temperature_grid() -> None:
    assert TEMPERATURES.shape == (41,) and TEMPERATURES.dtype == np.float64
    assert TEMPERATURES[UNCALIBRATED] == 1.0
    assert TEMPERATURES[0] == 0.25 and TEMPERATURES[-1] == 8.0
    np.testing.assert_allclose(TEMPERATURES, np.geomspace(0.25, 8.0, 41))
    assert CalibrationStats.index_of(1.0) == UNCALIBRATED
    assert CalibrationStats.index_of(8.0) == 40 and CalibrationStats.index_of(100.0) == 40
    assert CalibrationStats.index_of(TEMPERATURES[7] * 1.02) == 7
    with pytest.raises(ValueError):
        CalibrationStats.index_of(0.0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [2, 5])
def test_nll_brier_ece_against_references(seed: int, k: int) -> None:
    task = Task.BINARY if k == 2 else Task.MULTICLASS
    logits, targets = _single_label(seed, 400, k, sharpen=2.0)
    stats = CalibrationStats.of(logits, targets, task)
    assert stats.images == 400
    for index in (0, UNCALIBRATED, 29, 40):  # T = 0.25, 1, 3.08, 8
        temperature = float(TEMPERATURES[index])
        p = OperatingPoint(temperature=temperature).probabilities(logits, task)
        if p.min() > 1e-12:  # scikit-learn clips probabilities at machine epsilon
            nll = log_loss(targets, p, labels=list(range(k)))
            assert stats.nll[index] == pytest.approx(nll * 400, rel=1e-9)
            assert stats.mean_nll(index) == pytest.approx(nll, rel=1e-9)
        nll_sum = -log_softmax(logits / temperature, axis=1)[np.arange(400), targets].sum()
        assert stats.nll[index] == pytest.approx(nll_sum, rel=1e-9)
        onehot = np.eye(k)[targets]
        brier = (p[:, 1] - targets) ** 2 if k == 2 else ((p - onehot) ** 2).sum(axis=1)
        assert stats.mean_brier(index) == pytest.approx(brier.mean(), rel=1e-9)
        confidence, correct = p.max(axis=1), p.argmax(axis=1) == targets
        assert stats.ece(index) == pytest.approx(_ece_reference(confidence, correct), abs=1e-12)
        mean_conf, accuracy, count = stats.reliability(index)
        assert count.sum() == 400
        filled = count > 0
        assert np.isnan(mean_conf[~filled]).all() and np.isnan(accuracy[~filled]).all()
        assert np.all((mean_conf[filled] >= 1.0 / k - 1e-12) & (mean_conf[filled] <= 1.0))


def test_ece_of_a_known_example() -> None:
    # binary, T = 1: p1 = sigmoid(z1 - z0). Three images, confidences 0.9 (right), 0.9 (wrong), 0.65 (right).
    logit = np.log(0.9 / 0.1)
    logits = np.array([[0.0, logit], [0.0, logit], [0.0, np.log(0.65 / 0.35)]])
    stats = CalibrationStats.of(logits, np.array([1, 0, 1]), Task.BINARY)
    # bin of 0.9 (index 13): acc 0.5, conf 0.9, n 2; bin of 0.65 (index 9): acc 1, conf 0.65, n 1
    assert stats.ece(UNCALIBRATED) == pytest.approx((2 * 0.4 + 1 * 0.35) / 3)
    _, accuracy, count = stats.reliability(UNCALIBRATED)
    assert count[13] == 2 and count[9] == 1 and accuracy[13] == 0.5


def test_confidence_one_falls_in_the_last_bin() -> None:
    logits = np.array([[0.0, 800.0], [0.0, -800.0]])
    stats = CalibrationStats.of(logits, np.array([1, 1]), Task.BINARY)
    _, _, count = stats.reliability(UNCALIBRATED)
    assert count[-1] == 2
    assert np.isfinite(stats.nll).all() and np.isfinite(stats.brier).all()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("task", [Task.BINARY, Task.MULTICLASS, Task.MULTILABEL])
def test_merge_equals_pooled(seed: int, task: Task) -> None:
    k = 2 if task is Task.BINARY else 4
    if task is Task.MULTILABEL:
        logits, targets = _multilabel(seed, 300, k)
    else:
        logits, targets = _single_label(seed, 300, k)
    a = CalibrationStats.of(logits[:120], targets[:120], task)
    b = CalibrationStats.of(logits[120:], targets[120:], task)
    pooled = CalibrationStats.of(logits, targets, task)
    merged = CalibrationStats.empty().merge(a).merge(b)
    assert merged.images == pooled.images
    for name in ("nll", "brier", "bin_count", "bin_confidence", "bin_correct"):
        np.testing.assert_allclose(getattr(merged, name), getattr(pooled, name), rtol=1e-12, atol=1e-9)
    assert merged.best_index() == pooled.best_index()


def test_chunking_does_not_change_the_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    logits, targets = _single_label(3, 250, 3)
    whole = CalibrationStats.of(logits, targets, Task.MULTICLASS)
    monkeypatch.setattr(calibration, "_CHUNK_ELEMENTS", 41 * 3 * 7)  # chunks of 7 images
    chunked = CalibrationStats.of(logits, targets, Task.MULTICLASS)
    np.testing.assert_allclose(chunked.nll, whole.nll, rtol=1e-12)
    np.testing.assert_array_equal(chunked.bin_count, whole.bin_count)


@pytest.mark.parametrize("task", [Task.BINARY, Task.MULTICLASS, Task.MULTILABEL])
def test_overconfident_logits_want_temperature_three(task: Task) -> None:
    k = 2 if task is Task.BINARY else 5
    if task is Task.MULTILABEL:
        logits, targets = _multilabel(7, 4000, k, sharpen=3.0)
    else:
        logits, targets = _single_label(7, 20000, k, sharpen=3.0)
    stats = CalibrationStats.of(logits, targets, task)
    best = stats.best_index()
    assert abs(np.log(TEMPERATURES[best] / 3.0)) < 0.2
    assert stats.ece(best) < stats.ece(UNCALIBRATED)
    assert stats.mean_nll(best) < stats.mean_nll(UNCALIBRATED)
    assert stats.mean_brier(best) < stats.mean_brier(UNCALIBRATED)


def test_multilabel_against_direct_formulas() -> None:
    logits, targets = _multilabel(1, 200, 3, sharpen=1.5)
    stats = CalibrationStats.of(logits, targets, Task.MULTILABEL)
    assert stats.images == 600
    assert stats.nll.shape == (41,) and stats.bin_count.shape == (41, RELIABILITY_BINS)
    for index in (UNCALIBRATED, 5, 33):
        p = OperatingPoint(temperature=float(TEMPERATURES[index])).probabilities(logits, Task.MULTILABEL).ravel()
        y = targets.ravel()
        assert stats.mean_nll(index) == pytest.approx(log_loss(y, p), rel=1e-9)
        assert stats.mean_brier(index) == pytest.approx(np.mean((p - y) ** 2), rel=1e-9)
        confidence, correct = np.maximum(p, 1 - p), (p >= 0.5) == (y == 1)
        assert stats.ece(index) == pytest.approx(_ece_reference(confidence, correct), abs=1e-12)


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        CalibrationStats.of(np.zeros((0, 2)), np.zeros(0, dtype=np.int64), Task.BINARY)
    with pytest.raises(ValueError):
        CalibrationStats.of(np.zeros((3, 3)), np.zeros(3, dtype=np.int64), Task.BINARY)
    with pytest.raises(ValueError):
        CalibrationStats.of(np.zeros((3, 3)), np.array([0, 1, 3]), Task.MULTICLASS)
    with pytest.raises(ValueError):
        CalibrationStats.of(np.zeros((3, 3)), np.zeros(3, dtype=np.int64), Task.MULTILABEL)
    with pytest.raises(ValueError):
        CalibrationStats.of(np.array([[0.0, np.nan]]), np.array([0]), Task.BINARY)
    with pytest.raises(ValueError):
        CalibrationStats.of(np.zeros((3, 3)), np.zeros(3, dtype=np.int64), Task.SEGMENTATION)
    empty = CalibrationStats.empty()
    with pytest.raises(ValueError, match="no predictions"):
        empty.best_index()
    with pytest.raises(ValueError, match="no predictions"):
        empty.ece(UNCALIBRATED)
    with pytest.raises(ValueError):
        CalibrationStats(1, np.zeros(3), np.zeros(41), np.zeros((41, 15)), np.zeros((41, 15)), np.zeros((41, 15)))


def test_plot_reliability_writes_a_png(tmp_path: Path) -> None:
    logits, targets = _single_label(0, 500, 3, sharpen=3.0)
    stats = CalibrationStats.of(logits, targets, Task.MULTICLASS)
    path = tmp_path / "plots" / "reliability.png"
    plot_reliability(stats, path, "validation reliability")
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError):
        plot_reliability(CalibrationStats.empty(), tmp_path / "empty.png", "empty")
