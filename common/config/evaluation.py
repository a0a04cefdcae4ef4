"""The ``[evaluation]`` section of a run configuration: the clinical operating point and calibration.

A classifier is used at a decision threshold chosen on the federation's validation split
(never on test) by one of the :class:`~fedward.common.choices.OperatingRule` rules, and
with probabilities recalibrated by temperature scaling (Guo et al., "On calibration of
modern neural networks", ICML 2017) fitted on the same split. Validated when built
(:class:`~fedward.common.errors.ConfigError` naming the key), like every section of
:mod:`fedward.common.config.sections`.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedward.common.choices import OperatingRule, Task
from fedward.common.config.checks import check_range
from fedward.common.errors import ConfigError


@dataclass(frozen=True, slots=True)
class EvaluationConfig:
    """How the released classifier decides and how its probabilities are calibrated.

    Attributes:
        operating_point: the rule that picks the decision threshold on the federated
            validation split: ``youden`` (maximise sensitivity + specificity - 1),
            ``sensitivity`` / ``specificity`` (at least ``target``), or ``fixed``
            (``threshold``). Binary tasks threshold P(class 1), multi-label tasks each
            label; multi-class tasks decide by arg-max, so only ``youden`` (the default,
            meaning arg-max there) fits them.
        target: the sensitivity or specificity the ``sensitivity`` / ``specificity`` rule
            guarantees on validation, in (0, 1).
        threshold: the ``fixed`` rule's threshold on the calibrated probability, in [0, 1].
        calibrate: fit a temperature on the federated validation split and release the
            model with it; ``false`` keeps temperature 1.
    """

    operating_point: OperatingRule = OperatingRule.YOUDEN
    target: float = 0.95
    threshold: float = 0.5
    calibrate: bool = True

    def __post_init__(self) -> None:
        check_range("evaluation.target", self.target, low=0.0, high=1.0, low_open=True, high_open=True)
        check_range("evaluation.threshold", self.threshold, low=0.0, high=1.0)


def check_operating_point(settings: EvaluationConfig, task: Task) -> None:
    """Refuse an operating point the run's task cannot have.

    Multi-class classifiers decide by arg-max (only the default ``youden`` fits), and
    segmentation networks have no operating point at all (the section must stay at its
    defaults).

    Raises:
        ConfigError: naming ``evaluation.operating-point``.
    """
    if settings.operating_point is OperatingRule.YOUDEN:
        return
    if task is Task.MULTICLASS:
        raise ConfigError(
            f'evaluation.operating-point = "{settings.operating_point.value}": a multi-class classifier decides '
            'by arg-max, it has no threshold to choose; use "youden" (the default) or leave it out'
        )
    if task is Task.SEGMENTATION:
        raise ConfigError(
            f'evaluation.operating-point = "{settings.operating_point.value}": a segmentation run has no '
            "operating point; leave [evaluation] out"
        )
