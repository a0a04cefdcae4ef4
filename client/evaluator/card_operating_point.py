"""Which operating point a loaded classifier uses, and where it comes from.

A run records the operating point it chose on the federation's validation split (a
temperature, Guo et al., "On calibration of modern neural networks", ICML 2017, and
decision thresholds on the calibrated probability:
:class:`~fedward.common.ml.operating.OperatingPoint`) in the model card's
``operating_point`` entry, for the weights of one round (the entry's ``round``, the round
the card selected). :func:`applied_point` picks what ``fedward predict``, ``fedward model
evaluate`` and the exports use:

* the card's point when it was chosen for the loaded weights (``round`` equals theirs, or
  the entry names no round and the weights are the card's selected model):
  :attr:`PointSource.VALIDATION`;
* else temperature 1 and threshold 0.5 (arg-max for multi-class):
  :attr:`PointSource.DEFAULT` (no entry: model cards of older runs) or
  :attr:`PointSource.OTHER_ROUND` (the entry is another round's);
* ``--threshold`` replaces the thresholds (every label) and keeps the temperature:
  :attr:`PointSource.OVERRIDE` (:meth:`AppliedPoint.override`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from fedward.common.choices import OperatingRule, Task
from fedward.common.errors import ConfigError, DataError, ModelError
from fedward.common.ml.operating import OperatingPoint
from fedward.common.schema import DatasetSchema

CARD_ENTRY = "operating_point"
"""The model card's top-level key of the recorded operating point."""


class PointSource(StrEnum):
    """Where the operating point a model uses comes from."""

    VALIDATION = "validation"
    """The model card's, chosen on the federated validation split for these weights."""
    DEFAULT = "default"
    """None recorded (older runs): temperature 1, threshold 0.5."""
    OTHER_ROUND = "other-round"
    """The card's point is for another round's weights: temperature 1, threshold 0.5."""
    OVERRIDE = "override"
    """``--threshold`` replaces the thresholds; the temperature is the one above."""


@dataclass(frozen=True, slots=True)
class AppliedPoint:
    """The operating point a classifier's predictions use, and its provenance.

    Attributes:
        point: the temperature and thresholds applied.
        source: where they come from.
        task: the model's task.
        classes: class (label) names, probability order.
        chosen: whether the temperature (and, unless overridden, the thresholds) is the
            card's, chosen on validation for these weights.
        recorded: the model card's point, if it has one (whether applied or not).
        round: the round the card's point was chosen for (its ``round``, else the card's
            selected round), if known.
        validation: the card's validation figures at that point (sensitivity, ece, ...).
    """

    point: OperatingPoint
    source: PointSource
    task: Task
    classes: tuple[str, ...]
    chosen: bool = False
    recorded: OperatingPoint | None = None
    round: int | None = None
    validation: dict[str, Any] = field(default_factory=dict)

    def thresholds(self) -> tuple[float, ...]:
        """One threshold per decided column: binary (1: P(class 1)), multi-label (K); multi-class: ``()``."""
        if self.task is Task.MULTICLASS or not self.point.thresholds:
            return ()
        count = len(self.classes) if self.task is Task.MULTILABEL else 1
        return tuple(self.point.threshold(k) for k in range(count))

    def override(self, threshold: float | None) -> AppliedPoint:
        """This point with ``threshold`` for every column (``None``: unchanged); the temperature is kept.

        Raises:
            DataError: if ``threshold`` is outside [0, 1].
        """
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise DataError(f"--threshold must be in [0, 1]; got {threshold}")
        if threshold is None or self.task is Task.MULTICLASS:  # multi-class: arg-max, no threshold
            return self
        count = len(self.thresholds())
        point = dataclasses.replace(self.point, rule=OperatingRule.FIXED, thresholds=(float(threshold),) * count)
        return dataclasses.replace(self, point=point, source=PointSource.OVERRIDE)

    def describe(self) -> str:
        """One line: the decision rule, the temperature and where both come from."""
        rule = self._decision()
        temperature = f"temperature {self.point.temperature:g}"
        if self.source is PointSource.VALIDATION and not self.thresholds():
            where = "" if self.round is None else f" (round {self.round})"
            return f"arg-max, {temperature} chosen on validation{where}"
        if self.source is PointSource.VALIDATION:
            return f"{rule} chosen on validation ({self._how(self.point)}), {temperature}"
        if self.source is PointSource.OVERRIDE:
            if not self.chosen:
                return f"{rule} from --threshold, {temperature} (default: {self._why()})"
            chose = ""
            if self.recorded is not None and self.recorded.thresholds:
                chose = f" (validation chose {_listing(self.recorded.thresholds)}, {self._how(self.recorded)})"
            return f"{rule} from --threshold{chose}, {temperature} (chosen on validation)"
        return f"default {rule}, {temperature}: {self._why()}"

    def _why(self) -> str:
        """Why the default point is used."""
        if self.recorded is None:
            return "no operating point recorded in the model card"
        where = "another round" if self.round is None else f"round {self.round}"
        return f"the model card's operating point is for {where}, not these weights"

    def to_json(self) -> dict[str, Any]:
        """The ``operating_point`` entry of reports: the applied point, its source, and the card's."""
        return {
            **self.point.to_json(),
            "thresholds": list(self.thresholds()),
            "source": self.source.value,
            "description": self.describe(),
            "recorded": None if self.recorded is None else self.recorded.to_json(),
            "round": self.round,
            "validation": self.validation,
        }

    def _decision(self) -> str:
        cuts = self.thresholds()
        if not cuts:
            return "arg-max"
        if self.task is Task.BINARY:
            return f"threshold {cuts[0]:g} on P({self.classes[1]})"
        if len(set(cuts)) == 1:
            return f"threshold {cuts[0]:g} on every label"
        return "thresholds " + ", ".join(f"{c} {t:g}" for c, t in zip(self.classes, cuts, strict=True))

    def _how(self, point: OperatingPoint) -> str:
        rule = point.rule.value
        if point.target is not None and point.rule in (OperatingRule.SENSITIVITY, OperatingRule.SPECIFICITY):
            rule = f"{rule} >= {point.target:g}"
        return rule if self.round is None else f"{rule}, round {self.round}"


