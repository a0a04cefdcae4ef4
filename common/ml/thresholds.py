"""Decision thresholds of a classifier, chosen from score histograms its hospitals can add up.

A hospital never sends per-image scores: it scores its validation split, bins each decision
score (the log-odds of the positive class) into :data:`SCORE_EDGES` and sends the counts of
positive and negative images per bin, a :class:`ScoreHistogram`. The server adds the
hospitals' histograms (:meth:`ScoreHistogram.merge`) and reads off the sensitivity and
specificity of every candidate threshold (:meth:`ScoreHistogram.rates`), which is the ROC
curve of the pooled validation split at the resolution of the bins (Fawcett, "An
introduction to ROC analysis", Pattern Recognition Letters 2006). :func:`choose_threshold`
applies an :class:`~fedward.common.choices.OperatingRule` (Youden, 1950; a sensitivity or
specificity target) and :func:`fixed_choice` reports the rates of a configured threshold.

Thresholds live on the log-odds scale, where they do not depend on the temperature of
temperature scaling (Guo et al., ICML 2017): for a binary classifier with logits ``z``,
``softmax(z / T)[1] >= sigmoid(s / T)`` exactly when ``z1 - z0 >= s``, so one histogram
serves every candidate temperature and :meth:`ThresholdChoice.probability` converts the
chosen score into the calibrated-probability threshold an
:class:`~fedward.common.ml.operating.OperatingPoint` records.

Threshold index ``i`` (0..256) means "bins ``i..255`` are predicted positive": index 0
predicts every image positive, index 256 none. Scores are clipped into [-16, 16] before
binning, so the rates are exact for every threshold on images whose log-odds lie inside
that range; an image beyond it (a probability within about 1e-7 of 0 or 1 at T = 1) counts
as if it sat on the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedward.common.choices import OperatingRule, Task

SCORE_EDGES: np.ndarray = np.linspace(-16.0, 16.0, 257)
"""float64 (257,) bin edges on the log-odds scale, step 0.125. Bin ``b`` holds the scores in
``[SCORE_EDGES[b], SCORE_EDGES[b + 1])``; the last bin (255) also holds 16."""

BINS: int = SCORE_EDGES.size - 1
"""Number of score bins (256)."""

THRESHOLD_SCORES: np.ndarray = np.append(SCORE_EDGES[:-1], SCORE_EDGES[-1] + 0.125)
"""float64 (257,) the log-odds score of each threshold index: ``SCORE_EDGES[i]`` for
``i < 256`` and 16.125 for index 256 (nothing positive, not even a score of exactly 16)."""


def log_odds(logits: np.ndarray, task: Task) -> np.ndarray:
    """Decision scores of a classifier's logits: the log-odds of each thresholded column.

    Args:
        logits: float (N, K) network outputs.
        task: binary (K = 2) or multi-label (K labels).

    Returns:
        float64 (N, C): binary ``z1 - z0`` (C = 1), multi-label the logits themselves (C = K).

    Raises:
        ValueError: for a multi-class or segmentation task (arg-max decisions have no
            threshold) or when ``logits`` is not (N, 2) for binary or (N, K) for multi-label.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if task is Task.BINARY:
        if logits.ndim != 2 or logits.shape[1] != 2:
            raise ValueError(f"binary logits must have shape (N, 2), got {logits.shape}")
        return np.asarray(logits[:, 1:2] - logits[:, 0:1])
    if task is Task.MULTILABEL:
        if logits.ndim != 2:
            raise ValueError(f"multi-label logits must have shape (N, K), got {logits.shape}")
        return logits.copy()
    raise ValueError(f"a {task.value} task decides by arg-max and has no threshold")


def truth_columns(targets: np.ndarray, task: Task) -> np.ndarray:
    """Which images are positive in each thresholded column.

    Args:
        targets: binary: int (N,) class indices in {0, 1}; multi-label: (N, K) in {0, 1}.
        task: binary or multi-label.

    Returns:
        bool (N, C): binary ``targets == 1`` (C = 1), multi-label the targets (C = K).

    Raises:
        ValueError: for another task, on a wrong shape or on values outside {0, 1}.
    """
    targets = np.asarray(targets)
    if task is Task.BINARY:
        if targets.ndim != 1:
            raise ValueError(f"binary targets must have shape (N,), got {targets.shape}")
        columns = targets[:, None]
    elif task is Task.MULTILABEL:
        if targets.ndim != 2:
            raise ValueError(f"multi-label targets must have shape (N, K), got {targets.shape}")
        columns = targets
    else:
        raise ValueError(f"a {task.value} task decides by arg-max and has no threshold")
    if not np.isin(columns, (0, 1)).all():
        raise ValueError("targets must be 0 or 1")
    return np.asarray(columns == 1)


