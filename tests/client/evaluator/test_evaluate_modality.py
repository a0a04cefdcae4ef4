"""The modality guard in ``fedward model evaluate``: warnings per image; --strict drops images, refuses data sets."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from fixtures.dicom_folders import pydicom_testdata, write_dicom_folder
from fixtures.model_dirs import write_run
from fixtures.seg_folders import busi_subset
from typer.testing import CliRunner

from fedward.cli.main import app
from fedward.client.evaluator.evaluate import evaluate_model
from fedward.client.evaluator.labelled_data import load_labelled
from fedward.client.evaluator.labelled_masks import load_labelled_masks
from fedward.client.evaluator.loaded_model import LoadedModel, load_model
from fedward.common.data.modality import ModalityMismatchError

pytest.importorskip("data_store", reason="pydicom-data (test extra) is not installed")
runner = CliRunner()
WARNING = "modality US, but the model was trained on DX images; colour image, but the model was trained on grey ones"


@pytest.fixture(scope="module")
def chest(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A chest X-ray (DX, grey) classifier."""
    return load_model(write_run(tmp_path_factory.mktemp("runs") / "run-chest", seed=3))


@pytest.fixture
def hospital(tmp_path: Path) -> Path:
    """Eight grey Secondary Capture images (OT: not compared) and one colour ultrasound, labelled, no splits."""
    folder = write_dicom_folder(tmp_path / "hospital", n=8, splits=False)
    shutil.copyfile(pydicom_testdata("US1_UNCR.dcm"), folder / "dicom" / "us.dcm")
    with open(folder / "labels.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["dicom/us.dcm", "pneumonia"])
    return folder


def test_folder_images_of_another_modality_are_evaluated_with_a_warning(chest: LoadedModel, hospital: Path) -> None:
    data = load_labelled(hospital, chest.model_dir)
    assert len(data.dataset) == 9 and data.problems == []
    assert [(p.file, p.reason.value, p.message) for p in data.warnings] == [
        ("dicom/us.dcm", "modality-mismatch", WARNING)
    ]
    result = evaluate_model(chest, hospital, resamples=20)
    assert result.to_json()["warnings"] == [{"file": "dicom/us.dcm", "reason": "modality-mismatch", "message": WARNING}]
    assert result.to_json()["images"] == 9


def test_strict_leaves_them_out_and_lists_them_as_skipped(chest: LoadedModel, hospital: Path) -> None:
    data = load_labelled(hospital, chest.model_dir, strict=True)
    assert len(data.dataset) == 8 and data.warnings == []
    assert [(p.file, p.reason.value, p.message) for p in data.problems] == [
        ("dicom/us.dcm", "modality-mismatch", WARNING)
    ]
    (hospital / "labels.csv").write_text("path,label\ndicom/us.dcm,pneumonia\n")
    with pytest.raises(ModalityMismatchError, match="no image fits the model"):
        load_labelled(hospital, chest.model_dir, strict=True)


def test_cli_reports_warnings_and_strict_skips(chest: LoadedModel, hospital: Path, tmp_path: Path) -> None:
    args = ["model", "evaluate", str(chest.model_dir.path), "--data", str(hospital), "--resamples", "20"]
    shown = runner.invoke(app, [*args, "--out", str(tmp_path / "a")], env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    assert "1 evaluated images may not fit the model" in shown.stdout
    assert f"warning: dicom/us.dcm: {WARNING}" in shown.stdout
    strict = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--strict", "--json"])
    assert strict.exit_code == 0, strict.output
    doc = json.loads(strict.stdout)
    assert doc["images"] == 8 and doc["warnings"] == []
    assert doc["skipped_files"] == [{"file": "dicom/us.dcm", "reason": "modality-mismatch", "message": WARNING}]
    (hospital / "labels.csv").write_text("path,label\ndicom/us.dcm,pneumonia\n")
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "c"), "--strict"])
    assert refused.exit_code == 2 and "no image fits the model" in refused.output


def test_a_mask_folder_of_another_modality_is_refused_as_a_whole_with_strict(
    seg2d: LoadedModel, tmp_path: Path
) -> None:
    folder = busi_subset(tmp_path / "busi", splits=False)
    (folder / "dataset.json").write_text(json.dumps({"modality": "CT"}))
    data = load_labelled_masks(folder, seg2d.model_dir)
    message = "modality CT, but the model was trained on US images"
    assert [(p.file, p.reason.value, p.message) for p in data.warnings] == [(".", "modality-mismatch", message)]
    with pytest.raises(ModalityMismatchError, match=f"{message} \\(--strict\\)"):
        load_labelled_masks(folder, seg2d.model_dir, strict=True)
    args = ["model", "evaluate", str(seg2d.model_dir.path), "--data", str(folder), "--resamples", "10"]
    shown = runner.invoke(app, [*args, "--overlays", "0", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["warnings"] == [{"file": ".", "reason": "modality-mismatch", "message": message}]
    refused = runner.invoke(app, [*args, "--strict"], env={"COLUMNS": "300"})
    assert refused.exit_code == 2 and message in refused.output
    (folder / "dataset.json").write_text(json.dumps({"modality": "US"}))
    assert load_labelled_masks(folder, seg2d.model_dir, strict=True).warnings == []
