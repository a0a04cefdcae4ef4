"""A released classifier's operating point: its temperature and its decision thresholds.

The run chooses both on the federation's validation split (never on test): the
temperature by temperature scaling (Guo et al., "On calibration of modern neural
networks", ICML 2017; :mod:`fedward.common.ml.calibration`), the thresholds by the
configured :class:`~fedward.common.choices.OperatingRule` (:mod:`fedward.common.ml.thresholds`).
The model card records the :class:`OperatingPoint`, and everything that uses the model
(``fedward predict``, ``fedward model evaluate``, the exports) applies it: probabilities
are ``softmax(logits / T)`` (``sigmoid`` per label for multi-label tasks), and decisions
are taken on those calibrated probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedward.common.choices import OperatingRule, Task, choose
from fedward.common.errors import ModelError


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """How a classifier's logits become calibrated probabilities and decisions.

    Attributes:
        rule: how the thresholds were chosen.
        thresholds: decision thresholds on the calibrated probability, each in [0, 1]:
            one (P(class 1)) for binary tasks, one per label for multi-label tasks, none
            for multi-class tasks (arg-max).
        temperature: the logits are divided by it (> 0; 1: uncalibrated).
        target: the sensitivity or specificity the rule guaranteed on validation, if any.
    """

    rule: OperatingRule = OperatingRule.FIXED
    thresholds: tuple[float, ...] = (0.5,)
    temperature: float = 1.0
    target: float | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ModelError(f"operating point: temperature must be a positive number, got {self.temperature!r}")
        if not all(0.0 <= t <= 1.0 for t in self.thresholds):
            raise ModelError(f"operating point: thresholds must be in [0, 1], got {self.thresholds!r}")

    @classmethod
    def uncalibrated(cls, task: Task, labels: int = 1) -> OperatingPoint:
        """Temperature 1 and threshold 0.5 (arg-max for multi-class): a model without a chosen point."""
        count = 0 if task is Task.MULTICLASS else (labels if task is Task.MULTILABEL else 1)
        return cls(OperatingRule.FIXED, (0.5,) * count)

    def threshold(self, column: int = 0) -> float:
        """The threshold of label ``column`` (binary: column 0, P(class 1))."""
        if not self.thresholds:
            raise ValueError("a multi-class operating point decides by arg-max, it has no threshold")
        return self.thresholds[column if len(self.thresholds) > 1 else 0]

    def probabilities(self, logits: np.ndarray, task: Task) -> np.ndarray:
        """Calibrated probabilities of logits.

        Args:
            logits: float (N, K) network outputs.
            task: binary or multi-class (softmax over K) or multi-label (sigmoid per label).

        Returns:
            float64 (N, K) probabilities of ``logits / temperature``.
        """
        scaled = np.asarray(logits, dtype=np.float64) / self.temperature
        if task is Task.MULTILABEL:
            return 1.0 / (1.0 + np.exp(-scaled))
        shifted = scaled - scaled.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True))

    def decide(self, probabilities: np.ndarray, task: Task) -> np.ndarray:
        """Decisions from calibrated probabilities (N, K).

        Returns:
            int64 (N,) predicted class (binary: P(class 1) >= threshold; multi-class:
            arg-max) or bool (N, K) per label (multi-label: P(label) >= its threshold).
        """
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if task is Task.MULTILABEL:
            cut = np.array([self.threshold(k) for k in range(probabilities.shape[1])])
            return np.asarray(probabilities >= cut[None, :])
        if task is Task.BINARY:
            return (probabilities[:, 1] >= self.threshold()).astype(np.int64)
        return np.asarray(probabilities.argmax(axis=1), dtype=np.int64)

    def to_json(self) -> dict[str, Any]:
        """The point as the model card's ``operating_point`` entry."""
        return {
            "rule": self.rule.value,
            "thresholds": list(self.thresholds),
            "temperature": self.temperature,
            "target": self.target,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "operating_point") -> OperatingPoint:
        """The point a model card's ``operating_point`` entry describes.

        Raises:
            ModelError: if the entry is malformed (naming ``where``).
        """
        try:
            thresholds = tuple(float(t) for t in data["thresholds"])
            target = data.get("target")
            return cls(
                choose(str(data["rule"]), OperatingRule, f"{where}.rule"),
                thresholds,
                float(data["temperature"]),
                None if target is None else float(target),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{where} is not a valid operating point ({type(err).__name__}: {err})") from None
