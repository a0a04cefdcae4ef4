"""The model card's operating point: temperature-scaled probabilities and decisions at the chosen threshold.

``predict`` and ``evaluate`` use the temperature and threshold a run chose on validation
for the loaded weights, ``--threshold`` overrides the threshold, and a card without an
operating point (older runs) keeps temperature 1 and threshold 0.5.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures.model_dirs import pull_like, write_run
from typer.testing import CliRunner

from fedward.client.evaluator.card_operating_point import PointSource
from fedward.client.evaluator.evaluate import evaluate_model
from fedward.client.evaluator.loaded_model import LoadedModel, ProbabilityModel, load_model
from fedward.client.evaluator.model_dir import open_model_dir
from fedward.client.evaluator.predict import PredictionReport, predict_files
from fedward.common.choices import OperatingRule, Task
from fedward.common.data.images import to_model_size
from fedward.common.errors import DataError, ModelError
from fedward.common.ml.metrics import classification_metrics
from fedward.common.ml.operating import OperatingPoint

SetPoint = Callable[[Path, Any], Path]
MakeEntry = Callable[..., dict[str, Any]]


def _scores(report: PredictionReport) -> np.ndarray:
    """float64 (N, K) probabilities of the report's predicted rows."""
    return np.array([row.probabilities for row in report.rows if row.probabilities is not None])


def _decisions(report: PredictionReport) -> list[str | None]:
    return [row.predicted for row in report.rows]


def _logits(loaded: LoadedModel, npz: Path) -> np.ndarray:
    """The network's raw outputs on the .npz's test images, float64 (N, K)."""
    images = loaded.model_dir.preprocessing.scale(to_model_size(np.load(npz)["test_images"], 28))
    with torch.no_grad():
        return loaded.network(images).double().numpy()


def test_probability_model_divides_the_logits_by_the_temperature() -> None:
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    x = torch.rand(5, 3, 2, 2)
    with torch.no_grad():
        logits = network(x)
        softmax = ProbabilityModel(network, Task.MULTICLASS, temperature=1.7)(x)
        sigmoid = ProbabilityModel(network, Task.MULTILABEL, temperature=0.5)(x)
        plain = ProbabilityModel(network, Task.BINARY)(x)
    torch.testing.assert_close(softmax, torch.softmax(logits / 1.7, dim=1))
    torch.testing.assert_close(sigmoid, torch.sigmoid(logits / 0.5))
    assert torch.equal(plain, torch.softmax(logits, dim=1))
    head = ProbabilityModel(network, Task.BINARY, temperature=1.7)
    assert float(head.state_dict()["temperature"]) == pytest.approx(1.7)  # a buffer: exports hold it
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ModelError, match="temperature"):
            ProbabilityModel(network, Task.BINARY, temperature=bad)


def test_a_card_without_an_operating_point_behaves_as_before(
    operating_run: tuple[Path, Path], tmp_path: Path, with_operating_point: SetPoint
) -> None:
    run, npz = operating_run
    assert json.loads((run / "model_card.json").read_text()).get("operating_point") is None  # null: none chosen
    older = Path(shutil.copytree(run, tmp_path / "older"))
    card = json.loads((older / "model_card.json").read_text())
    card.pop("operating_point", None)  # cards of runs older than operating points have no entry at all
    (older / "model_card.json").write_text(json.dumps(card))
    assert open_model_dir(older).operating == open_model_dir(run).operating
    loaded = load_model(run)
    operating = loaded.model_dir.operating
    assert operating.source is PointSource.DEFAULT and not operating.chosen
    assert loaded.model_dir.operating_point == OperatingPoint.uncalibrated(Task.BINARY)
    assert float(loaded.head.temperature) == 1.0
    report = predict_files(loaded, [npz])
    logits = _logits(loaded, npz)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(_scores(report), expected, atol=1e-6)
    assert _decisions(report) == ["pneumonia" if p >= 0.5 else "normal" for p in _scores(report)[:, 1]]
    assert operating.describe() == (
        "default threshold 0.5 on P(pneumonia), temperature 1: no operating point recorded in the model card"
    )
    assert report.to_json()["operating_point"]["source"] == "default"


