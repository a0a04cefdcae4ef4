"""Choosing the operating point from the federation's validation statistics, and reading it back from a round's metrics.

:func:`choose_operating_point` takes the merged
:class:`~fedward.common.ml.valstats.ValidationStatistics` of the hospitals and the run's
``[evaluation]`` settings, fits the temperature (the candidate with the lowest validation
negative log-likelihood: temperature scaling, Guo et al., ICML 2017) and picks each
threshold by the configured rule on the pooled score histograms. It returns the
:class:`~fedward.common.ml.operating.OperatingPoint` and the round's ``val-*`` figures at
it: ``val-temperature``, ``val-threshold`` (``val-threshold-<k>`` per label), ECE and
Brier score after calibration (``val-ece``, ``val-brier``) and before it
(``val-ece-uncalibrated``, ``val-brier-uncalibrated``), and sensitivity, specificity, accuracy, F1 and
balanced accuracy at the chosen threshold (these replace the hospitals' figures at 0.5).
:func:`point_from_metrics` rebuilds the point from a recorded row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedward.common.choices import OperatingRule, Task
from fedward.common.config.evaluation import EvaluationConfig
from fedward.common.ml.calibration import TEMPERATURES
from fedward.common.ml.operating import OperatingPoint
from fedward.common.ml.thresholds import SCORE_EDGES, ScoreHistogram, ThresholdChoice, choose_threshold, fixed_choice
from fedward.common.ml.valstats import ValidationStatistics

TEMPERATURE = "val-temperature"
THRESHOLD = "val-threshold"
OPERATING_HOSPITALS = "operating-hospitals"
"""Hospitals whose validation statistics chose the round's operating point."""
FALLBACKS = "val-threshold-fallbacks"
"""Labels whose validation split lacked positives or negatives, left at threshold 0.5."""

_STEP = float(SCORE_EDGES[1] - SCORE_EDGES[0])


@dataclass(frozen=True, slots=True)
class _Counts:
    tp: float
    fp: float
    tn: float
    fn: float


def choose_operating_point(
    stats: ValidationStatistics, settings: EvaluationConfig
) -> tuple[OperatingPoint, dict[str, float]]:
    """The operating point the federation's validation statistics give, and the ``val-*`` figures at it.

    Args:
        stats: the merged statistics of the hospitals' validation splits: without
            histograms (multi-class), one column (binary) or one per label (multi-label).
        settings: the run's ``[evaluation]`` section.

    Returns:
        ``(point, metrics)``; multi-class points have no thresholds (arg-max).

    Raises:
        ValueError: if the statistics hold no images.
    """
    cal = stats.calibration
    index = cal.best_index() if settings.calibrate else cal.index_of(1.0)
    neutral = cal.index_of(1.0)
    temperature = float(TEMPERATURES[index])
    metrics = {
        TEMPERATURE: temperature,
        "val-ece": cal.ece(index),
        "val-ece-uncalibrated": cal.ece(neutral),
        "val-brier": cal.mean_brier(index),
        "val-brier-uncalibrated": cal.mean_brier(neutral),
    }
    if stats.histogram is None:
        return OperatingPoint(OperatingRule.YOUDEN, (), temperature), metrics
    thresholds, counts, fallbacks = _thresholds(stats.histogram, settings, temperature)
    if stats.histogram.columns > 1:  # multi-label
        metrics.update({f"{THRESHOLD}-{k}": t for k, t in enumerate(thresholds)})
        metrics[FALLBACKS] = float(fallbacks)
    else:
        metrics[THRESHOLD] = thresholds[0]
    metrics.update(_rates(counts))
    return OperatingPoint(settings.operating_point, tuple(thresholds), temperature, _target(settings)), metrics


