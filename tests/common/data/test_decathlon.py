"""Decathlon folders: dataset.json, splits, bad cases as problems, RAS orientation, resampling, intensity, grid."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fixtures.seg_folders import add_nifti_case, decathlon_subset, synthetic_decathlon

from fedward.common.choices import Intensity, Modality, Task
from fedward.common.data.decathlon import parse_modality, read_decathlon, read_decathlon_index
from fedward.common.data.dicom import Reason
from fedward.common.data.masksplit import MaskSplit
from fedward.common.errors import DataError


def volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1, 100, shape).astype(np.float32)


def blob(shape: tuple[int, int, int], value: int = 1) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    label[2:5, 2:5, 2:5] = value
    return label


def mask_split(read: object, split: str) -> MaskSplit:
    out = read.splits[split]  # type: ignore[attr-defined]
    assert isinstance(out, MaskSplit)
    return out


def test_hippocampus_cases_are_read_with_splits_schema_and_grid(tmp_path: Path) -> None:
    folder = decathlon_subset(tmp_path / "hippo")
    read = read_decathlon(folder)
    schema = read.schema
    assert (schema.task, schema.classes) == (Task.SEGMENTATION, ("background", "anterior", "posterior"))
    assert (schema.channels, schema.spatial_dims, schema.modality) == (1, 3, Modality.MR)
    assert not read.problems and {s: len(v) for s, v in read.splits.items()} == {"train": 2, "val": 1, "test": 1}
    shapes = [nib.load(p).shape for p in sorted((folder / "imagesTr").iterdir())]
    grid = tuple(int(np.ceil(max(s[i] for s in shapes) / 16) * 16) for i in range(3))
    train = mask_split(read, "train")
    assert train.images.shape == (2, 1, *grid) and train.images.dtype == np.float32
    assert train.masks.shape == (2, *grid) and train.masks.dtype == np.uint8
    assert set(np.unique(train.masks)) == {0, 1, 2}
    assert train.labels.tolist() == [[0], [0]] and train.labels.dtype == np.int64
    np.testing.assert_allclose(train.spacing, 1.0)  # Hippocampus is 1 mm isotropic


def test_bad_cases_are_problems_and_good_cases_are_still_read(tmp_path: Path) -> None:
    folder = decathlon_subset(tmp_path / "hippo", splits=False)
    shape = (10, 12, 14)
    add_nifti_case(folder, "wrong_size", volume(shape), blob((10, 12, 13)))
    add_nifti_case(folder, "wrong_affine", volume(shape), blob(shape), label_affine=np.diag([2.0, 1, 1, 1]))
    add_nifti_case(folder, "value_seven", volume(shape), blob(shape, 7))
    add_nifti_case(folder, "no_label", volume(shape), None)
    add_nifti_case(folder, "no_image", None, blob(shape))
    add_nifti_case(folder, "garbage", volume(shape), blob(shape))
    (folder / "imagesTr" / "garbage.nii.gz").write_bytes(b"not a nifti")
    add_nifti_case(folder, "cut", volume(shape), blob(shape))
    data = (folder / "labelsTr" / "cut.nii.gz").read_bytes()
    (folder / "labelsTr" / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    read = read_decathlon(folder)
    assert {p.file: p.reason for p in read.problems} == {
        "labelsTr/wrong_size.nii.gz": Reason.MASK_MISMATCH,
        "labelsTr/wrong_affine.nii.gz": Reason.MASK_MISMATCH,
        "labelsTr/value_seven.nii.gz": Reason.LABEL_OUT_OF_RANGE,
        "labelsTr/no_label.nii.gz": Reason.MASK_MISSING,
        "imagesTr/no_image.nii.gz": Reason.MISSING_FILE,
        "imagesTr/garbage.nii.gz": Reason.NOT_IMAGE,
        "labelsTr/cut.nii.gz": Reason.TRUNCATED,
    }
    assert "7" in next(p.message for p in read.problems if p.reason is Reason.LABEL_OUT_OF_RANGE)
    assert set(read.splits) == {"train"} and len(read.splits["train"]) == 4  # no splits.csv: all train
    # the rows' cases, as read: the skipped cases between them shift the row indices
    assert read.cases == {"train": ("hippocampus_001", "hippocampus_003", "hippocampus_007", "hippocampus_011")}


def test_each_split_names_its_rows_cases(tmp_path: Path) -> None:
    read = read_decathlon(decathlon_subset(tmp_path / "hippo"))
    assert read.cases == {
        "train": ("hippocampus_001", "hippocampus_003"),
        "val": ("hippocampus_011",),
        "test": ("hippocampus_007",),
    }


def test_volumes_are_oriented_to_ras(tmp_path: Path) -> None:
    folder = synthetic_decathlon(tmp_path / "d")
    label = np.zeros((16, 32, 48), dtype=np.uint8)
    label[0, 0, 0] = 1  # the voxel at the patient's right, posterior, inferior corner... once x is flipped
    flipped_x = np.diag([-1.0, 1.0, 1.0, 1.0])  # voxel axis 0 runs to the Left (LAS)
    add_nifti_case(folder, "las", volume(label.shape), label, affine=flipped_x)
    swapped = np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # axis 0 is y, axis 1 is x
    add_nifti_case(folder, "ars", volume(label.shape), label, affine=swapped)
    read = read_decathlon(folder, volume_size=(32, 32, 48))
    masks = mask_split(read, "train").masks
    # LAS: after RAS orientation voxel x = 0 is the last index along axis 0; the grid pads 16 -> 32 centred.
    assert np.argwhere(masks[0]).tolist() == [[8 + 15, 0, 0]]
    # ARS (axes swapped): RAS orientation swaps them back, so the 32-voxel axis comes first.
    assert np.argwhere(masks[1]).tolist() == [[0, 8, 0]]


def test_resampling_to_a_spacing_and_an_explicit_grid(tmp_path: Path) -> None:
    folder = decathlon_subset(tmp_path / "hippo", ("hippocampus_001",), splits=False)
    read = read_decathlon(folder, spacing=(2.0, 2.0, 2.0), volume_size=(16, 32, 16))
    train = mask_split(read, "train")
    assert train.images.shape == (1, 1, 16, 32, 16)
    np.testing.assert_allclose(train.spacing, [[2.0, 2.0, 2.0]])
    assert set(np.unique(train.masks)) <= {0, 1, 2} and train.masks.max() > 0
    native = mask_split(read_decathlon(folder), "train")
    assert native.masks.sum() > 4 * train.masks.sum()  # 8x fewer voxels per structure at 2 mm


def test_mr_z_score_keeps_background_zero_and_ct_is_windowed(tmp_path: Path) -> None:
    mr = synthetic_decathlon(tmp_path / "mr")
    image = np.zeros((16, 16, 16), dtype=np.float32)
    image[4:12, 4:12, 4:12] = np.random.default_rng(0).uniform(100, 900, (8, 8, 8))
    add_nifti_case(mr, "a", image, blob(image.shape))
    out = mask_split(read_decathlon(mr), "train").images[0, 0]
    inside = out[4:12, 4:12, 4:12]
    assert np.count_nonzero(out) == inside.size and abs(float(inside.mean())) < 1e-4
    ct = synthetic_decathlon(tmp_path / "ct", modality="CT")
    hounsfield = np.full((16, 16, 16), -2000.0, dtype=np.float32)
    hounsfield[8:, :, :] = 1000.0
    hounsfield[0, 0, 0] = 0.0
    add_nifti_case(ct, "b", hounsfield, blob(hounsfield.shape))
    read = read_decathlon(ct, ct_window=(-1000.0, 1000.0))
    assert read.schema.modality is Modality.CT
    windowed = mask_split(read, "train").images[0, 0]
    assert (windowed[0, 0, 0], windowed[8, 0, 0], windowed[1, 0, 0]) == (0.5, 1.0, 0.0)
    percentile = mask_split(read_decathlon(ct, intensity=Intensity.PERCENTILE), "train").images
    assert percentile.min() == 0.0 and percentile.max() == 1.0


def test_index_and_modality_errors(tmp_path: Path) -> None:
    folder = synthetic_decathlon(tmp_path / "d")
    spec = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({k: v for k, v in spec.items() if k != "labels"}))
    with pytest.raises(DataError, match="lacks labels"):
        read_decathlon_index(folder)
    (folder / "dataset.json").write_text(json.dumps(spec | {"labels": {"0": "background", "2": "x"}}))
    with pytest.raises(DataError, match=r"0\.\.K-1"):
        read_decathlon_index(folder)
    with pytest.raises(DataError, match="channels"):
        parse_modality({"0": "FLAIR", "1": "T1w"})
    assert [parse_modality(v) for v in ({"0": "MRI"}, "T2", "CT", "us", "PET")] == [
        Modality.MR,
        Modality.MR,
        Modality.CT,
        Modality.US,
        Modality.OT,
    ]
    with pytest.raises(DataError, match="no usable case"):
        read_decathlon(synthetic_decathlon(tmp_path / "empty"))


def test_splits_file_rows_that_cannot_be_used_are_problems(tmp_path: Path) -> None:
    folder = decathlon_subset(tmp_path / "hippo", ("hippocampus_001", "hippocampus_003"), splits=False)
    (folder / "splits.csv").write_text("case,split\nhippocampus_001,test\nhippocampus_003,later\nghost,train\n")
    index = read_decathlon_index(folder)
    assert [(c.case, c.split) for c in index.cases] == [("hippocampus_001", "test")]
    assert {p.file: p.reason for p in index.problems} == {
        "splits.csv:3": Reason.BAD_MANIFEST_ROW,
        "splits.csv:ghost": Reason.MISSING_FILE,
    }


@pytest.mark.slow
def test_all_hippocampus_volumes() -> None:
    from fixtures.seg_folders import HIPPOCAMPUS

    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.skip("Hippocampus not found")
    read = read_decathlon(HIPPOCAMPUS)
    assert not read.problems and {s: len(v) for s, v in read.splits.items()} == {"train": 180, "val": 20, "test": 40}