def test_predict_decides_at_the_recorded_threshold_with_calibrated_probabilities(
    calibrated: tuple[LoadedModel, float], operating_run: tuple[Path, Path]
) -> None:
    loaded, threshold = calibrated
    _, npz = operating_run
    operating = loaded.model_dir.operating
    assert operating.source is PointSource.VALIDATION and operating.chosen
    assert loaded.model_dir.operating_point.temperature == 2.0 and operating.thresholds() == (threshold,)
    report = predict_files(loaded, [npz])
    scores = _scores(report)
    logits = _logits(loaded, npz) / 2.0
    np.testing.assert_allclose(scores, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), atol=1e-6)
    at_threshold = ["pneumonia" if p >= threshold else "normal" for p in scores[:, 1]]
    at_half = ["pneumonia" if p >= 0.5 else "normal" for p in scores[:, 1]]
    assert _decisions(report) == at_threshold and at_threshold != at_half
    assert operating.describe() == (
        f"threshold {threshold:g} on P(pneumonia) chosen on validation (youden, round 1), temperature 2"
    )
    doc = report.to_json()["operating_point"]
    assert doc["thresholds"] == [threshold] and doc["temperature"] == 2.0 and doc["rule"] == "youden"
    assert doc["source"] == "validation" and doc["round"] == 1 and doc["validation"]["sensitivity"] == 0.95


def test_threshold_option_overrides_every_column_and_keeps_the_temperature(
    calibrated: tuple[LoadedModel, float], operating_run: tuple[Path, Path]
) -> None:
    loaded, threshold = calibrated
    _, npz = operating_run
    chosen = predict_files(loaded, [npz])
    report = predict_files(loaded, [npz], threshold=0.5)
    assert report.operating is not None and report.operating.source is PointSource.OVERRIDE
    assert report.operating.point.rule is OperatingRule.FIXED
    np.testing.assert_array_equal(_scores(report), _scores(chosen))  # still calibrated
    assert _decisions(report) == ["pneumonia" if p >= 0.5 else "normal" for p in _scores(report)[:, 1]]
    assert _decisions(report) != _decisions(chosen)
    assert report.operating.describe() == (
        f"threshold 0.5 on P(pneumonia) from --threshold (validation chose {threshold:g}, youden, round 1), "
        "temperature 2 (chosen on validation)"
    )
    with pytest.raises(DataError, match=r"--threshold must be in \[0, 1\]"):
        predict_files(loaded, [npz], threshold=1.5)


