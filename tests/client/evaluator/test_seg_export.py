"""Segmentation exports give PyTorch's probabilities (TorchScript 2D/3D, ONNX 2D); MONAI bundles give predict's maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from fixtures.model_dirs import run_bundle
from fixtures.seg_folders import BUSI, HIPPOCAMPUS
from PIL import Image

from fedward.client.evaluator.export_formats import INPUT_NAME, OUTPUT_NAME, ExportFormat
from fedward.client.evaluator.loaded_model import LoadedModel
from fedward.client.evaluator.model_export import export_model
from fedward.client.evaluator.seg_input import planar_input
from fedward.client.evaluator.seg_predict import predict_segmentations
from fedward.common.errors import ModelError


def _copy_into(folder: Path, source: Path, names: tuple[str, ...]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        if not (source / name).is_file():
            pytest.skip(f"{source / name} not found")
        out.append(Path(shutil.copyfile(source / name, folder / Path(name).name)))
    return out


def test_2d_onnx_and_torchscript_give_pytorchs_probabilities(seg2d: LoadedModel, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    import onnx

    (image,) = _copy_into(tmp_path / "in", BUSI, ("malignant/malignant (1).png",))
    x = planar_input(image, seg2d.model_dir).image  # a real image, preprocessed as predict does
    with torch.no_grad():
        expected = seg2d.head(x).numpy()
    assert expected.shape == (1, 2, 64, 64)
    result = export_model(seg2d, ExportFormat.ONNX, tmp_path / "model.onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert props["task"] == "segmentation" and json.loads(props["classes"]) == ["background", "lesion"]
    assert "(B, 2, 64, 64)" in props["output"]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    assert float(np.max(np.abs(got - expected))) < 1e-4
    traced = export_model(seg2d, ExportFormat.TORCHSCRIPT, tmp_path / "model.ts")
    assert traced.max_abs_diff == 0.0
    with torch.no_grad():
        np.testing.assert_array_equal(torch.jit.load(str(traced.path))(x).numpy(), expected)


def test_3d_torchscript_matches_and_onnx_is_refused(seg3d: LoadedModel, tmp_path: Path) -> None:
    result = export_model(seg3d, ExportFormat.TORCHSCRIPT, tmp_path / "model.ts")
    assert result.max_abs_diff == 0.0
    extra = {"fedward.json": ""}
    module = torch.jit.load(str(result.path), _extra_files=extra)
    assert json.loads(extra["fedward.json"])["task"] == "segmentation"
    x = torch.rand((1, 1, 48, 64, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(module(x), seg3d.head(x))
    with pytest.raises(ModelError, match="ONNX export is offered for classification and 2D segmentation"):
        export_model(seg3d, ExportFormat.ONNX, tmp_path / "model.onnx")


def test_2d_bundle_writes_predicts_png_masks(seg2d: LoadedModel, tmp_path: Path) -> None:
    images = _copy_into(tmp_path / "in", BUSI, ("benign/benign (4).png", "normal/normal (2).png"))
    result = export_model(seg2d, ExportFormat.MONAI_BUNDLE, tmp_path / "bundle")
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4  # checked when written
    meta = json.loads((result.path / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "lesion"}
    run_bundle(result.path, tmp_path / "in", tmp_path / "bundle-out")
    report = predict_segmentations(seg2d, images, tmp_path / "predict-out")
    for case in report.cases:
        assert case.output is not None
        bundled = np.asarray(Image.open(tmp_path / "bundle-out" / case.output.name))
        np.testing.assert_array_equal(bundled, np.asarray(Image.open(case.output)))


def test_3d_bundle_slides_windows_and_writes_predicts_nifti(seg3d: LoadedModel, tmp_path: Path) -> None:
    (volume,) = _copy_into(tmp_path / "in", HIPPOCAMPUS, ("imagesTr/hippocampus_003.nii.gz",))
    result = export_model(seg3d, ExportFormat.MONAI_BUNDLE, tmp_path / "bundle")
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    config = json.loads((result.path / "configs" / "inference.json").read_text())
    assert config["inferer"]["_target_"] == "SlidingWindowInferer" and config["inferer"]["roi_size"] == [48, 64, 48]
    assert config["network_def"]["spatial_dims"] == 3
    run_bundle(result.path, tmp_path / "in", tmp_path / "bundle-out")
    (case,) = predict_segmentations(seg3d, [volume], tmp_path / "predict-out").cases
    assert case.output is not None
    bundled, predicted = nib.load(tmp_path / "bundle-out" / case.output.name), nib.load(case.output)
    assert bundled.shape == predicted.shape == nib.load(volume).shape
    np.testing.assert_allclose(bundled.affine, nib.load(volume).affine)
    np.testing.assert_array_equal(np.asarray(bundled.dataobj), np.asarray(predicted.dataobj))
