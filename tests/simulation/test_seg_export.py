"""Exporting segmentation data sets as hospital folders: a deployed hospital reads back its simulated share."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from fixtures.seg_folders import BUSI, busi_subset, decathlon_subset, write_png
from fixtures.seg_series import export_case
from typer.testing import CliRunner

from fedward.cli.main import app
from fedward.common.choices import Task
from fedward.common.config import RunConfig
from fedward.common.data.hospital import HospitalData, holdout_split, hospital_from_plan
from fedward.common.data.load import load_site_folder
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.opening import OpenedDataset
from fedward.common.data.plan import HospitalSplit
from fedward.common.data.sources import FolderLayout, folder_layout
from fedward.common.errors import DataError
from fedward.common.ml.runtime import derive_seed
from fedward.common.schema import DatasetSchema
from fedward.simulation.driver import plan_hospitals, resolve_dataset
from fedward.simulation.mask_export import export_mask_folders
from fedward.simulation.seg_export import ExportKind, export_kind, holdout_aligned_rows, planned_rows
from fedward.simulation.volume_export import export_volumes

HIPPO_TRAIN = ("hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006", "hippocampus_019")
BROKEN = "hippocampus_017"
"""A train case whose label map is removed: the reader skips it, so the train rows after it shift."""
HIPPO_TEST = "hippocampus_007"
GRID = [48, 64, 48]


def hippo_config(tmp_path: Path) -> RunConfig:
    cases = (HIPPO_TRAIN[0], BROKEN, *HIPPO_TRAIN[1:], HIPPO_TEST)
    source = decathlon_subset(tmp_path / "data" / "hippo", cases)
    (source / "labelsTr" / f"{BROKEN}.nii.gz").unlink()
    return RunConfig.from_mapping(
        {
            "data": {
                "dataset": "hippo",
                "data-dir": str(tmp_path / "data"),
                "volume-size": GRID,
                "cache-dir": str(tmp_path / "cache"),
                "val-fraction": 0.3,
            },
            "federation": {"hospitals": 2, "min-hospital-size": 2},
            "model": {"name": "unet"},
            "run": {"seed": 7},
        }
    )


def split_of(data: HospitalData, part: str) -> MaskSplit:
    split = getattr(data, part).split
    assert isinstance(split, MaskSplit)
    return split


def assert_same_volumes(simulated: MaskSplit, deployed: MaskSplit, raw_zeros: int) -> None:
    """Masks identical; images equal up to int16 quantisation and the effect of stored zeros.

    Float volumes are stored as int16 with one Rescale Slope: a voxel stored as exactly 0
    (0 after the MR z-score over non-zero voxels) comes back a hair off 0, so it is z-scored
    too and shifts the statistics a little: the other voxels agree to 2e-3 relative (1.5e-3
    at worst over all Hippocampus cases), and at most the stored zeros differ more.
    """
    np.testing.assert_array_equal(deployed.masks, simulated.masks)
    np.testing.assert_array_equal(deployed.spacing, simulated.spacing)
    want, have = simulated.images, deployed.images
    zero = want == 0
    assert np.all(np.abs(have - want)[~zero] <= 2e-3 * (1 + np.abs(want[~zero])))
    assert np.count_nonzero(have[zero]) <= raw_zeros


def test_hippocampus_hospitals_read_back_what_the_plan_gives_them(tmp_path: Path) -> None:
    cfg = hippo_config(tmp_path)
    resolved, found = resolve_dataset(cfg)
    plan = plan_hospitals(resolved)
    folders = export_volumes(tmp_path / "out", found, resolved.cfg, plan, include_test=True)
    assert [f.path.name for f in folders] == ["hospital-0", "hospital-1", "test"]
    (tmp_path / "plan.json").write_text(plan.to_json())
    raw_zeros = sum(
        int(np.count_nonzero(np.asanyarray(nib.load(path).dataobj) == 0))
        for path in (found.path / "imagesTr").iterdir()
    )
    for index, (exported, hospital) in enumerate(zip(folders, plan.hospitals, strict=False)):
        assert folder_layout(exported.path) is FolderLayout.DICOM_SERIES
        assert exported.files == {"series": hospital.train.size + hospital.val.size} | {
            "SEG files": hospital.train.size + hospital.val.size
        }
        simulated = hospital_from_plan(tmp_path / "plan.json", index, resolved.schema, cfg.data, tmp_path / "cache")
        deployed = load_site_folder(
            exported.path, resolved.cfg, resolved.schema, name=hospital.name, cache_root=tmp_path / "cache"
        )
        for part in ("train", "val"):  # the deployed hold-out takes exactly the plan's validation cases
            assert_same_volumes(split_of(simulated, part), split_of(deployed, part), raw_zeros)
    assert folders[2].splits == {"test": 1}


def test_exported_headers_name_synthetic_patients_only(tmp_path: Path) -> None:
    cfg = hippo_config(tmp_path)
    resolved, found = resolve_dataset(cfg)
    export_volumes(tmp_path / "out", found, resolved.cfg, plan_hospitals(resolved))
    files = sorted((tmp_path / "out").rglob("*.dcm"))
    assert files and not any(b"hippocampus" in path.read_bytes().lower() for path in files)
    patients: dict[Path, set[str]] = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert str(ds.PatientName).startswith("SYNTHETIC^HOSPITAL") and not ds.get("SeriesDescription")
        assert ds.Modality in ("MR", "SEG")
        case = path.parent.parent if path.parent.name == "series" else path.parent
        patients.setdefault(case, set()).add(str(ds.PatientID))
    assert all(len(ids) == 1 for ids in patients.values())  # a case's series and SEG share its patient
    assert len(set.union(*patients.values())) == len(patients) == len(HIPPO_TRAIN)
    seg = pydicom.dcmread(tmp_path / "out" / "hospital-0" / "case-00001" / "seg.dcm")
    assert [item.SegmentLabel for item in seg.SegmentSequence] == ["anterior", "posterior"]


def test_holdout_aligned_rows_put_the_plan_val_where_a_deployed_hold_out_takes_it() -> None:
    hospital = HospitalSplit("hospital-1", np.array([2, 5, 9, 11, 14, 20, 21]), np.array([3, 8]))
    rows, aligned = holdout_aligned_rows(hospital, 0.2, seed=4)
    keep, held = holdout_split(np.zeros((9, 1), np.int64), 0.2, derive_seed(4, "holdout"))
    assert aligned and [rows[i] for i in held] == [(3, "val"), (8, "val")]
    assert [rows[i] for i in keep] == [(int(i), "train") for i in hospital.train]
    rows, aligned = holdout_aligned_rows(hospital, 0.5, seed=4)  # would hold out 4 or 5: rows stay in plan order
    assert not aligned and rows == planned_rows(hospital)


def test_export_kind_follows_the_data_set_form(tmp_path: Path) -> None:
    schema = DatasetSchema(Task.BINARY, ("a", "b"), 1)

    def opened(path: Path) -> OpenedDataset:
        return OpenedDataset(path, schema, {}, {}, ())

    (tmp_path / "x.npz").write_bytes(b"")
    assert export_kind(opened(tmp_path / "x.npz")) is ExportKind.CLASSIFICATION
    assert export_kind(opened(decathlon_subset(tmp_path / "hippo", HIPPO_TRAIN[:1]))) is ExportKind.VOLUMES
    assert export_kind(opened(busi_subset(tmp_path / "busi"))) is ExportKind.MASK_FOLDER
    export_case(HIPPO_TRAIN[0], tmp_path / "pacs" / "case-1", patient_id="H0-00001")
    with pytest.raises(DataError, match="nothing to export"):
        export_kind(opened(tmp_path / "pacs"))


BUSI_TRAIN = (
    "benign/benign (4).png",  # two masks
    "benign/benign (12).png",
    "benign/benign (16).png",
    "benign/benign (17).png",
    "benign/benign (18).png",  # its mask is made smaller than the image: skipped by the reader
    "malignant/malignant (2).png",
    "malignant/malignant (5).png",
    "malignant/malignant (7).png",
    "malignant/malignant (8).png",
    "normal/normal (2).png",  # empty mask
    "normal/normal (5).png",
    "normal/normal (6).png",
    "benign/benign (1).png",  # test
)


def busi_config(tmp_path: Path) -> RunConfig:
    source = busi_subset(tmp_path / "data" / "busi", BUSI_TRAIN)
    write_png(source / "benign" / "benign (18)_mask.png", np.zeros((8, 8), bool))
    return RunConfig.from_mapping(
        {
            "data": {
                "dataset": "busi",
                "data-dir": str(tmp_path / "data"),
                "image-size": 64,
                "target": "mask",
                "modality": "US",
                "cache-dir": str(tmp_path / "cache"),
                "val-fraction": 0.25,
            },
            "federation": {"hospitals": 2, "min-hospital-size": 2},
            "model": {"name": "unet"},
        }
    )


def digests(paths: list[Path]) -> set[str]:
    return {hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


def test_busi_hospitals_train_on_what_the_simulated_hospitals_trained_on(tmp_path: Path) -> None:
    if not BUSI.is_dir():
        pytest.skip("BUSI not found")
    cfg = busi_config(tmp_path)
    resolved, found = resolve_dataset(cfg)
    plan = plan_hospitals(resolved)
    (tmp_path / "plan.json").write_text(plan.to_json())
    folders = export_mask_folders(tmp_path / "out", found, resolved.cfg, plan, include_test=True)
    assert [f.path.name for f in folders] == ["hospital-0", "hospital-1", "test"]
    source_files = digests(sorted(found.path.rglob("*.png")))
    for index, (exported, hospital) in enumerate(zip(folders, plan.hospitals, strict=False)):
        with open(exported.path / "splits.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert [row["split"] for row in rows] == ["train"] * hospital.train.size + ["val"] * hospital.val.size
        assert all(row["image"] == f"{row['label']}/case-{n:05d}.png" for n, row in enumerate(rows, start=1))
        copies = sorted(p for p in exported.path.rglob("*.png"))
        assert digests(copies) <= source_files and exported.files["images"] == len(rows)  # byte-for-byte copies
        assert (exported.path / "dataset.json").read_text() == '{"modality": "US"}'
        simulated = hospital_from_plan(tmp_path / "plan.json", index, resolved.schema, cfg.data, None)
        deployed = load_site_folder(exported.path, resolved.cfg, resolved.schema, name=hospital.name, cache_root=None)
        for part in ("train", "val"):
            want, have = split_of(simulated, part), split_of(deployed, part)
            np.testing.assert_array_equal(have.images, want.images)
            np.testing.assert_array_equal(have.masks, want.masks)
    assert folders[2].splits == {"test": 1} and folders[2].files == {"images": 1, "masks": 1}
    assert sum(f.files["masks"] for f in folders[:2]) == sum(f.files["images"] for f in folders[:2]) + 1  # (4): two


def test_cli_exports_a_hippocampus_folder(tmp_path: Path) -> None:
    cfg = hippo_config(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(
        f"""[data]
dataset = "hippo"
data-dir = "{tmp_path / "data"}"
volume-size = {GRID}
cache-dir = "{tmp_path / "cache"}"

[federation]
hospitals = 2
min-hospital-size = 2

[model]
name = "unet"
""",
        encoding="utf-8",
    )
    assert cfg.data.dataset == "hippo"
    runner = CliRunner()
    args = ["data", "export", "--config", str(config), "--out", str(tmp_path / "out")]
    result = runner.invoke(app, [*args, "--include-test"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'out' / 'hospital-0'}: " in result.output and "SEG files (train " in result.output
    assert "test: 1 series, 1 SEG files (test 1)" in result.output
    assert "data.volume-size = [48, 64, 48]" in result.output and "run.seed = 0" in result.output
    series = [p for p in (tmp_path / "out").glob("hospital-*/case-*") if (p / "seg.dcm").is_file()]
    assert len(series) == len(HIPPO_TRAIN)  # the broken case is not exported
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "not empty" in again.output
    rle = runner.invoke(app, [*args[:-1], str(tmp_path / "other"), "--compression", "rle"])
    assert rle.exit_code == 2 and "--compression is for MedMNIST" in rle.output
