"""The federation's operating point: from hospitals' validation statistics to the recorded point, and back."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from fedward.common.choices import OperatingRule, Task
from fedward.common.config import RunConfig
from fedward.common.config.evaluation import EvaluationConfig, check_operating_point
from fedward.common.errors import ConfigError
from fedward.common.ml.classify import ClassificationHead
from fedward.common.ml.operating_choice import choose_operating_point, point_from_metrics
from fedward.common.ml.pointscores import ScoredSplit, metrics_at_thresholds, scores_at
from fedward.common.ml.valstats import ValidationStatistics, is_statistic, merge_wire


def binary_split(seed: int, n: int, scale: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, 2) that rank better than chance, overconfident by ``scale``, and targets (N,)."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, n)
    margin = (rng.normal(size=n) + 1.2 * (2 * targets - 1)) * scale
    return np.stack([np.zeros(n), margin], axis=1), targets


def test_hospitals_statistics_merge_to_the_pooled_split_and_survive_the_wire() -> None:
    parts = [binary_split(seed, n) for seed, n in ((0, 50), (1, 80), (2, 31))]
    pooled = ValidationStatistics.of(
        np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), Task.BINARY
    )
    wires = [ValidationStatistics.of(logits, targets, Task.BINARY).wire() for logits, targets in parts]
    assert all(is_statistic(k) and isinstance(v, list) for w in wires for k, v in w.items())
    merged, used = merge_wire([*wires, {}])  # a hospital without validation images sends none
    assert used == 3 and merged is not None and merged.histogram is not None and pooled.histogram is not None
    assert np.array_equal(merged.histogram.positives, pooled.histogram.positives)
    assert np.array_equal(merged.histogram.negatives, pooled.histogram.negatives)
    assert np.allclose(merged.calibration.nll, pooled.calibration.nll)
    assert merged.calibration.images == 161


@pytest.mark.parametrize(
    "broken",
    [
        {"val-stats-nll": [1.0]},  # wrong length
        {"val-stats-positives": [0.5] * 256},  # not a count
        {"val-stats-images": [-3.0]},
    ],
)
def test_a_malformed_reply_is_left_out_of_the_choice(broken: dict[str, list[float]]) -> None:
    good = ValidationStatistics.of(*binary_split(0, 40), Task.BINARY).wire()
    merged, used = merge_wire([good, {**good, **broken}])
    assert used == 1 and merged is not None and merged.calibration.images == 40


def test_youden_matches_the_roc_curve_and_the_temperature_undoes_overconfidence() -> None:
    logits, targets = binary_split(5, 2000, scale=6.0)
    stats = ValidationStatistics.of(logits, targets, Task.BINARY)
    point, metrics = choose_operating_point(stats, EvaluationConfig())
    # Classes N(-1.2, 1) and N(1.2, 1) have true log-odds 2.4 x; logits 6 x are 2.5 times too confident.
    assert 2.0 < point.temperature < 3.0
    assert metrics["val-ece"] < metrics["val-ece-uncalibrated"]
    fpr, tpr, _ = roc_curve(targets, logits[:, 1] - logits[:, 0])
    best_j = float(np.max(tpr - fpr))
    assert metrics["val-sensitivity"] + metrics["val-specificity"] - 1 == pytest.approx(best_j, abs=0.02)
    decided = point.decide(point.probabilities(logits, Task.BINARY), Task.BINARY)
    assert float(np.mean(decided[targets == 1])) == pytest.approx(metrics["val-sensitivity"], abs=1e-9)


def test_the_sensitivity_rule_holds_its_target_on_validation() -> None:
    logits, targets = binary_split(6, 1500)
    settings = EvaluationConfig(operating_point=OperatingRule.SENSITIVITY, target=0.95)
    point, metrics = choose_operating_point(ValidationStatistics.of(logits, targets, Task.BINARY), settings)
    assert metrics["val-sensitivity"] >= 0.95 and point.target == 0.95 and point.rule is OperatingRule.SENSITIVITY
    scored = ScoredSplit(Task.BINARY, logits, targets, 0.3)
    assert scores_at(point, scored).sensitivity == pytest.approx(metrics["val-sensitivity"])


def test_a_fixed_threshold_is_kept_and_calibration_can_be_off() -> None:
    logits, targets = binary_split(7, 300)
    settings = EvaluationConfig(operating_point=OperatingRule.FIXED, threshold=0.3, calibrate=False)
    point, metrics = choose_operating_point(ValidationStatistics.of(logits, targets, Task.BINARY), settings)
    assert point.thresholds == (0.3,) and point.temperature == 1.0 and metrics["val-threshold"] == 0.3


def test_multilabel_thresholds_per_label_and_a_label_without_positives_falls_back() -> None:
    rng = np.random.default_rng(8)
    targets = rng.integers(0, 2, (400, 3))
    targets[:, 2] = 0  # nobody has label 2 in validation
    logits = rng.normal(size=(400, 3)) + 2.0 * targets
    point, metrics = choose_operating_point(
        ValidationStatistics.of(logits, targets, Task.MULTILABEL), EvaluationConfig()
    )
    assert len(point.thresholds) == 3 and point.thresholds[2] == 0.5 and metrics["val-threshold-fallbacks"] == 1
    again = point_from_metrics(metrics, Task.MULTILABEL, 3, EvaluationConfig())
    assert again == point
    got = metrics_at_thresholds(
        Task.MULTILABEL, targets, point.probabilities(logits, Task.MULTILABEL), point.thresholds
    )
    decided = point.decide(point.probabilities(logits, Task.MULTILABEL), Task.MULTILABEL)
    assert got.accuracy == pytest.approx(float(np.mean(decided == targets.astype(bool))))


def test_multiclass_decides_by_argmax_with_a_fitted_temperature() -> None:
    rng = np.random.default_rng(9)
    targets = rng.integers(0, 4, 500)
    logits = 4.0 * (rng.normal(size=(500, 4)) + 1.5 * np.eye(4)[targets])
    point, metrics = choose_operating_point(
        ValidationStatistics.of(logits, targets, Task.MULTICLASS), EvaluationConfig()
    )
    assert point.thresholds == () and point.temperature > 1.0 and "val-threshold" not in metrics
    assert point_from_metrics(metrics, Task.MULTICLASS, 4, EvaluationConfig()) == point


def test_the_head_reports_test_figures_at_the_round_s_validation_point() -> None:
    head = ClassificationHead(("normal", "pneumonia"))
    val_logits, val_targets = binary_split(10, 400)
    report = {"num-examples": 400.0, "val-auc": 0.9}
    federated = head.federate([report], [ValidationStatistics.of(val_logits, val_targets, Task.BINARY).wire()])
    assert federated["operating-hospitals"] == 1 and 0 < federated["val-threshold"] < 1
    test_logits, test_targets = binary_split(11, 300)
    point = point_from_metrics(federated, Task.BINARY, 2, head.evaluation)
    assert point is not None
    expected = scores_at(point, ScoredSplit(Task.BINARY, test_logits, test_targets, 0.2))
    assert expected.ece is not None and expected.brier is not None
    assert head.federate([report]) == {"val-auc": 0.9, "num-examples": 400.0}, "no statistics: means only"


def test_settings_that_make_no_sense_are_refused_naming_the_key() -> None:
    for bad, key in (({"target": 0.0}, "evaluation.target"), ({"threshold": -0.1}, "evaluation.threshold")):
        with pytest.raises(ConfigError, match=re.escape(key)):
            RunConfig.from_mapping({"evaluation": bad})
    with pytest.raises(ConfigError, match=re.escape("evaluation.operating-point")):
        check_operating_point(EvaluationConfig(operating_point=OperatingRule.SENSITIVITY), Task.MULTICLASS)
    with pytest.raises(ConfigError, match=re.escape("evaluation.operating-point")):
        check_operating_point(EvaluationConfig(operating_point=OperatingRule.FIXED), Task.SEGMENTATION)
    check_operating_point(EvaluationConfig(operating_point=OperatingRule.SENSITIVITY), Task.MULTILABEL)
