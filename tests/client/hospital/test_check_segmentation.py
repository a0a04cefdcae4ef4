"""``fedward client check-data`` on segmentation folders: every bad case named with its reason, good cases counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.seg_folders import add_nifti_case, busi_subset, synthetic_decathlon, write_png
from fixtures.seg_series import MESSY_PROBLEMS, export_case, messy_series_folder
from typer.testing import CliRunner

from fedward.cli.main import app
from fedward.client.hospital.check import check_folder, render
from fedward.common.choices import Task
from fedward.common.data.dicom import Reason

runner = CliRunner()
WIDE = {"COLUMNS": "240"}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return messy_series_folder(tmp_path_factory.mktemp("pacs"))


@pytest.fixture
def busi(tmp_path: Path) -> Path:
    """Six BUSI cases as class folders; one mask deleted, one replaced by a mask of another size."""
    folder = busi_subset(tmp_path / "busi", splits=False)
    (folder / "malignant" / "malignant (1)_mask.png").unlink()
    write_png(folder / "malignant" / "malignant (2)_mask.png", np.zeros((10, 12), bool))
    return folder


BUSI_PROBLEMS = {
    "malignant/malignant (1).png": Reason.MASK_MISSING,
    "malignant/malignant (2)_mask.png": Reason.MASK_MISMATCH,
}


def test_dicom_series_problems_are_reported_per_file_and_good_cases_counted(pacs: Path) -> None:
    report = check_folder(pacs, task=None)
    assert report.layout == "dicom-series" and report.unit == "cases"
    assert {p.file: p.reason for p in report.problems} == MESSY_PROBLEMS
    assert report.counts == {"train": {"cases": 2}} and report.usable_files == 2
    assert report.classes == ("background", "anterior", "posterior") and report.modalities == {"MR": 2}
    assert report.usable and report.exit_code == 1  # training could start, but the check fails


def test_cli_names_each_bad_series_file_and_exits_1(pacs: Path) -> None:
    result = runner.invoke(app, ["client", "check-data", str(pacs)], env=WIDE)
    assert result.exit_code == 1, result.output
    for file, reason in MESSY_PROBLEMS.items():
        line = next((row for row in result.output.splitlines() if file in row), "")
        assert reason.value in line, f"{file} not reported with {reason.value}"
    assert "problems to fix: 2 usable cases, 5 problems" in result.output
    listed = runner.invoke(app, ["client", "check-data", str(pacs), "--json"])
    report = json.loads(listed.output)
    assert listed.exit_code == 1 and report["exit_code"] == 1 and report["usable_files"] == 2
    assert {p["file"]: p["reason"] for p in report["problems"]} == {f: r.value for f, r in MESSY_PROBLEMS.items()}


def test_a_clean_series_folder_passes(tmp_path: Path) -> None:
    export_case("hippocampus_001", tmp_path / "pacs" / "one", patient_id="H0-00001")
    result = runner.invoke(app, ["client", "check-data", str(tmp_path / "pacs")], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "usable: 1 usable cases, 0 problems" in result.output


def test_a_folder_of_bad_cases_only_is_reported_not_raised(tmp_path: Path) -> None:
    export_case("hippocampus_001", tmp_path / "pacs" / "one", patient_id="H0-00001")
    (tmp_path / "pacs" / "one" / "series" / "slice-0005.dcm").unlink()
    report = check_folder(tmp_path / "pacs", task=None)
    assert not report.usable and report.exit_code == 1 and report.usable_files == 0
    assert [(p.file, p.reason) for p in report.problems] == [("one/series", Reason.SLICE_SPACING)]
    assert "NOT usable" in str(render(report).renderables[-1])


def test_mask_folder_with_a_missing_and_a_wrong_size_mask(busi: Path) -> None:
    report = check_folder(busi, ["background", "lesion"], Task.SEGMENTATION)
    assert report.layout == "mask-folder" and {p.file: p.reason for p in report.problems} == BUSI_PROBLEMS
    assert report.counts == {"train": {"cases": 4}} and report.exit_code == 1
    assert report.sizes == {"28 x 28": 4}


def test_cli_checks_a_mask_folder_with_the_run_config(busi: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        '[data]\ntask = "segmentation"\nclasses = ["background", "lesion"]\nchannels = 1\n'
        'target = "mask"\nimage-size = 64\n'
    )
    result = runner.invoke(app, ["client", "check-data", str(busi), "--config", str(config), "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 1 and report["sizes"] == {"64 x 64": 4}
    assert {p["file"]: p["reason"] for p in report["problems"]} == {f: r.value for f, r in BUSI_PROBLEMS.items()}


def test_decathlon_label_values_outside_the_declared_labels(tmp_path: Path) -> None:
    folder = synthetic_decathlon(tmp_path / "d")
    label = np.zeros((16, 16, 16), np.uint8)
    label[4:8, 4:8, 4:8] = 1
    image = np.random.default_rng(0).uniform(1, 100, label.shape).astype(np.float32)
    add_nifti_case(folder, "good", image, label)
    add_nifti_case(folder, "seven", image, label * 7)
    report = check_folder(folder, task=None)
    assert [(p.file, p.reason) for p in report.problems] == [("labelsTr/seven.nii.gz", Reason.LABEL_OUT_OF_RANGE)]
    assert report.counts == {"train": {"cases": 1}} and report.sizes == {"16 x 16 x 16": 1}