def applied_point(
    card: dict[str, Any], card_file: Path, schema: DatasetSchema, weights_round: int | None, best_file: bool
) -> AppliedPoint:
    """The operating point a model directory's weights use (see the module docstring).

    Args:
        card: the model card (``{}`` when there is none).
        card_file: the card's path, for error messages.
        schema: the model's task and classes.
        weights_round: the round of the loaded weights, if known.
        best_file: whether the weights file is the run's best model (``best.safetensors``).

    Returns:
        The point: the card's when it was chosen for these weights, else the default
        (segmentation models: always the default, temperature 1).

    Raises:
        ModelError: if the card's ``operating_point`` entry is malformed (naming ``card_file``).
    """
    default = OperatingPoint.uncalibrated(schema.task, len(schema.classes))
    entry = card.get(CARD_ENTRY)
    if entry is None or schema.task is Task.SEGMENTATION:
        return AppliedPoint(default, PointSource.DEFAULT, schema.task, schema.classes)
    recorded, entry_round, validation = _parse_entry(entry, f"{card_file}: {CARD_ENTRY}", schema)
    selected = _as_round(card.get("selection"), "round")
    if entry_round is not None:
        applies = weights_round is not None and weights_round == entry_round
    else:
        applies = best_file or (weights_round is not None and weights_round == selected)
    source = PointSource.VALIDATION if applies else PointSource.OTHER_ROUND
    point = recorded if applies else default
    chosen_for = entry_round if entry_round is not None else selected
    return AppliedPoint(point, source, schema.task, schema.classes, applies, recorded, chosen_for, validation)


def _parse_entry(entry: Any, where: str, schema: DatasetSchema) -> tuple[OperatingPoint, int | None, dict[str, Any]]:
    """The card entry's point (thresholds checked against the task), round and validation figures.

    Raises:
        ModelError: if the entry is malformed, naming ``where``.
    """
    if not isinstance(entry, dict):
        raise ModelError(f"{where} must be a JSON object; found {type(entry).__name__}")
    try:
        point = OperatingPoint.from_json(entry, where)
    except (ModelError, ConfigError) as err:  # ConfigError: an unknown rule, named f"{where}.rule"
        message = str(err)
        raise ModelError(message if where in message else f"{where}: {message}") from None
    labels = len(schema.classes)
    if schema.task is Task.MULTICLASS:
        point = dataclasses.replace(point, thresholds=())  # arg-max: thresholds do not apply
    elif not (len(point.thresholds) == 1 or (schema.task is Task.MULTILABEL and len(point.thresholds) == labels)):
        wanted = f"1 or {labels} (one per label)" if schema.task is Task.MULTILABEL else "1 (on P(class 1))"
        raise ModelError(f"{where} has {len(point.thresholds)} thresholds; a {schema.task.value} model needs {wanted}")
    entry_round = entry.get("round")
    if entry_round is not None and (isinstance(entry_round, bool) or not isinstance(entry_round, int)):
        raise ModelError(f"{where}.round must be a round number or null; found {entry_round!r}")
    validation = entry.get("validation") or {}
    if not isinstance(validation, dict):
        raise ModelError(f"{where}.validation must be a JSON object; found {type(validation).__name__}")
    return point, entry_round, dict(validation)


def _as_round(section: Any, key: str) -> int | None:
    value = section.get(key) if isinstance(section, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _listing(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:g}" for v in values)
