"""``fedward client check-data``: every bad file with the right reason and exact counts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.dicom_folders import write_dicom_folder, write_image
from typer.testing import CliRunner

from fedward.cli.main import app
from fedward.client.hospital.check import check_folder
from fedward.simulation.dicom_export import secondary_capture

runner = CliRunner()
CLASSES = ["normal", "pneumonia"]


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """8 good images; 2 truncated; a text file; a DICOM without pixels; 2 unknown labels;
    a manifest row whose file is gone; a file the manifest does not list."""
    folder = write_dicom_folder(tmp_path / "st-elsewhere", n=8)
    rows = [["path", "label", "split"], *list(csv.reader((folder / "labels.csv").read_text().splitlines()))[1:]]
    for name in ("cut-a.dcm", "cut-b.dcm"):
        path = write_image(folder / "dicom" / name, np.full((28, 28), 9, np.uint8))
        path.write_bytes(path.read_bytes()[:-200])
        rows.append([f"dicom/{name}", "normal", "train"])
    (folder / "dicom" / "report.dcm").write_text("not an image, a dictated report\n" * 10)
    rows.append(["dicom/report.dcm", "pneumonia", "train"])
    empty = secondary_capture(np.zeros((28, 28), np.uint8), patient_name="A^B", patient_id="1", institution="h")
    del empty.PixelData
    empty.save_as(folder / "dicom" / "no-pixels.dcm", enforce_file_format=True)
    rows.append(["dicom/no-pixels.dcm", "normal", "train"])
    for name in ("covid-1.dcm", "covid-2.dcm"):
        write_image(folder / "dicom" / name, np.zeros((28, 28), np.uint8))
        rows.append([f"dicom/{name}", "covid", "train"])
    rows.append(["dicom/deleted.dcm", "normal", "train"])
    write_image(folder / "dicom" / "unlisted.dcm", np.zeros((28, 28), np.uint8))
    with open(folder / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return folder


def test_report_lists_every_bad_file_with_its_reason(messy: Path) -> None:
    report = check_folder(messy, CLASSES)
    assert not report.usable
    assert report.usable_files == 8
    by_file = {p.file: p.reason.value for p in report.problems}
    assert by_file == {
        "dicom/cut-a.dcm": "truncated",
        "dicom/cut-b.dcm": "truncated",
        "dicom/report.dcm": "not-dicom",
        "dicom/no-pixels.dcm": "no-pixel-data",
        "dicom/covid-1.dcm": "label-unknown",
        "dicom/covid-2.dcm": "label-unknown",
        "dicom/deleted.dcm": "manifest-row-without-file",
        "dicom/unlisted.dcm": "file-without-manifest-row",
    }
    assert dict(report.reasons) == {
        "truncated": 2,
        "not-dicom": 1,
        "no-pixel-data": 1,
        "label-unknown": 2,
        "manifest-row-without-file": 1,
        "file-without-manifest-row": 1,
    }
    assert report.transfer_syntaxes == {"Explicit VR Little Endian": 8}
    assert report.sizes == {"28 x 28": 8}
    assert report.counts["train"] + report.counts["val"] == {"normal": 4, "pneumonia": 4}


def test_cli_exits_1_and_prints_every_reason(messy: Path) -> None:
    result = runner.invoke(
        app, ["client", "check-data", str(messy), "--classes", "normal,pneumonia"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1
    for text in (
        "cut-a.dcm",
        "report.dcm",
        "no-pixels.dcm",
        "covid-1.dcm",
        "deleted.dcm",
        "unlisted.dcm",
        "NOT usable: 8 usable files, 8 problems",
    ):
        assert text in result.output


def test_cli_json(messy: Path) -> None:
    result = runner.invoke(app, ["client", "check-data", str(messy), "--dataset", "pneumoniamnist", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["usable"] is False and report["usable_files"] == 8
    assert report["problem_counts"]["label-unknown"] == 2


def test_clean_folder_exits_0(tmp_path: Path) -> None:
    folder = write_dicom_folder(tmp_path / "h", n=6)
    result = runner.invoke(app, ["client", "check-data", str(folder), "--classes", "normal,pneumonia"])
    assert result.exit_code == 0, result.output


def test_corrupt_files_alone_do_not_block_training(tmp_path: Path) -> None:
    folder = write_dicom_folder(tmp_path / "h", n=6)
    path = folder / "dicom" / "case-001.dcm"
    path.write_bytes(path.read_bytes()[:-100])
    report = check_folder(folder, CLASSES)
    assert report.usable and report.reasons == {"truncated": 1}


def test_missing_folder_is_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["client", "check-data", str(tmp_path / "none"), "--classes", "a,b"])
    assert result.exit_code == 2


def test_npz_folder_is_checked_too(tmp_path: Path) -> None:
    from fixtures.synthetic import write_npz

    write_npz(tmp_path / "h" / "pneumoniamnist.npz", sizes=(30, 6, 0))
    report = check_folder(tmp_path / "h", CLASSES)
    assert report.usable and report.layout == "npz"
    assert sum(report.counts["train"].values()) == 30 and report.sizes == {"28 x 28": 36}
