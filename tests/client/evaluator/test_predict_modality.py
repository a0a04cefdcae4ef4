"""The modality guard in ``fedward predict``: a chest X-ray model warns about (--strict: refuses) colour ultrasound."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fixtures.dicom_folders import pydicom_testdata, write_image
from fixtures.model_dirs import write_run
from fixtures.seg_folders import write_png
from typer.testing import CliRunner

from fedward.cli.main import app
from fedward.client.evaluator.loaded_model import LoadedModel, load_model
from fedward.client.evaluator.predict import predict_files
from fedward.client.evaluator.seg_predict import predict_segmentations
from fedward.common.choices import Modality
from fedward.common.data.series_write import write_series

pytest.importorskip("data_store", reason="pydicom-data (test extra) is not installed")
runner = CliRunner()
US_VS_DX = "modality US, but the model was trained on DX images"
COLOUR_VS_GREY = "colour image, but the model was trained on grey ones"
WARNING = f"{US_VS_DX}; {COLOUR_VS_GREY}"
"""What the chest X-ray model says about pydicom-data's colour ultrasound US1_UNCR.dcm."""


@pytest.fixture(scope="module")
def chest(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A pneumoniamnist-like binary classifier whose schema says DX, 1 channel, 2D."""
    loaded = load_model(write_run(tmp_path_factory.mktemp("runs") / "run-chest", seed=7))
    assert loaded.model_dir.schema.modality is Modality.DX
    return loaded


def test_a_colour_ultrasound_is_predicted_with_a_warning(chest: LoadedModel, caplog: pytest.LogCaptureFixture) -> None:
    ultrasound, radiograph = pydicom_testdata("US1_UNCR.dcm"), pydicom_testdata("RG1_UNCR.dcm")
    with caplog.at_level(logging.WARNING, logger="fedward"):
        report = predict_files(chest, [ultrasound, radiograph])
    us, cr = report.rows
    assert us.ok and us.warning == WARNING
    assert cr.ok and cr.warning is None  # CR and DX are one kind: radiography
    assert report.warned == [us] and not report.failed
    assert US_VS_DX in caplog.text and COLOUR_VS_GREY in caplog.text


def test_strict_refuses_the_ultrasound_and_still_predicts_the_radiograph(chest: LoadedModel) -> None:
    report = predict_files(chest, [pydicom_testdata("US1_UNCR.dcm"), pydicom_testdata("RG1_UNCR.dcm")], strict=True)
    us, cr = report.rows
    assert not us.ok and us.reason == "modality-mismatch"
    assert us.message == f"{WARNING} (--strict)"
    assert cr.ok and cr.warning is None


def test_headerless_and_other_files_are_compared_by_channels_only(chest: LoadedModel, tmp_path: Path) -> None:
    grey = write_png(tmp_path / "grey.png", np.full((28, 28), 80, np.uint8))
    colour = write_png(tmp_path / "colour.png", np.full((28, 28, 3), 80, np.uint8))
    capture = write_image(tmp_path / "capture.dcm", np.full((28, 28), 80, np.uint8))  # Secondary Capture, OT
    npz = tmp_path / "rgb.npz"
    np.savez(npz, images=np.zeros((2, 28, 28, 3), np.uint8))
    report = predict_files(chest, [grey, colour, capture, npz])
    warnings = {Path(r.file).name: r.warning for r in report.rows}
    assert warnings == {
        "grey.png": None,
        "colour.png": COLOUR_VS_GREY,
        "capture.dcm": None,  # OT says nothing about the source: not compared
        "rgb.npz[images:0]": COLOUR_VS_GREY,
        "rgb.npz[images:1]": COLOUR_VS_GREY,
    }
    strict = predict_files(chest, [grey, npz], strict=True)
    names = [(Path(r.file).name, r.reason) for r in strict.rows]
    assert names == [("grey.png", None), ("rgb.npz", "modality-mismatch")]


def test_a_model_without_a_recorded_modality_compares_channels_only(tmp_path: Path) -> None:
    loaded = load_model(write_run(tmp_path / "run-old", modality=None))
    (row,) = predict_files(loaded, [pydicom_testdata("US1_UNCR.dcm")]).rows
    assert row.ok and row.warning == COLOUR_VS_GREY


def test_cli_prints_the_warning_and_strict_exits_1(chest: LoadedModel) -> None:
    model = str(chest.model_dir.path)
    ultrasound, radiograph = str(pydicom_testdata("US1_UNCR.dcm")), str(pydicom_testdata("RG1_UNCR.dcm"))
    shown = runner.invoke(app, ["predict", model, ultrasound], env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    assert f"warning: {ultrasound}: {WARNING}; its result may be meaningless" in shown.stdout
    listed = runner.invoke(app, ["predict", model, ultrasound, radiograph, "--json"])
    assert listed.exit_code == 0
    doc = json.loads(listed.stdout)
    assert [p["warning"] for p in doc["predictions"]] == [WARNING, None] and doc["failed"] == []
    refused = runner.invoke(app, ["predict", model, ultrasound, radiograph, "--strict", "--json"])
    assert refused.exit_code == 1
    doc = json.loads(refused.stdout)
    assert [p["file"] for p in doc["predictions"]] == [radiograph]
    assert doc["failed"] == [
        {"file": ultrasound, "reason": "modality-mismatch", "message": f"{WARNING} (--strict)", "warning": None}
    ]
    table = runner.invoke(app, ["predict", model, ultrasound, "--strict"], env={"COLUMNS": "400"})
    assert table.exit_code == 1 and "modality-mismatch" in table.output and US_VS_DX in table.output


def test_segmentation_inputs_are_guarded_per_image_and_per_series(
    seg2d: LoadedModel, seg3d: LoadedModel, tmp_path: Path
) -> None:
    ct_slice = pydicom_testdata("CT_small.dcm")  # a CT image given to the ultrasound lesion model
    report = predict_segmentations(seg2d, [ct_slice], tmp_path / "out2d")
    (case,) = report.cases
    assert case.ok and case.warning == "modality CT, but the model was trained on US images"
    assert report.to_json()["predictions"][0]["warning"] == case.warning
    nifti = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8), np.float32), np.eye(4)), nifti)
    refused = predict_segmentations(seg2d, [ct_slice, nifti], tmp_path / "refused", strict=True)
    assert [(c.reason, c.message) for c in refused.cases] == [
        ("modality-mismatch", "modality CT, but the model was trained on US images (--strict)"),
        ("modality-mismatch", "3D input, but the model takes 2D images (--strict)"),
    ]
    volume = np.zeros((6, 16, 16), np.int16)
    volume[2:4, 4:12, 4:12] = 100
    write_series(volume, (2.0, 1.0, 1.0), tmp_path / "ct", patient_id="T-1", modality="CT")
    write_series(volume, (2.0, 1.0, 1.0), tmp_path / "mr", patient_id="T-2", modality="MR")
    report = predict_segmentations(seg3d, [tmp_path / "ct", tmp_path / "mr"], tmp_path / "out3d", strict=True)
    ct, mr = report.cases
    assert ct.reason == "modality-mismatch"
    assert ct.message == "modality CT, but the model was trained on MR images (--strict)"
    assert mr.ok and mr.warning is None