def test_cli_predict_states_the_operating_point_and_honours_threshold(
    calibrated: tuple[LoadedModel, float], operating_run: tuple[Path, Path]
) -> None:
    from fedward.cli.main import app

    loaded, threshold = calibrated
    _, npz = operating_run
    runner = CliRunner()
    model_dir = str(loaded.model_dir.path)
    table = runner.invoke(app, ["predict", model_dir, str(npz)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert f"operating point: threshold {threshold:g} on P(pneumonia) chosen on validation (youden" in table.output
    chosen = json.loads(runner.invoke(app, ["predict", model_dir, str(npz), "--json"]).output)
    override = json.loads(runner.invoke(app, ["predict", model_dir, str(npz), "--json", "--threshold", "0.5"]).output)
    assert chosen["operating_point"]["source"] == "validation" and override["operating_point"]["source"] == "override"
    assert override["operating_point"]["thresholds"] == [0.5]
    for doc, cut in ((chosen, threshold), (override, 0.5)):
        for row in doc["predictions"]:
            assert row["predicted"] == ("pneumonia" if row["probabilities"]["pneumonia"] >= cut else "normal")


def test_the_point_applies_only_to_the_weights_it_was_chosen_for(
    operating_run: tuple[Path, Path], tmp_path: Path, with_operating_point: SetPoint, make_entry: MakeEntry
) -> None:
    run = Path(shutil.copytree(operating_run[0], tmp_path / "run"))
    with_operating_point(run, make_entry(0.3, round=2))  # best is round 1
    other = open_model_dir(run).operating
    assert other.source is PointSource.OTHER_ROUND and other.point == OperatingPoint.uncalibrated(Task.BINARY)
    assert other.recorded is not None and other.recorded.thresholds == (0.3,)
    assert other.describe().endswith("the model card's operating point is for round 2, not these weights")
    assert open_model_dir(run, round=2).operating.source is PointSource.VALIDATION
    assert float(load_model(run).head.temperature) == 1.0

    with_operating_point(run, make_entry(0.3, round=None))  # no round: the card's selected model (round 1)
    assert open_model_dir(run).operating.point.thresholds == (0.3,)
    assert open_model_dir(run, round=1).operating.source is PointSource.VALIDATION
    assert open_model_dir(run, round=2).operating.source is PointSource.OTHER_ROUND
    with_operating_point(run, make_entry(0.3, round=1))
    pulled = open_model_dir(pull_like(run, tmp_path / "pulled"))
    assert pulled.operating.source is PointSource.VALIDATION and pulled.operating_point.temperature == 2.0
    assert open_model_dir(pull_like(run, tmp_path / "pulled-2", 2)).operating.source is PointSource.OTHER_ROUND


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"thresholds": None}, "operating_point"),
        ({"thresholds": [1.5]}, r"thresholds must be in \[0, 1\]"),
        ({"thresholds": [0.4, 0.6]}, "has 2 thresholds; a binary model needs 1"),
        ({"temperature": 0}, "temperature must be a positive number"),
        ({"temperature": "hot"}, "not a valid operating point"),
        ({"rule": "magic"}, r"operating_point\.rule"),
        ({"round": "twelve"}, r"operating_point\.round must be a round number"),
        ({"validation": [0.9]}, r"operating_point\.validation must be a JSON object"),
        (None, "must be a JSON object; found list"),
    ],
)
def test_a_malformed_operating_point_is_refused_naming_the_card(
    operating_run: tuple[Path, Path],
    tmp_path: Path,
    with_operating_point: SetPoint,
    make_entry: MakeEntry,
    change: dict[str, Any] | None,
    message: str,
) -> None:
    run = Path(shutil.copytree(operating_run[0], tmp_path / "run"))
    entry: Any = [0.5] if change is None else {**make_entry(0.4), **change}
    with_operating_point(run, entry)
    with pytest.raises(ModelError, match=message) as caught:
        load_model(run)
    assert str(run / "model_card.json") in str(caught.value)


def test_evaluate_reports_at_the_operating_point_with_ece_and_brier(
    calibrated: tuple[LoadedModel, float], operating_run: tuple[Path, Path], tmp_path: Path
) -> None:
    loaded, threshold = calibrated
    _, npz = operating_run
    result = evaluate_model(loaded, npz, out_dir=tmp_path / "eval", resamples=50, seed=1)
    labels, images = result.data.dataset.labels, result.data.dataset.images
    scores = loaded.probabilities(images)
    at_point = classification_metrics(Task.BINARY, labels, scores, threshold=threshold)
    for name in ("auc", "accuracy", "sensitivity", "specificity", "f1"):
        assert result.metrics[name] == getattr(at_point, name), name
    truth = labels.reshape(-1)
    assert result.calibration["brier"] == pytest.approx(float(np.mean((scores[:, 1] - truth) ** 2)))
    assert result.calibration["ece"] == pytest.approx(_reference_ece(scores, truth))
    assert result.threshold == threshold and result.operating.source is PointSource.VALIDATION
    doc = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert doc["threshold"] == threshold and doc["operating_point"]["temperature"] == 2.0
    assert doc["calibration"]["ece"]["value"] == result.calibration["ece"] and doc["calibration"]["ece_bins"] == 15
    assert doc["calibration"]["brier"]["ci95"] is not None and doc["metrics"]["sensitivity"]["ci95"] is not None
    override = evaluate_model(loaded, npz, resamples=20, threshold=0.5)
    at_half = classification_metrics(Task.BINARY, labels, scores, threshold=0.5)
    assert override.metrics["accuracy"] == at_half.accuracy and override.operating.source is PointSource.OVERRIDE
    assert override.calibration == result.calibration  # the temperature is kept


