"""Exports of a model with an operating point: calibrated probabilities in the graph, the point in the metadata."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.model_dirs import run_bundle, write_pngs

from fedward.client.evaluator.export_formats import INPUT_NAME, OUTPUT_NAME, ExportFormat
from fedward.client.evaluator.loaded_model import LoadedModel
from fedward.client.evaluator.model_export import export_model
from fedward.client.evaluator.predict import load_model_input, predict_files
from fedward.common.data.images import to_model_size


def _test_images(npz: Path) -> torch.Tensor:
    """The .npz's test images as model input, uint8 (N, 1, 28, 28)."""
    return to_model_size(np.load(npz)["test_images"], 28)


def test_onnx_export_decides_as_predict(
    calibrated: tuple[LoadedModel, float], operating_run: tuple[Path, Path], tmp_path: Path
) -> None:
    ort = pytest.importorskip("onnxruntime")
    import onnx

    loaded, threshold = calibrated
    _, npz = operating_run
    result = export_model(loaded, ExportFormat.ONNX, tmp_path / "model.onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4  # the self-check against loaded.head
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert float(props["fedward.temperature"]) == 2.0 and json.loads(props["fedward.thresholds"]) == [threshold]
    assert props["fedward.operating_rule"] == "youden" and props["fedward.operating_source"] == "validation"
    assert props["fedward.decision"] == f"pneumonia if probabilities[:, 1] >= {threshold:g}, else normal"
    assert "logits / 2" in props["output"]

    report = predict_files(loaded, [npz])
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    scaled = (_test_images(npz).float() / 255.0).numpy()
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: scaled})
    expected = np.array([row.probabilities for row in report.rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)  # calibrated: the graph holds the temperature
    cut = float(json.loads(props["fedward.thresholds"])[0])
    decided = ["pneumonia" if p >= cut else "normal" for p in got[:, 1]]
    assert decided == [row.predicted for row in report.rows]
    assert decided != ["pneumonia" if p >= 0.5 else "normal" for p in got[:, 1]]


def test_torchscript_export_contains_the_temperature(
    calibrated: tuple[LoadedModel, float], operating_run: tuple[Path, Path], tmp_path: Path
) -> None:
    loaded, threshold = calibrated
    result = export_model(loaded, ExportFormat.TORCHSCRIPT, tmp_path / "model.ts")
    assert result.max_abs_diff == 0.0
    extra = {"fedward.json": ""}
    module = torch.jit.load(str(result.path), _extra_files=extra)
    meta = json.loads(extra["fedward.json"])
    assert float(meta["fedward.temperature"]) == 2.0 and json.loads(meta["fedward.thresholds"]) == [threshold]
    assert float(module.temperature) == 2.0
    scaled = _test_images(operating_run[1]).float() / 255.0
    with torch.no_grad():
        traced, logits = module(scaled), loaded.network(scaled)
    torch.testing.assert_close(traced, torch.softmax(logits / 2.0, dim=1))
    np.testing.assert_array_equal(traced.numpy(), loaded.probabilities(_test_images(operating_run[1])))


def test_monai_bundle_outputs_calibrated_probabilities_and_records_the_point(
    calibrated: tuple[LoadedModel, float], tmp_path: Path
) -> None:
    loaded, threshold = calibrated
    bundle = export_model(loaded, ExportFormat.MONAI_BUNDLE, tmp_path / "bundle").path
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    point = meta["fedward_operating_point"]
    assert point["temperature"] == 2.0 and point["thresholds"] == [threshold] and point["rule"] == "youden"
    assert float(meta["fedward"]["fedward.temperature"]) == 2.0
    readme = (bundle / "docs" / "README.md").read_text()
    assert "temperature 2" in readme and "fedward_operating_point" in readme

    rng = np.random.default_rng(1)
    pngs = write_pngs(tmp_path / "images", rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8))
    run_bundle(bundle, tmp_path / "images", tmp_path / "results")
    with open(tmp_path / "results" / "predictions.csv", newline="") as handle:
        rows = {row[0]: [float(v) for v in row[1:]] for row in csv.reader(handle)}
    expected = loaded.probabilities(torch.cat([load_model_input(p, 1, 28) for p in pngs]))
    np.testing.assert_allclose(np.array([rows[str(p)] for p in pngs]), expected, atol=1e-5)
