"""Exporting MedMNIST as hospital DICOM folders: valid DICOM, same pixels, same splits."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from fixtures.synthetic import write_npz
from typer.testing import CliRunner

from fedward.cli.main import app
from fedward.common.choices import FrameMode
from fedward.common.config import RunConfig
from fedward.common.data.hospital import hospital_from_plan
from fedward.common.data.load import load_image_folder
from fedward.common.errors import DataError
from fedward.simulation.dicom_export import SECONDARY_CAPTURE, Compression, export_plan
from fedward.simulation.driver import plan_hospitals, resolve_dataset


@pytest.fixture
def resolved(tmp_path: Path):  # type: ignore[no-untyped-def]
    write_npz(tmp_path / "data" / "tinymnist.npz", sizes=(60, 10, 12), size=32)
    cfg = RunConfig.from_mapping(
        {
            "data": {"dataset": "tinymnist", "data-dir": str(tmp_path / "data")},
            "federation": {"hospitals": 2, "min-hospital-size": 5},
        }
    )
    return resolve_dataset(cfg)[0]


@pytest.mark.parametrize("compression", list(Compression))
def test_export_is_valid_dicom_with_the_same_pixels(tmp_path: Path, resolved, compression: Compression) -> None:  # type: ignore[no-untyped-def]
    plan = plan_hospitals(resolved)
    folders = export_plan(
        tmp_path / "out", resolved.dataset.splits, resolved.schema, plan, compression, include_test=True
    )
    assert [f.name for f in folders] == ["hospital-0", "hospital-1", "test"]
    uids, names = set(), set()
    for folder in folders:
        for row in csv.DictReader((folder / "labels.csv").read_text().splitlines()):
            ds = pydicom.dcmread(folder / row["path"])
            assert ds.SOPClassUID == SECONDARY_CAPTURE == ds.file_meta.MediaStorageSOPClassUID
            assert str(ds.PatientName).startswith("SYNTHETIC^")
            uids.add(ds.SOPInstanceUID)
            names.add(str(ds.PatientID))
    assert len(uids) == len(names) == 60 + 12
    for index, folder in enumerate(folders[:2]):
        exported = load_image_folder(
            folder,
            resolved.schema,
            28,
            frames=FrameMode.MIDDLE,
            val_fraction=0.1,
            seed=0,
            name=folder.name,
            cache_root=None,
        )
        (tmp_path / "plan.json").write_text(plan.to_json())
        original = hospital_from_plan(tmp_path / "plan.json", index, resolved.schema, resolved.cfg.data, None)
        assert torch.equal(exported.train.images, original.train.images)
        assert np.array_equal(exported.train.labels, original.train.labels)
        assert torch.equal(exported.val.images, original.val.images)


def test_export_refuses_a_folder_that_is_not_empty(tmp_path: Path, resolved) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "out" / "hospital-0").mkdir(parents=True)
    (tmp_path / "out" / "hospital-0" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        export_plan(tmp_path / "out", resolved.dataset.splits, resolved.schema, plan_hospitals(resolved))


def test_cli_export(tmp_path: Path) -> None:
    write_npz(tmp_path / "data" / "tinymnist.npz", sizes=(40, 8, 0))
    result = CliRunner().invoke(
        app,
        [
            "data",
            "export",
            "--dataset",
            "tinymnist",
            "--data-dir",
            str(tmp_path / "data"),
            "--hospitals",
            "2",
            "--set",
            "federation.min-hospital-size=5",
            "--out",
            str(tmp_path / "out"),
            "--compression",
            "rle",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sum(1 for _ in (tmp_path / "out").rglob("*.dcm")) == 40


def test_jpeg2000_needs_32_px(tmp_path: Path) -> None:
    write_npz(tmp_path / "data" / "tinymnist.npz", sizes=(20, 4, 0))
    cfg = RunConfig.from_mapping(
        {
            "data": {"dataset": "tinymnist", "data-dir": str(tmp_path / "data")},
            "federation": {"hospitals": 2, "min-hospital-size": 5},
        }
    )
    small = resolve_dataset(cfg)[0]
    with pytest.raises(DataError, match="at least 32 px"):
        export_plan(tmp_path / "out", small.dataset.splits, small.schema, plan_hospitals(small), Compression.JPEG2000)