def _reference_ece(scores: np.ndarray, truth: np.ndarray, bins: int = 15) -> float:
    """Guo et al.'s ECE, written out: top-label confidence in 15 bins (lo, hi]."""
    confidence = scores.max(axis=1).astype(np.float64)
    correct = scores.argmax(axis=1) == truth
    total = 0.0
    for b in range(bins):
        inside = (confidence > b / bins) & (confidence <= (b + 1) / bins)
        if inside.any():
            total += inside.sum() / len(scores) * abs(correct[inside].mean() - confidence[inside].mean())
    return total


def test_cli_evaluate_prints_the_operating_point_and_calibration(
    calibrated: tuple[LoadedModel, float], operating_run: tuple[Path, Path], tmp_path: Path
) -> None:
    from fedward.cli.main import app

    loaded, threshold = calibrated
    args = ["model", "evaluate", str(loaded.model_dir.path), "--data", str(operating_run[1]), "--resamples", "20"]
    table = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert f"operating point: threshold {threshold:g} on P(pneumonia) chosen on validation" in table.output
    assert "ece" in table.output and "brier" in table.output
    override = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--json", "--threshold", "0.3"])
    doc = json.loads(override.output)
    assert doc["threshold"] == 0.3 and doc["operating_point"]["source"] == "override"


def test_multilabel_thresholds_apply_per_label(tmp_path: Path, with_operating_point: SetPoint) -> None:
    run = write_run(tmp_path / "run-ml", classes=("a", "b", "c"), task="multilabel")
    with_operating_point(run, {"rule": "fixed", "thresholds": [0.0, 1.0, 0.0], "temperature": 1.5, "round": 1})
    loaded = load_model(run)
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    np.savez(tmp_path / "images.npz", images=images[:, 0].numpy())
    report = predict_files(loaded, [tmp_path / "images.npz"])
    assert _decisions(report) == ["a|c"] * 3  # b's probability never reaches 1
    assert loaded.model_dir.operating.describe().startswith("thresholds a 0, b 1, c 0 chosen on validation (fixed")
    assert predict_files(loaded, [tmp_path / "images.npz"], threshold=0.0).rows[0].predicted == "a|b|c"
    with_operating_point(run, {"rule": "fixed", "thresholds": [0.2, 0.3], "temperature": 1.0})
    with pytest.raises(ModelError, match="has 2 thresholds; a multilabel model needs 1 or 3"):
        open_model_dir(run)


def test_multiclass_points_decide_by_arg_max_at_their_temperature(
    tmp_path: Path, with_operating_point: SetPoint
) -> None:
    run = write_run(tmp_path / "run-mc", classes=("x", "y", "z"), task="multiclass")
    with_operating_point(run, {"rule": "youden", "thresholds": [], "temperature": 0.8, "round": 1})
    loaded = load_model(run)
    assert float(loaded.head.temperature) == pytest.approx(0.8)
    assert loaded.model_dir.operating.describe() == "arg-max, temperature 0.8 chosen on validation (round 1)"
    assert loaded.model_dir.operating.override(0.3).source is PointSource.VALIDATION  # no threshold to override


