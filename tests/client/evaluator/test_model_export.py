"""Exports give PyTorch's probabilities: ONNX (onnxruntime), TorchScript, and a MONAI bundle run by monai.bundle."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.model_dirs import run_bundle, write_pngs, write_run
from typer.testing import CliRunner

from fedward.client.evaluator.export_formats import INPUT_NAME, OUTPUT_NAME, ExportFormat
from fedward.client.evaluator.loaded_model import LoadedModel, load_model
from fedward.client.evaluator.model_export import ONNX_OPSET, export_model
from fedward.client.evaluator.predict import load_model_input
from fedward.common.data.images import to_model_size
from fedward.common.data.npz import read_npz
from fedward.common.errors import ModelError


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(write_run(tmp_path_factory.mktemp("runs") / "run-export"))


@pytest.fixture(scope="module")
def test_images(real_data_dir: Path) -> torch.Tensor:
    """PneumoniaMNIST's 624 test images as model input, uint8 (624, 1, 28, 28)."""
    split = read_npz(real_data_dir / "pneumoniamnist.npz", ["test"])["test"]
    return to_model_size(split.images, 28)


def test_onnx_gives_pytorch_probabilities_on_the_pneumoniamnist_test_set(
    loaded: LoadedModel, test_images: torch.Tensor, tmp_path: Path
) -> None:
    ort = pytest.importorskip("onnxruntime")
    import onnx

    result = export_model(loaded, ExportFormat.ONNX, tmp_path / "model.onnx")
    assert result.path.is_file() and result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    proto = onnx.load(str(result.path))
    assert proto.opset_import[0].version == ONNX_OPSET
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["classes"]) == ["normal", "pneumonia"] and props["task"] == "binary"
    assert props["weights_sha256"] == loaded.model_dir.sha256

    expected = loaded.probabilities(test_images)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    scaled = test_images.float().numpy() / 255.0  # the documented input: pixels / 255
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: scaled.astype(np.float32)})
    assert got.shape == (624, 2) and got.dtype == np.float32  # dynamic batch axis: exported with 2
    assert float(np.max(np.abs(got - expected))) < 1e-4
    (one,) = session.run([OUTPUT_NAME], {INPUT_NAME: scaled[:1].astype(np.float32)})
    np.testing.assert_allclose(one, expected[:1], atol=1e-4)


def test_torchscript_gives_identical_probabilities(
    loaded: LoadedModel, test_images: torch.Tensor, tmp_path: Path
) -> None:
    result = export_model(loaded, ExportFormat.TORCHSCRIPT, tmp_path / "model.ts")
    assert result.max_abs_diff == 0.0
    extra = {"fedward.json": ""}
    module = torch.jit.load(str(result.path), _extra_files=extra)
    assert json.loads(extra["fedward.json"])["model"] == "smallcnn"
    scaled = test_images.float() / 255.0
    with torch.no_grad():
        traced, eager = module(scaled), loaded.head(scaled)
    assert torch.equal(traced, eager)
    np.testing.assert_array_equal(traced.numpy(), loaded.probabilities(test_images))


def test_monai_bundle_runs_its_inference_config(loaded: LoadedModel, tmp_path: Path) -> None:
    bundle = export_model(loaded, ExportFormat.MONAI_BUNDLE, tmp_path / "bundle").path
    for name in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md"):
        assert (bundle / name).is_file(), name
    assert (bundle / "docs" / "model_card.md").read_text() == (loaded.model_dir.path / "model_card.md").read_text()
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    for key in ("version", "monai_version", "pytorch_version", "numpy_version", "task", "description"):
        assert meta[key], key
    assert "fedward" in meta["required_packages_version"]
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [28, 28] and image["value_range"] == [0.0, 1.0]
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "normal", "1": "pneumonia"}
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert state.keys() == loaded.network.state_dict().keys()

    rng = np.random.default_rng(0)
    pngs = write_pngs(tmp_path / "images", rng.integers(0, 256, size=(4, 40, 36), dtype=np.uint8))  # resized
    out = tmp_path / "results"
    run_bundle(bundle, tmp_path / "images", out)
    with open(out / "predictions.csv", newline="") as handle:
        rows = {row[0]: [float(v) for v in row[1:]] for row in csv.reader(handle)}
    assert sorted(rows) == sorted(str(p) for p in pngs)
    inputs = torch.cat([load_model_input(p, 1, 28) for p in pngs])
    expected = loaded.probabilities(inputs)
    got = np.array([rows[str(p)] for p in pngs])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_bundle_refuses_to_overwrite_another_folder(loaded: LoadedModel, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="not a MONAI bundle"):
        export_model(loaded, ExportFormat.MONAI_BUNDLE, tmp_path / "busy")


def test_cli_export_writes_the_default_path_and_rejects_unknown_formats(loaded: LoadedModel) -> None:
    from fedward.cli.main import app

    runner = CliRunner()
    model_dir = str(loaded.model_dir.path)
    result = runner.invoke(app, ["model", "export", model_dir, "--format", "torchscript", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["path"] == str(loaded.model_dir.path / "export" / "model.ts") and doc["max_abs_diff"] == 0.0
    result = runner.invoke(app, ["model", "export", model_dir, "--format", "tflite"])
    assert result.exit_code == 2
    assert "--format" in result.output and "onnx, torchscript, monai-bundle" in result.output


def test_a_classifier_learnt_with_lesion_masks_exports_as_a_classifier(tmp_path: Path) -> None:
    run = write_run(
        tmp_path / "run-busi",
        classes=("benign", "malignant", "normal"),
        task="multiclass",
        image_size=64,
        modality="US",
        model_name="unet-multitask",
    )
    multitask = load_model(run)
    images = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    probabilities = multitask.probabilities(images)
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    scripted = export_model(multitask, ExportFormat.TORCHSCRIPT, tmp_path / "model.ts")
    assert scripted.max_abs_diff == 0.0
    pytest.importorskip("onnxruntime")
    onnx = export_model(multitask, ExportFormat.ONNX, tmp_path / "model.onnx")  # checked against PyTorch on export
    assert onnx.max_abs_diff is not None and onnx.max_abs_diff < 1e-4
