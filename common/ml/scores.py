"""What scoring a model on one split returns, and how hospitals' scores combine into the federation's.

:class:`EvalResult` holds a task's metrics (:class:`~fedward.common.ml.metrics.ClassificationMetrics`
or :class:`~fedward.common.ml.segment.SegmentationScores`), both of which give the
records' keys (:meth:`MetricSet.as_dict`) and what a hospital sends (:meth:`MetricSet.wire`:
the same, plus additive sums the server needs to combine hospitals exactly).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fedward.common.wire import NUM_EXAMPLES


class MetricSet(Protocol):
    """Metrics of a model on one split."""

    def as_dict(self, prefix: str) -> dict[str, float]:
        """The defined metrics keyed ``"{prefix}-{name}"`` (``val-auc``, ``test-dice-lesion``...)."""
        ...

    def wire(self, prefix: str) -> dict[str, float]:
        """What a hospital sends for this split: :meth:`as_dict` plus any additive sums."""
        ...


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Metrics of a model on a dataset.

    Attributes:
        metrics: the task's metrics (classification or segmentation).
        num_examples: images (or volumes) evaluated.
        statistics: what a hospital sends, beside its metrics, for the federation's
            operating point and calibration: list-valued sums, never per-image values
            (:class:`~fedward.common.ml.valstats.ValidationStatistics`); empty when the
            task has none.
        outputs: in-process only (never sent): what the task head needs to score the same
            predictions again at an operating point (:meth:`~fedward.common.ml.tasks.TaskHead.operate`).
    """

    metrics: MetricSet
    num_examples: int
    statistics: Mapping[str, list[float]] = field(default_factory=dict)
    outputs: Any = None


def weighted_means(reports: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean weighted by ``num-examples`` over the reports holding the key.

    Args:
        reports: one metrics dict per hospital, each with a positive ``num-examples``.

    Returns:
        The weighted means; ``num-examples`` itself becomes the sum.
    """
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    for metrics in reports:
        weight = metrics.get(NUM_EXAMPLES, 0.0)
        if weight <= 0:
            continue
        for key, value in metrics.items():
            if key == NUM_EXAMPLES:
                continue
            totals[key] = totals.get(key, 0.0) + weight * value
            weights[key] = weights.get(key, 0.0) + weight
    out = {key: totals[key] / weights[key] for key in sorted(totals)}
    out[NUM_EXAMPLES] = float(sum(m.get(NUM_EXAMPLES, 0.0) for m in reports))
    return out