def test_the_card_a_run_writes_is_read_back(tmp_path: Path) -> None:
    """The server's card writer records the selected round's point; the evaluator applies it."""
    from fedward.common.config import RunConfig, RunSpec
    from fedward.common.ml.networks import build_network
    from fedward.common.rundir.card import RunEnding, build_model_card, write_model_card
    from fedward.common.rundir.recorder import RunRecorder
    from fedward.common.schema import DatasetSchema

    run = tmp_path / "run-card"
    raw = {"federation": {"rounds": 2}, "data": {"image-size": 28}, "run": {"output-dir": str(tmp_path)}}
    spec = RunSpec(RunConfig.from_mapping(raw), DatasetSchema(Task.BINARY, ("normal", "pneumonia"), 1, 2), run)
    recorder = RunRecorder(run, spec, mode="federated")
    model = build_network(spec.config.model.name, 1, 2)
    point = {"val-temperature": 1.7, "val-threshold": 0.43, "val-sensitivity": 0.95}
    for server_round, metrics in ((1, {"val-auc": 0.9, **point}), (2, {"val-auc": 0.8, "val-temperature": 1.2})):
        recorder.record_round(server_round, model.state_dict(), metrics)
    recorder.finish("completed")
    write_model_card(run, build_model_card(recorder, RunEnding("completed")))
    operating = open_model_dir(run).operating  # best: round 1
    assert operating.source is PointSource.VALIDATION and operating.round == 1
    assert operating.point.temperature == 1.7 and operating.thresholds() == (0.43,)
    assert operating.validation["sensitivity"] == 0.95
    assert float(load_model(run).head.temperature) == pytest.approx(1.7)
    assert open_model_dir(run, round=2).operating.source is PointSource.OTHER_ROUND


def test_ece_and_brier_on_values_worked_by_hand() -> None:
    from fedward.client.evaluator.calibration_report import calibration

    def ece(task: Task, truth: np.ndarray, p: np.ndarray) -> float:
        return calibration(task, truth, p)["ece"]

    def brier(task: Task, truth: np.ndarray, p: np.ndarray) -> float:
        return calibration(task, truth, p)["brier"]

    binary = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    truth = np.array([1, 0, 0, 1])  # confidences 0.9, 0.8, 0.7, 0.6 in four bins; correct 1, 0, 1, 1
    assert ece(Task.BINARY, truth, binary) == pytest.approx((0.1 + 0.8 + 0.3 + 0.4) / 4)
    assert brier(Task.BINARY, truth[:, None], binary) == pytest.approx((0.01 + 0.64 + 0.09 + 0.16) / 4)
    calibrated = np.array([[0.25, 0.75]] * 4)  # one bin, confidence 0.75, three of four right
    assert ece(Task.BINARY, np.array([1, 1, 1, 0]), calibrated) == pytest.approx(0.0, abs=1e-9)
    three = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert brier(Task.MULTICLASS, np.array([0, 1]), three) == pytest.approx((0.14 + 1.46) / 2)
    labels, pairs = np.array([[1, 1]]), np.array([[0.9, 0.2]])  # pairs: confidence 0.9 right, 0.8 wrong
    assert ece(Task.MULTILABEL, labels, pairs) == pytest.approx((0.1 + 0.8) / 2)
    assert brier(Task.MULTILABEL, labels, pairs) == pytest.approx((0.01 + 0.64) / 2)


def test_per_label_thresholds_decide_each_label_and_keep_the_auc() -> None:
    from fedward.client.evaluator.calibration_report import decision_metrics

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, (80, 3))
    scores = np.clip(0.35 * labels + 0.65 * rng.random((80, 3)), 0.0, 1.0)
    cuts = (0.3, 0.5, 0.7)
    got = decision_metrics(Task.MULTILABEL, labels, scores, cuts)
    decided = scores >= np.array(cuts)
    positives = labels.astype(bool)
    sensitivity = np.mean([(decided & positives)[:, k].sum() / positives[:, k].sum() for k in range(3)])
    specificity = np.mean([(~decided & ~positives)[:, k].sum() / (~positives)[:, k].sum() for k in range(3)])
    assert got.sensitivity == pytest.approx(sensitivity) and got.specificity == pytest.approx(specificity)
    assert got.accuracy == pytest.approx(float(np.mean(decided == positives)))
    assert got.auc == classification_metrics(Task.MULTILABEL, labels, scores).auc
    assert decision_metrics(Task.MULTILABEL, labels, scores, (0.4,)) == classification_metrics(
        Task.MULTILABEL, labels, scores, threshold=0.4
    )
