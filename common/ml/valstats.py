"""What a hospital sends about its validation predictions so the federation can choose an operating point.

A hospital never sends a per-image score, label or file name. For the operating point it
sends :class:`ValidationStatistics`: how many of its validation images of each truth fall
in each of 256 fixed log-odds bins (:class:`~fedward.common.ml.thresholds.ScoreHistogram`,
binary and multi-label tasks), and the sums of negative log-likelihood, Brier score and
reliability-bin counts at 41 fixed candidate temperatures
(:class:`~fedward.common.ml.calibration.CalibrationStats`). Both are sums, so the server
merges hospitals exactly by adding them (:meth:`ValidationStatistics.merge`) and
:func:`summarize` chooses the temperature and the thresholds as if it held the pooled
validation split.

On the wire the statistics are list-valued entries of the validation MetricRecord
(:data:`STATS_PREFIX` keys); they never reach ``metrics/hospitals.jsonl``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedward.common.choices import Task
from fedward.common.ml.calibration import RELIABILITY_BINS, TEMPERATURES, CalibrationStats
from fedward.common.ml.thresholds import SCORE_EDGES, ScoreHistogram, log_odds, truth_columns

log = logging.getLogger(__name__)

STATS_PREFIX = "val-stats-"
"""Key prefix of the list-valued statistics in a hospital's validation MetricRecord."""

_BINS = len(SCORE_EDGES) - 1
_IMAGES, _NLL, _BRIER, _RELIABILITY = (f"{STATS_PREFIX}{k}" for k in ("images", "nll", "brier", "bins"))
_POSITIVES, _NEGATIVES = f"{STATS_PREFIX}positives", f"{STATS_PREFIX}negatives"


def is_statistic(key: str) -> bool:
    """Whether a MetricRecord key is one of the validation statistics (not a metric)."""
    return key.startswith(STATS_PREFIX)


@dataclass(frozen=True, slots=True)
class ValidationStatistics:
    """A hospital's (or the federation's) validation statistics for the operating point.

    Attributes:
        calibration: sums at every candidate temperature.
        histogram: decision-score histograms per truth, per column (binary: one column,
            P(class 1)'s log-odds; multi-label: one per label); ``None`` for multi-class
            tasks, which decide by arg-max.
    """

    calibration: CalibrationStats
    histogram: ScoreHistogram | None

    @classmethod
    def of(cls, logits: np.ndarray, targets: np.ndarray, task: Task) -> ValidationStatistics:
        """The statistics of one hospital's validation predictions.

        Args:
            logits: float (N, K) network outputs (uncalibrated).
            targets: int64 (N,) classes, or (N, K) 0/1 labels (multi-label).
            task: binary, multi-class or multi-label.

        Raises:
            ValueError: if there are no images or the shapes do not fit the task.
        """
        calibration = CalibrationStats.of(logits, targets, task)
        if task is Task.MULTICLASS:
            return cls(calibration, None)
        return cls(calibration, ScoreHistogram.of(log_odds(logits, task), truth_columns(targets, task)))

    def merge(self, other: ValidationStatistics) -> ValidationStatistics:
        """The statistics of both sets of images together.

        Raises:
            ValueError: if one has histograms and the other not, or their columns differ.
        """
        if (self.histogram is None) != (other.histogram is None):
            raise ValueError("validation statistics of different tasks cannot be merged")
        histogram = None
        if self.histogram is not None and other.histogram is not None:
            histogram = self.histogram.merge(other.histogram)
        return ValidationStatistics(self.calibration.merge(other.calibration), histogram)

    def wire(self) -> dict[str, list[float]]:
        """The statistics as list-valued MetricRecord entries (:data:`STATS_PREFIX` keys)."""
        cal = self.calibration
        out = {
            _IMAGES: [float(cal.images)],
            _NLL: cal.nll.astype(float).tolist(),
            _BRIER: cal.brier.astype(float).tolist(),
            _RELIABILITY: np.concatenate([cal.bin_count, cal.bin_confidence, cal.bin_correct]).ravel().tolist(),
        }
        if self.histogram is not None:
            out[_POSITIVES] = self.histogram.positives.astype(float).ravel().tolist()
            out[_NEGATIVES] = self.histogram.negatives.astype(float).ravel().tolist()
        return out

    @classmethod
    def from_wire(cls, metrics: Mapping[str, Any]) -> ValidationStatistics | None:
        """The statistics a hospital's reply carries; ``None`` if it carries none.

        Histograms come with binary and multi-label tasks only (multi-class replies have none).

        Raises:
            ValueError: if the entries are malformed (wrong lengths, negative or
                non-finite counts); the reply is then left out of the choice.
        """
        if _IMAGES not in metrics:
            return None
        temps = len(TEMPERATURES)
        images = _vector(metrics, _IMAGES, 1)[0]
        bins = _vector(metrics, _RELIABILITY, 3 * temps * RELIABILITY_BINS).reshape(3, temps, RELIABILITY_BINS)
        if images < 1 or images != int(images) or (bins[0] < 0).any() or (bins[2] > bins[0]).any():
            raise ValueError(f"{_IMAGES} / {_RELIABILITY}: counts out of range")
        calibration = CalibrationStats(
            int(images), _vector(metrics, _NLL, temps), _vector(metrics, _BRIER, temps), bins[0], bins[1], bins[2]
        )
        if _POSITIVES not in metrics:
            return cls(calibration, None)
        histogram = ScoreHistogram(_counts(metrics, _POSITIVES), _counts(metrics, _NEGATIVES))
        if histogram.positives.shape != histogram.negatives.shape:
            raise ValueError(f"{_POSITIVES} and {_NEGATIVES} differ in length")
        return cls(calibration, histogram)


def merge_wire(replies: Sequence[Mapping[str, Any]]) -> tuple[ValidationStatistics | None, int]:
    """All hospitals' statistics together, from their replies' list-valued entries.

    A reply without statistics (no validation images, or a task without them) is skipped;
    a malformed one, or one that does not fit the others, is logged and skipped.

    Returns:
        ``(merged, hospitals)``: the merged statistics (``None`` if no reply had usable
        ones) and how many replies went into them.
    """
    total: ValidationStatistics | None = None
    used = 0
    for reply in replies:
        try:
            item = ValidationStatistics.from_wire(reply)
            if item is None:
                continue
            total = item if total is None else total.merge(item)
        except ValueError as err:
            log.warning("validation statistics of a hospital left out of the operating point: %s", err)
            continue
        used += 1
    return total, used


def _vector(metrics: Mapping[str, Any], key: str, length: int) -> np.ndarray:
    value = metrics.get(key)
    if not isinstance(value, list) or len(value) != length:
        raise ValueError(f"{key}: expected a list of {length} numbers")
    array = np.asarray(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{key}: non-finite values")
    return array


def _counts(metrics: Mapping[str, Any], key: str) -> np.ndarray:
    value = metrics.get(key)
    if not isinstance(value, list) or not value or len(value) % _BINS:
        raise ValueError(f"{key}: expected a multiple of {_BINS} counts")
    array = np.asarray(value, dtype=np.float64)
    if not np.isfinite(array).all() or (array < 0).any() or (array != np.round(array)).any():
        raise ValueError(f"{key}: counts must be non-negative integers")
    return array.astype(np.int64).reshape(-1, _BINS)