@dataclass(frozen=True, slots=True, eq=False)
class ScoreHistogram:
    """Counts of validation images per score bin, per column, split by truth.

    Histograms of different hospitals add up (:meth:`merge`) to the histogram of their
    pooled images. ``eq=False``: arrays have no single truth value; compare the fields.

    Attributes:
        positives: int64 (C, 256) images whose column is positive, per bin of :data:`SCORE_EDGES`.
        negatives: int64 (C, 256) images whose column is negative, per bin.
    """

    positives: np.ndarray
    negatives: np.ndarray

    def __post_init__(self) -> None:
        for name in ("positives", "negatives"):
            counts = getattr(self, name)
            if not isinstance(counts, np.ndarray) or counts.ndim != 2 or counts.shape[1] != BINS:
                raise ValueError(f"score histogram: {name} must be an array of shape (C, {BINS})")
            if counts.dtype != np.int64 or (counts < 0).any():
                raise ValueError(f"score histogram: {name} must be non-negative int64 counts")
        if self.positives.shape != self.negatives.shape:
            raise ValueError(
                f"score histogram: positives {self.positives.shape} and negatives {self.negatives.shape} differ"
            )

    @classmethod
    def of(cls, scores: np.ndarray, truth: np.ndarray) -> ScoreHistogram:
        """The histogram of one split's scores.

        Args:
            scores: float (N, C) log-odds (:func:`log_odds`); clipped into [-16, 16].
            truth: bool (N, C) whether each column is positive (:func:`truth_columns`).

        Raises:
            ValueError: if the shapes are not the same (N, C) or a score is NaN.
        """
        scores = np.asarray(scores, dtype=np.float64)
        truth = np.asarray(truth, dtype=bool)
        if scores.ndim != 2 or scores.shape != truth.shape:
            raise ValueError(f"scores {scores.shape} and truth {truth.shape} must have the same shape (N, C)")
        if np.isnan(scores).any():
            raise ValueError("scores must not be NaN")
        clipped = np.clip(scores, SCORE_EDGES[0], SCORE_EDGES[-1])
        bins = np.minimum(np.searchsorted(SCORE_EDGES, clipped, side="right") - 1, BINS - 1)
        columns = scores.shape[1]
        flat = (bins + BINS * np.arange(columns)[None, :]).ravel()
        size = columns * BINS
        positives = np.bincount(flat[truth.ravel()], minlength=size).astype(np.int64)
        negatives = np.bincount(flat[~truth.ravel()], minlength=size).astype(np.int64)
        return cls(positives.reshape(columns, BINS), negatives.reshape(columns, BINS))

    @classmethod
    def empty(cls, columns: int) -> ScoreHistogram:
        """A histogram with ``columns`` columns and no images (the start of a sum)."""
        return cls(np.zeros((columns, BINS), dtype=np.int64), np.zeros((columns, BINS), dtype=np.int64))

    @property
    def columns(self) -> int:
        """Number of thresholded columns C (1 for binary, K for multi-label)."""
        return int(self.positives.shape[0])

    def merge(self, other: ScoreHistogram) -> ScoreHistogram:
        """The histogram of both splits' images pooled (the counts summed).

        Raises:
            ValueError: if the histograms have different numbers of columns.
        """
        if other.columns != self.columns:
            raise ValueError(f"cannot merge score histograms of {self.columns} and {other.columns} columns")
        return ScoreHistogram(self.positives + other.positives, self.negatives + other.negatives)

    def counts(self, column: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """True positives and true negatives per threshold index of one column, and its P and N.

        Returns:
            int64 (257,) TP (images in bins ``i..255`` that are positive), int64 (257,) TN
            (images in bins ``0..i-1`` that are negative), and the numbers of positive and of
            negative images.

        Raises:
            ValueError: if the column is out of range or has no positive or no negative image.
        """
        if not 0 <= column < self.columns:
            raise ValueError(f"column {column} is out of range for a histogram of {self.columns} columns")
        positives, negatives = self.positives[column], self.negatives[column]
        total_pos, total_neg = int(positives.sum()), int(negatives.sum())
        if total_pos == 0 or total_neg == 0:
            raise ValueError(
                f"column {column} has {total_pos} positive and {total_neg} negative images; both are needed"
            )
        true_pos = np.append(np.cumsum(positives[::-1])[::-1], 0)
        true_neg = np.append(0, np.cumsum(negatives))
        return true_pos, true_neg, total_pos, total_neg

    def rates(self, column: int) -> tuple[np.ndarray, np.ndarray]:
        """Sensitivity and specificity of every threshold index of one column.

        Threshold index ``i`` predicts positive the images in bins ``i..255``, i.e. the
        (clipped) scores ``>= THRESHOLD_SCORES[i]``.

        Returns:
            float64 (257,) sensitivity TP/P (non-increasing, 1 at index 0, 0 at 256) and float64
            (257,) specificity TN/N (non-decreasing, 0 at index 0, 1 at 256).

        Raises:
            ValueError: if the column is out of range or has no positive or no negative image.
        """
        true_pos, true_neg, total_pos, total_neg = self.counts(column)
        return true_pos / total_pos, true_neg / total_neg


def _sigmoid(x: float) -> float:
    """The logistic function, without overflow for large ``|x|``."""
    if x >= 0:
        return float(1.0 / (1.0 + np.exp(-x)))
    e = float(np.exp(x))
    return e / (1.0 + e)


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    """A decision threshold on the log-odds scale and its validation rates.

    Attributes:
        score: the threshold on the log-odds: predict positive iff score of the image >= it
            (a value of :data:`THRESHOLD_SCORES`, or a fixed threshold's exact score).
        sensitivity: the validation sensitivity at it.
        specificity: the validation specificity at it.
    """

    score: float
    sensitivity: float
    specificity: float

    def probability(self, temperature: float) -> float:
        """The calibrated-probability threshold ``sigmoid(score / temperature)``.

        With it, ``softmax(z / T)[1] >= probability`` exactly when ``z1 - z0 >= score``
        (up to floating-point rounding at the boundary), and likewise
        ``sigmoid(z_k / T) >= probability`` when ``z_k >= score`` for a label.

        Raises:
            ValueError: if the temperature is not a positive finite number.
        """
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        return _sigmoid(self.score / temperature)


def choose_threshold(histogram: ScoreHistogram, column: int, rule: OperatingRule, target: float) -> ThresholdChoice:
    """The threshold of one column that an operating rule picks on the validation histogram.

    - YOUDEN maximises Youden's J = sensitivity + specificity - 1 (Youden, "Index for rating
      diagnostic tests", Cancer 1950). Maxima form plateaus across empty bins; the choice is
      the middle index of the lowest-scoring maximal run of consecutive indices, which puts
      the threshold midway between the validation scores it separates. ``target`` is ignored.
    - SENSITIVITY: the highest threshold whose sensitivity is >= ``target``, which maximises
      specificity subject to the target (a screening tool).
    - SPECIFICITY: the lowest threshold whose specificity is >= ``target``, which maximises
      sensitivity subject to the target (a confirmatory test).

    Args:
        histogram: the federation's validation histogram.
        column: the column (0 for binary, the label for multi-label).
        rule: the operating rule; not FIXED (see :func:`fixed_choice`).
        target: the sensitivity or specificity to guarantee, in [0, 1].

    Raises:
        ValueError: for the FIXED rule, a target outside [0, 1], or a column out of range or
            without positive or negative images (callers skip such a column).
    """
    if rule is OperatingRule.FIXED:
        raise ValueError("a fixed threshold is given by the configuration, not chosen (use fixed_choice)")
    if rule is not OperatingRule.YOUDEN and not 0.0 <= target <= 1.0:
        raise ValueError(f"the {rule.value} target must be in [0, 1], got {target!r}")
    sensitivity, specificity = histogram.rates(column)
    if rule is OperatingRule.YOUDEN:
        true_pos, true_neg, total_pos, total_neg = histogram.counts(column)
        scaled_j = true_pos * total_neg + true_neg * total_pos  # (J + 1) * P * N, exact integers
        best = scaled_j == scaled_j.max()
        low = int(np.argmax(best))
        run = best[low:]
        high = best.size - 1 if run.all() else low + int(np.argmin(run)) - 1
        index = (low + high) // 2
    elif rule is OperatingRule.SENSITIVITY:
        index = int(np.flatnonzero(sensitivity >= target)[-1])
    else:
        index = int(np.flatnonzero(specificity >= target)[0])
    return ThresholdChoice(float(THRESHOLD_SCORES[index]), float(sensitivity[index]), float(specificity[index]))


def fixed_choice(histogram: ScoreHistogram, column: int, probability: float, temperature: float) -> ThresholdChoice:
    """The validation rates of a fixed threshold on the calibrated probability.

    The threshold becomes the log-odds score ``temperature * logit(probability)``
    (probability 0: everything positive; 1: nothing positive), and the rates are those of
    the nearest threshold index (:data:`THRESHOLD_SCORES`; the lower one on a tie).

    Args:
        histogram: the federation's validation histogram.
        column: the column (0 for binary, the label for multi-label).
        probability: the threshold on the calibrated probability, in [0, 1].
        temperature: the temperature of the calibrated probabilities (> 0).

    Returns:
        The choice; its score is the exact converted score clipped into [-16, 16.125].

    Raises:
        ValueError: if the probability is outside [0, 1], the temperature is not positive,
            or the column is out of range or lacks positive or negative images.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"a fixed threshold must be a probability in [0, 1], got {probability!r}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    low, high = float(THRESHOLD_SCORES[0]), float(THRESHOLD_SCORES[-1])
    if probability == 0.0:
        score = low
    elif probability == 1.0:
        score = high
    else:
        score = min(max(temperature * float(np.log(probability) - np.log1p(-probability)), low), high)
    sensitivity, specificity = histogram.rates(column)
    index = int(np.argmin(np.abs(THRESHOLD_SCORES - score)))
    return ThresholdChoice(score, float(sensitivity[index]), float(specificity[index]))
