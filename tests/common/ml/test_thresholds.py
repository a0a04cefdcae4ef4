"""fedward.common.ml.thresholds against brute-force rates computed from the raw scores."""

from __future__ import annotations

import numpy as np
import pytest

from fedward.common.choices import OperatingRule, Task
from fedward.common.ml.operating import OperatingPoint
from fedward.common.ml.thresholds import (
    SCORE_EDGES,
    THRESHOLD_SCORES,
    ScoreHistogram,
    ThresholdChoice,
    choose_threshold,
    fixed_choice,
    log_odds,
    truth_columns,
)

SEEDS = (0, 1, 2)


def _data(seed: int, n: int = 500, columns: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Scores (N, C) with some beyond [-16, 16] and truth (N, C) that the scores inform."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, columns)) < 0.35
    scores = rng.normal(scale=3.0, size=(n, columns)) + 2.5 * truth
    scores[:3] = [[-40.0] * columns, [40.0] * columns, [16.0] * columns]
    return scores, truth


def _brute_rates(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity of ``clip(scores) >= THRESHOLD_SCORES[i]`` for every index."""
    clipped = np.clip(scores, -16.0, 16.0)
    predicted = clipped[:, None] >= THRESHOLD_SCORES[None, :]
    sensitivity = predicted[truth].sum(axis=0) / truth.sum()
    specificity = (~predicted[~truth]).sum(axis=0) / (~truth).sum()
    return sensitivity, specificity


def test_edges() -> None:
    assert SCORE_EDGES.shape == (257,) and SCORE_EDGES.dtype == np.float64
    assert SCORE_EDGES[0] == -16.0 and SCORE_EDGES[-1] == 16.0
    np.testing.assert_array_equal(np.diff(SCORE_EDGES), 0.125)
    assert THRESHOLD_SCORES[-1] == 16.125


def test_log_odds_and_truth_columns() -> None:
    logits = np.array([[0.5, 2.0], [1.0, -1.0]])
    np.testing.assert_allclose(log_odds(logits, Task.BINARY), [[1.5], [-2.0]])
    np.testing.assert_array_equal(log_odds(logits, Task.MULTILABEL), logits)
    np.testing.assert_array_equal(truth_columns(np.array([0, 1, 1]), Task.BINARY), [[False], [True], [True]])
    np.testing.assert_array_equal(truth_columns(np.array([[0, 1], [1, 0]]), Task.MULTILABEL), [[0, 1], [1, 0]])
    assert truth_columns(np.array([[0, 1]]), Task.MULTILABEL).dtype == bool
    with pytest.raises(ValueError, match="arg-max"):
        log_odds(np.zeros((2, 3)), Task.MULTICLASS)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        log_odds(np.zeros((2, 3)), Task.BINARY)
    with pytest.raises(ValueError):
        log_odds(np.zeros(4), Task.MULTILABEL)
    with pytest.raises(ValueError):
        truth_columns(np.array([0, 2]), Task.BINARY)
    with pytest.raises(ValueError):
        truth_columns(np.array([[0, 1]]), Task.BINARY)


@pytest.mark.parametrize("seed", SEEDS)
def test_rates_equal_brute_force(seed: int) -> None:
    scores, truth = _data(seed)
    histogram = ScoreHistogram.of(scores, truth)
    assert histogram.columns == 3
    assert histogram.positives.shape == (3, 256) and histogram.positives.dtype == np.int64
    assert histogram.positives.sum() + histogram.negatives.sum() == scores.size
    for column in range(3):
        sensitivity, specificity = histogram.rates(column)
        expected_sens, expected_spec = _brute_rates(scores[:, column], truth[:, column])
        np.testing.assert_allclose(sensitivity, expected_sens, rtol=0, atol=1e-15)
        np.testing.assert_allclose(specificity, expected_spec, rtol=0, atol=1e-15)
        assert sensitivity[0] == 1.0 and sensitivity[-1] == 0.0
        assert specificity[0] == 0.0 and specificity[-1] == 1.0


def test_scores_on_edges_fall_in_the_upper_bin() -> None:
    scores = np.array([[-16.0], [0.0], [0.125], [15.875], [16.0]])
    histogram = ScoreHistogram.of(scores, np.ones_like(scores, dtype=bool))
    assert list(np.flatnonzero(histogram.positives[0])) == [0, 128, 129, 255]
    assert histogram.positives[0, 255] == 2


@pytest.mark.parametrize("seed", SEEDS)
def test_merge_equals_pooled(seed: int) -> None:
    scores, truth = _data(seed)
    a = ScoreHistogram.of(scores[:200], truth[:200])
    b = ScoreHistogram.of(scores[200:], truth[200:])
    pooled = ScoreHistogram.of(scores, truth)
    merged = ScoreHistogram.empty(3).merge(a).merge(b)
    np.testing.assert_array_equal(merged.positives, pooled.positives)
    np.testing.assert_array_equal(merged.negatives, pooled.negatives)
    with pytest.raises(ValueError, match="columns"):
        a.merge(ScoreHistogram.empty(2))


def test_histogram_validation() -> None:
    with pytest.raises(ValueError):
        ScoreHistogram.of(np.zeros((3, 2)), np.zeros((3, 1), dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        ScoreHistogram.of(np.array([[np.nan]]), np.array([[True]]))
    with pytest.raises(ValueError):
        ScoreHistogram(np.zeros((1, 10), dtype=np.int64), np.zeros((1, 10), dtype=np.int64))


@pytest.mark.parametrize("seed", SEEDS)
def test_youden_maximises_j(seed: int) -> None:
    scores, truth = _data(seed)
    histogram = ScoreHistogram.of(scores, truth)
    for column in range(3):
        sensitivity, specificity = _brute_rates(scores[:, column], truth[:, column])
        j = sensitivity + specificity - 1
        choice = choose_threshold(histogram, column, OperatingRule.YOUDEN, 0.0)
        index = int(np.flatnonzero(choice.score == THRESHOLD_SCORES)[0])
        assert j[index] == pytest.approx(j.max(), abs=1e-12)
        assert choice.sensitivity == pytest.approx(sensitivity[index])
        assert choice.specificity == pytest.approx(specificity[index])


def test_youden_takes_the_middle_of_a_plateau() -> None:
    # negatives at -1, positives at +1: every threshold in (-1, 1] separates them perfectly.
    scores = np.array([[-1.0], [-1.0], [1.0], [1.0]])
    truth = np.array([[False], [False], [True], [True]])
    choice = choose_threshold(ScoreHistogram.of(scores, truth), 0, OperatingRule.YOUDEN, 0.0)
    assert (choice.sensitivity, choice.specificity) == (1.0, 1.0)
    assert choice.score == 0.0  # indices 121..136 (scores -0.875..1.0) tie; the middle is 128


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("target", [0.5, 0.8, 0.95, 1.0])
def test_sensitivity_rule(seed: int, target: float) -> None:
    scores, truth = _data(seed)
    histogram = ScoreHistogram.of(scores, truth)
    sensitivity, _ = _brute_rates(scores[:, 0], truth[:, 0])
    choice = choose_threshold(histogram, 0, OperatingRule.SENSITIVITY, target)
    index = int(np.flatnonzero(choice.score == THRESHOLD_SCORES)[0])
    assert choice.sensitivity >= target
    assert index == np.flatnonzero(sensitivity >= target).max()  # the highest such threshold


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("target", [0.0, 0.5, 0.9, 0.99])
def test_specificity_rule(seed: int, target: float) -> None:
    scores, truth = _data(seed)
    histogram = ScoreHistogram.of(scores, truth)
    _, specificity = _brute_rates(scores[:, 1], truth[:, 1])
    choice = choose_threshold(histogram, 1, OperatingRule.SPECIFICITY, target)
    index = int(np.flatnonzero(choice.score == THRESHOLD_SCORES)[0])
    assert choice.specificity >= target
    assert index == np.flatnonzero(specificity >= target).min()  # the lowest such threshold


def test_rules_reject_degenerate_columns_and_bad_arguments() -> None:
    scores = np.array([[1.0, 1.0], [2.0, -1.0]])
    truth = np.array([[True, True], [True, False]])  # column 0 has only positives
    histogram = ScoreHistogram.of(scores, truth)
    for rule in (OperatingRule.YOUDEN, OperatingRule.SENSITIVITY, OperatingRule.SPECIFICITY):
        with pytest.raises(ValueError, match="negative"):
            choose_threshold(histogram, 0, rule, 0.9)
    with pytest.raises(ValueError, match="negative"):
        histogram.rates(0)
    with pytest.raises(ValueError, match="negative"):
        fixed_choice(histogram, 0, 0.5, 1.0)
    choose_threshold(histogram, 1, OperatingRule.YOUDEN, 0.0)
    with pytest.raises(ValueError, match="fixed"):
        choose_threshold(histogram, 1, OperatingRule.FIXED, 0.5)
    with pytest.raises(ValueError, match="target"):
        choose_threshold(histogram, 1, OperatingRule.SENSITIVITY, 1.5)
    with pytest.raises(ValueError, match="out of range"):
        histogram.rates(2)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.7])
def test_probability_threshold_gives_the_same_decisions(seed: int, temperature: float) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=4.0, size=(2000, 2))
    point = OperatingPoint(temperature=temperature)
    probabilities = point.probabilities(logits, Task.BINARY)[:, 1]
    scores = log_odds(logits, Task.BINARY)[:, 0]
    for score in (-3.0, -0.375, 0.0, 1.25, 6.5):
        threshold = ThresholdChoice(score, 0.0, 0.0).probability(temperature)
        np.testing.assert_array_equal(probabilities >= threshold, scores >= score)
        # an OperatingPoint built from it decides the same
        decided = OperatingPoint(OperatingRule.YOUDEN, (threshold,), temperature).decide(
            point.probabilities(logits, Task.BINARY), Task.BINARY
        )
        np.testing.assert_array_equal(decided == 1, scores >= score)
    assert 0.0 < ThresholdChoice(-16.0, 1.0, 0.0).probability(0.25) < 1e-20
    assert ThresholdChoice(16.125, 0.0, 1.0).probability(0.25) == 1.0
    with pytest.raises(ValueError):
        ThresholdChoice(0.0, 0.5, 0.5).probability(0.0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_fixed_choice(seed: int, temperature: float) -> None:
    scores, truth = _data(seed)
    histogram = ScoreHistogram.of(scores, truth)
    sensitivity, specificity = _brute_rates(scores[:, 2], truth[:, 2])
    for probability in (0.1, 0.5, 0.73, 0.99):
        choice = fixed_choice(histogram, 2, probability, temperature)
        exact = temperature * np.log(probability / (1 - probability))
        assert choice.score == pytest.approx(np.clip(exact, -16.0, 16.125))
        assert choice.probability(temperature) == pytest.approx(probability)
        index = int(np.argmin(np.abs(THRESHOLD_SCORES - choice.score)))
        assert abs(THRESHOLD_SCORES[index] - choice.score) <= 0.0625 + 1e-12
        assert (choice.sensitivity, choice.specificity) == (sensitivity[index], specificity[index])
    everything = fixed_choice(histogram, 2, 0.0, temperature)
    assert (everything.score, everything.sensitivity, everything.specificity) == (-16.0, 1.0, 0.0)
    nothing = fixed_choice(histogram, 2, 1.0, temperature)
    assert (nothing.score, nothing.sensitivity, nothing.specificity) == (16.125, 0.0, 1.0)
    with pytest.raises(ValueError):
        fixed_choice(histogram, 2, 1.5, temperature)
    with pytest.raises(ValueError):
        fixed_choice(histogram, 2, 0.5, -1.0)
