"""Evaluation of a model directory: metrics, bootstrap intervals, ROC curves, data readers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.dicom_folders import write_dicom_folder
from fixtures.model_dirs import write_run
from fixtures.synthetic import write_npz
from typer.testing import CliRunner

from fedward.client.evaluator.evaluate import REPORTED, bootstrap_intervals, evaluate_model
from fedward.client.evaluator.labelled_data import load_labelled
from fedward.client.evaluator.loaded_model import LoadedModel, load_model
from fedward.client.evaluator.roc import plot_roc, roc_curves, roc_points
from fedward.common.choices import Task
from fedward.common.errors import DataError
from fedward.common.ml.metrics import classification_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(write_run(tmp_path_factory.mktemp("runs") / "run-eval", seed=3))


def test_evaluate_on_a_tiny_npz_gives_metrics_intervals_and_a_roc_png(
    loaded: LoadedModel, tiny_npz: Path, tmp_path: Path
) -> None:
    result = evaluate_model(loaded, tiny_npz, out_dir=tmp_path / "eval", resamples=300, seed=1)
    assert len(result.data.dataset) == 40 and result.data.split == "test"
    point = classification_metrics(
        Task.BINARY, result.data.dataset.labels, loaded.probabilities(result.data.dataset.images)
    )
    for name in REPORTED:
        value = result.metrics[name]
        assert value == getattr(point, name)
        interval = result.bootstrap.intervals[name]
        assert value is not None and interval is not None, name
        assert interval[0] <= value <= interval[1], name
    assert result.bootstrap.resamples == 300 and result.bootstrap.skipped["auc"] == 0
    assert result.roc_png is not None and result.roc_png.read_bytes().startswith(PNG_MAGIC)
    doc = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert doc["metrics"]["auc"]["value"] == result.metrics["auc"]
    assert doc["metrics"]["auc"]["ci95"] == list(result.bootstrap.intervals["auc"] or ())
    assert doc["bootstrap"]["method"] == "percentile" and doc["images"] == 40
    assert sum(doc["class_counts"].values()) == 40
    again = evaluate_model(loaded, tiny_npz, resamples=300, seed=1)
    assert again.bootstrap.intervals == result.bootstrap.intervals  # seeded


def test_bootstrap_skips_single_class_resamples_for_auc_and_counts_them() -> None:
    labels = np.array([[1], [0], [0], [0], [0], [0]])
    scores = np.array([0.9, 0.2, 0.4, 0.1, 0.3, 0.95])
    probabilities = np.stack([1 - scores, scores], axis=1)
    boot = bootstrap_intervals(Task.BINARY, labels, probabilities, resamples=1000, seed=0)
    # P(no positive in a resample of 6) = (5/6)^6 = 0.33: about a third are skipped.
    assert 250 < boot.skipped["auc"] < 420
    assert boot.skipped["accuracy"] == 0
    assert boot.intervals["auc"] is not None
    with pytest.raises(DataError, match="resamples"):
        bootstrap_intervals(Task.BINARY, labels, probabilities, resamples=0)


def test_roc_points_match_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) * 0.5 + truth * 0.3, 2)  # ties included
    fpr, tpr = roc_points(scores, truth)
    ref_fpr, ref_tpr, _ = metrics.roc_curve(truth, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.roc_auc_score(truth, scores))


def test_multiclass_and_multilabel_get_one_curve_per_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (60, 1))
    logits = rng.normal(size=(60, 3)) + 2 * np.eye(3)[labels[:, 0]]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    curves = roc_curves(Task.MULTICLASS, labels, probabilities, ("a", "b", "c"))
    assert [c.name for c in curves] == ["a", "b", "c"] and all(0.5 < c.auc <= 1 for c in curves)
    png = plot_roc(curves, tmp_path / "roc.png", "three classes")
    assert png.read_bytes().startswith(PNG_MAGIC)
    multi = rng.integers(0, 2, (60, 2))
    multi[:, 1] = 1  # a label that is always present has no curve
    curves = roc_curves(Task.MULTILABEL, multi, rng.random((60, 2)), ("x", "y"))
    assert [c.name for c in curves] == ["x"]


def test_hospital_folder_evaluates_the_requested_split(loaded: LoadedModel, tmp_path: Path) -> None:
    folder = write_dicom_folder(tmp_path / "hospital", n=20)
    (folder / "dicom" / "broken.dcm").write_bytes(b"not a dicom file at all")
    with open(folder / "labels.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["dicom/broken.dcm", "normal", "val"])
    data = load_labelled(folder, loaded.model_dir, "val")
    assert data.split == "val" and len(data.dataset) == 4  # rows 0, 5, 10, 15
    assert [p.reason.value for p in data.problems] == ["not-dicom"]
    result = evaluate_model(loaded, folder, split="val", resamples=50)
    assert result.class_counts == {"normal": 2, "pneumonia": 2}
    with pytest.raises(DataError, match="no row is in split 'test'"):
        load_labelled(folder, loaded.model_dir, "test")


def test_data_errors_name_what_is_wrong(loaded: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_labelled(tmp_path / "missing", loaded.model_dir)
    rgb = write_npz(tmp_path / "rgb" / "rgb.npz", rgb=True)
    with pytest.raises(DataError, match="3 channel"):
        load_labelled(rgb, loaded.model_dir)
    three = write_npz(tmp_path / "three" / "three.npz", classes=3)
    with pytest.raises(DataError, match="2 classes"):
        load_labelled(three.parent, loaded.model_dir)  # a folder holding one .npz
    folder = write_dicom_folder(tmp_path / "other", n=4, classes=("cat", "dog"))
    with pytest.raises(DataError, match="not the model's classes"):
        load_labelled(folder, loaded.model_dir, "val")


def test_cli_evaluate_prints_json_and_writes_results(loaded: LoadedModel, tiny_npz: Path, tmp_path: Path) -> None:
    from fedward.cli.main import app

    out = tmp_path / "out"
    args = ["model", "evaluate", str(loaded.model_dir.path), "--data", str(tiny_npz), "--resamples", "50"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert set(doc["metrics"]) == set(REPORTED) and doc["bootstrap"]["resamples"] == 50
    assert (out / "roc.png").is_file() and (out / "results.json").is_file()
    table = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert table.exit_code == 0 and "95% CI" in table.output and "sensitivity" in table.output
    bad = CliRunner().invoke(app, [*args, "--split", "train"])
    assert bad.exit_code == 2 and "--split" in bad.output
