"""``fedward client check-data`` against the federation's schema: other modalities are warnings, --strict unusable."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures.dicom_folders import pydicom_testdata, write_dicom_folder
from fixtures.seg_folders import add_nifti_case, synthetic_decathlon
from fixtures.synthetic import write_npz
from typer.testing import CliRunner

from fedward.cli.main import app
from fedward.client.hospital.check import check_folder
from fedward.client.hospital.check_fit import federation_schema
from fedward.common.choices import Modality, Task
from fedward.common.config import RunConfig
from fedward.common.schema import DatasetSchema

pytest.importorskip("data_store", reason="pydicom-data (test extra) is not installed")
runner = CliRunner()
CLASSES = ["normal", "pneumonia"]
CHEST = DatasetSchema(Task.BINARY, tuple(CLASSES), 1, 2, Modality.DX)
WARNING = "modality US, but the model was trained on DX images; colour image, but the model was trained on grey ones"


@pytest.fixture
def hospital(tmp_path: Path) -> Path:
    """Six grey Secondary Capture images (OT) and a colour ultrasound among the training rows."""
    folder = write_dicom_folder(tmp_path / "hospital", n=6)
    shutil.copyfile(pydicom_testdata("US1_UNCR.dcm"), folder / "dicom" / "us.dcm")
    with open(folder / "labels.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["dicom/us.dcm", "pneumonia", "train"])
    return folder


def test_a_file_of_another_modality_is_a_warning_and_still_counted(hospital: Path) -> None:
    report = check_folder(hospital, CLASSES, schema=CHEST)
    assert [(p.file, p.reason.value, p.message) for p in report.warnings] == [
        ("dicom/us.dcm", "modality-mismatch", WARNING)
    ]
    assert report.problems == [] and report.usable_files == 7 and report.exit_code == 0
    assert report.to_json()["warnings"][0]["reason"] == "modality-mismatch"


def test_strict_makes_it_unusable_and_the_check_fail(hospital: Path) -> None:
    report = check_folder(hospital, CLASSES, schema=CHEST, strict=True)
    assert [(p.file, p.reason.value) for p in report.problems] == [("dicom/us.dcm", "modality-mismatch")]
    assert report.warnings == [] and report.usable_files == 6 and report.usable and report.exit_code == 1


def test_without_a_schema_nothing_is_compared(hospital: Path) -> None:
    report = check_folder(hospital, CLASSES, strict=True)
    assert report.problems == [] and report.warnings == [] and report.exit_code == 0


def test_cli_warns_with_a_catalogued_dataset_and_strict_exits_1(hospital: Path) -> None:
    args = ["client", "check-data", str(hospital), "--dataset", "pneumoniamnist"]
    shown = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    assert "modality-mismatch" in shown.stdout and "modality US, but the model was trained on DX images" in shown.stdout
    assert "usable: 7 usable files, 0 problems, 1 warnings (modality-mismatch)" in shown.stdout
    listed = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert listed["exit_code"] == 0 and listed["strict"] is False
    assert listed["warnings"] == [{"file": "dicom/us.dcm", "reason": "modality-mismatch", "message": WARNING}]
    strict = runner.invoke(app, [*args, "--strict", "--json"])
    assert strict.exit_code == 1
    doc = json.loads(strict.stdout)
    assert doc["problem_counts"] == {"modality-mismatch": 1} and doc["usable_files"] == 6
    plain = runner.invoke(app, ["client", "check-data", str(hospital), "--classes", "normal,pneumonia", "--strict"])
    assert plain.exit_code == 0  # --classes alone says nothing about the images


def test_the_schema_comes_from_the_config_or_the_catalog() -> None:
    assert federation_schema("pneumoniamnist", None) == CHEST
    assert federation_schema("my-hospital-set", None) is None and federation_schema(None, None) is None
    declared = RunConfig.from_mapping(
        {"data": {"dataset": "pneumoniamnist", "task": "binary", "classes": ["no", "yes"], "channels": 1}}
    )
    schema = federation_schema(None, declared)
    assert schema is not None and (schema.classes, schema.modality) == (("no", "yes"), Modality.DX)
    custom = RunConfig.from_mapping(
        {"data": {"dataset": "local", "task": "binary", "classes": ["a", "b"], "channels": 3, "modality": "US"}}
    )
    schema = federation_schema(None, custom)
    assert schema is not None and (schema.channels, schema.modality) == (3, Modality.US)


def test_npz_splits_of_another_channel_count(tmp_path: Path) -> None:
    write_npz(tmp_path / "h" / "bloodmnist.npz", sizes=(10, 4, 0), rgb=True)
    report = check_folder(tmp_path / "h", CLASSES, schema=CHEST)
    message = "colour image, but the model was trained on grey ones"
    assert [(p.file, p.message) for p in report.warnings] == [
        ("bloodmnist.npz:train", message),
        ("bloodmnist.npz:val", message),
    ]
    strict = check_folder(tmp_path / "h", CLASSES, schema=CHEST, strict=True)
    assert strict.usable_files == 0 and not strict.usable and strict.exit_code == 1


def test_a_folder_data_set_of_another_modality(tmp_path: Path) -> None:
    folder = synthetic_decathlon(tmp_path / "d", modality="CT")
    label = np.zeros((16, 16, 16), np.uint8)
    label[4:8, 4:8, 4:8] = 1
    add_nifti_case(folder, "case", np.full(label.shape, 40.0, np.float32), label)
    mr = DatasetSchema(Task.SEGMENTATION, ("background", "Lesion"), 1, 3, Modality.MR)
    report = check_folder(folder, task=None, schema=mr)
    message = "modality CT, but the model was trained on MR images"
    assert [(p.file, p.message) for p in report.warnings] == [(".", message)]
    assert report.problems == [] and report.exit_code == 0
    strict = check_folder(folder, task=None, schema=mr, strict=True)
    assert [(p.file, p.reason.value) for p in strict.problems] == [(".", "modality-mismatch")]
    assert strict.exit_code == 1
    config = tmp_path / "run.toml"  # a declared segmentation without data.volume-size: 2D or 3D as the data is
    config.write_text(
        '[data]\ndataset = "d"\ntask = "segmentation"\nclasses = ["background", "Lesion"]\nchannels = 1\n'
        'modality = "CT"\n'
    )
    fits = runner.invoke(app, ["client", "check-data", str(folder), "--config", str(config), "--strict", "--json"])
    assert fits.exit_code == 0, fits.output
    assert json.loads(fits.stdout)["warnings"] == []
