"""The model card's ``operating_point`` entry: how the released classifier decides, and where that came from.

The entry holds the selected round's :class:`~fedward.common.ml.operating.OperatingPoint`
(rule, thresholds on the calibrated probability, temperature, target), the validation
figures at it, and a sentence saying that the point was chosen on the federated
validation split and that the test figures show how it transfers. ``fedward predict``,
``fedward model evaluate`` and the exports read it back
(:meth:`~fedward.common.ml.operating.OperatingPoint.from_json` ignores the extra keys).
"""

from __future__ import annotations

from typing import Any

from fedward.common.choices import OperatingRule, Task
from fedward.common.ml.operating_choice import point_from_metrics
from fedward.common.rundir.recorder import RunRecorder

_VALIDATION_KEYS = (
    "sensitivity",
    "specificity",
    "accuracy",
    "f1",
    "ece",
    "ece-uncalibrated",
    "brier",
    "brier-uncalibrated",
)
_RULES = {
    OperatingRule.YOUDEN: "the threshold maximising sensitivity + specificity - 1 (Youden's J)",
    OperatingRule.SENSITIVITY: "the highest threshold with sensitivity at least {target:g}",
    OperatingRule.SPECIFICITY: "the lowest threshold with specificity at least {target:g}",
    OperatingRule.FIXED: "the threshold the configuration fixed ({threshold:g}, evaluation.threshold)",
}


def operating_point_section(recorder: RunRecorder, server_round: int | None) -> dict[str, Any] | None:
    """The card's ``operating_point`` entry for the model of ``server_round``; ``None`` if it has none.

    Segmentation runs and rounds without federated validation statistics have none.
    """
    spec = recorder.spec
    task, settings = spec.schema.task, spec.config.evaluation
    if task is Task.SEGMENTATION or server_round is None:
        return None
    row = next((r for r in recorder.server_rows if r.get("round") == server_round), None)
    point = point_from_metrics(row or {}, task, spec.schema.num_outputs, settings) if row else None
    if row is None or point is None:
        return None
    if task is Task.MULTICLASS:
        how = "multi-class decisions are the most probable class (arg-max)"
    else:
        how = _RULES[point.rule].format(target=settings.target, threshold=settings.threshold)
    calibration = (
        f"temperature {point.temperature:.3g} fitted on the same split (temperature scaling, Guo et al. 2017)"
        if settings.calibrate
        else "no temperature scaling (evaluation.calibrate = false)"
    )
    return {
        **point.to_json(),
        "round": server_round,
        "validation": {k: row[f"val-{k}"] for k in _VALIDATION_KEYS if row.get(f"val-{k}") is not None},
        "note": f"Chosen on the federated validation split, never on test: {how}; {calibration}. "
        "Decisions are taken on the calibrated probability; the test figures show how the point transfers.",
    }