def _thresholds(
    histogram: ScoreHistogram, settings: EvaluationConfig, temperature: float
) -> tuple[list[float], list[_Counts], int]:
    """Each column's calibrated-probability threshold and its confusion counts; how many fell back to 0.5."""
    thresholds: list[float] = []
    counts: list[_Counts] = []
    fallbacks = 0
    for column in range(histogram.columns):
        try:
            choice = _choice(histogram, column, settings, temperature)
        except ValueError:  # only one truth among this column's validation images
            fallbacks += 1
            choice = ThresholdChoice(0.0, float("nan"), float("nan"))
            thresholds.append(0.5)
        else:
            thresholds.append(
                choice.probability(temperature)
                if settings.operating_point is not OperatingRule.FIXED
                else settings.threshold
            )
        counts.append(_counts_at(histogram, column, choice.score))
    return thresholds, counts, fallbacks


def _choice(histogram: ScoreHistogram, column: int, settings: EvaluationConfig, temperature: float) -> ThresholdChoice:
    if settings.operating_point is OperatingRule.FIXED:
        return fixed_choice(histogram, column, settings.threshold, temperature)
    return choose_threshold(histogram, column, settings.operating_point, settings.target)


def _counts_at(histogram: ScoreHistogram, column: int, score: float) -> _Counts:
    """Confusion counts when scores at or above ``score`` (snapped to a bin edge) are called positive."""
    index = int(np.clip(np.round((score - SCORE_EDGES[0]) / _STEP), 0, len(SCORE_EDGES) - 1))
    pos, neg = histogram.positives[column], histogram.negatives[column]
    return _Counts(
        float(pos[index:].sum()), float(neg[index:].sum()), float(neg[:index].sum()), float(pos[:index].sum())
    )


def _rates(counts: list[_Counts]) -> dict[str, float]:
    """Sensitivity, specificity, F1 (macro over columns where defined), accuracy and balanced accuracy."""
    sens = [c.tp / (c.tp + c.fn) for c in counts if c.tp + c.fn > 0]
    spec = [c.tn / (c.tn + c.fp) for c in counts if c.tn + c.fp > 0]
    f1 = [2 * c.tp / (2 * c.tp + c.fp + c.fn) for c in counts if c.tp + c.fn > 0]
    total = sum(c.tp + c.fp + c.tn + c.fn for c in counts)
    out: dict[str, float] = {}
    if total > 0:
        out["val-accuracy"] = sum(c.tp + c.tn for c in counts) / total
    if sens:
        out["val-sensitivity"] = float(np.mean(sens))
    if spec:
        out["val-specificity"] = float(np.mean(spec))
    if f1:
        out["val-f1"] = float(np.mean(f1))
    if sens and spec and len(counts) == 1:
        out["val-balanced-accuracy"] = (sens[0] + spec[0]) / 2
    return out


def point_from_metrics(
    row: Mapping[str, object], task: Task, labels: int, settings: EvaluationConfig
) -> OperatingPoint | None:
    """The operating point a round's recorded metrics hold; ``None`` if the round chose none.

    Args:
        row: the round's metrics (``metrics/server.jsonl`` row or the federated metrics).
        task: the task.
        labels: number of labels (multi-label).
        settings: the run's ``[evaluation]`` section (the rule and target).
    """
    temperature = row.get(TEMPERATURE)
    if not isinstance(temperature, int | float):
        return None
    if task is Task.MULTICLASS:
        return OperatingPoint(OperatingRule.YOUDEN, (), float(temperature))
    keys = [f"{THRESHOLD}-{k}" for k in range(labels)] if task is Task.MULTILABEL and labels > 1 else [THRESHOLD]
    values = [row.get(k) for k in keys]
    if not all(isinstance(v, int | float) for v in values):
        return None
    thresholds = tuple(float(v) for v in values if isinstance(v, int | float))
    return OperatingPoint(settings.operating_point, thresholds, float(temperature), _target(settings))


def _target(settings: EvaluationConfig) -> float | None:
    """The target the rule guarantees (sensitivity and specificity rules only)."""
    rule = settings.operating_point
    return settings.target if rule in (OperatingRule.SENSITIVITY, OperatingRule.SPECIFICITY) else None
