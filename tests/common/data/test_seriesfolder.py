"""DICOM series + SEG folders: same arrays as the NIfTI they came from, label names, modality, bad cases as problems."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from fixtures.seg_folders import decathlon_subset
from fixtures.seg_series import MESSY_PROBLEMS, export_case, messy_series_folder

from fedward.common.choices import Intensity, Modality, Task
from fedward.common.data.decathlon import read_decathlon
from fedward.common.data.dicom import Reason
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.seg import source_datasets, write_seg
from fedward.common.data.series import read_series, scan_series
from fedward.common.data.series_write import write_series
from fedward.common.data.seriesfolder import holds_dicom_seg, read_series_folder, seg_label_names
from fedward.common.data.volumeprep import NoUsableCaseError
from fedward.common.errors import DataError

ROUND_TRIP_CASES = ("hippocampus_001", "hippocampus_003", "hippocampus_007")
"""A uint8 case (stored exactly) and two float32 cases (quantised to 16 bits in DICOM)."""


def train(read: object) -> MaskSplit:
    split = read.splits["train"]  # type: ignore[attr-defined]
    assert isinstance(split, MaskSplit)
    return split


def test_a_nifti_volume_exported_to_dicom_reads_back_as_the_nifti_read(tmp_path: Path) -> None:
    nifti = decathlon_subset(tmp_path / "nifti", ROUND_TRIP_CASES, splits=False)
    for number, case in enumerate(ROUND_TRIP_CASES):
        export_case(case, tmp_path / "dicom" / case, patient_id=f"H0-{number:05d}")
    expected, got = read_decathlon(nifti), read_series_folder(tmp_path / "dicom")
    assert got.schema == expected.schema and got.schema.modality is Modality.MR and not got.problems
    assert list(got.splits) == ["train"]
    nifti_split, dicom_split = train(expected), train(got)
    assert dicom_split.images.shape == nifti_split.images.shape
    np.testing.assert_array_equal(dicom_split.masks, nifti_split.masks)
    np.testing.assert_array_equal(dicom_split.spacing, nifti_split.spacing)
    for k, case in enumerate(ROUND_TRIP_CASES):
        want, have = nifti_split.images[k], dicom_split.images[k]
        # Float volumes are stored as int16 with one Rescale Slope: each value moves by at most half a
        # slope, and a voxel that was exactly 0 (kept at 0 by the MR z-score over non-zero voxels)
        # comes back a hair off 0, so it counts in the statistics: z-scores agree to 1e-3 relative.
        close = np.abs(have - want) <= 1e-3 * (1 + np.abs(want))
        raw_zeros = int(np.count_nonzero(np.asanyarray(nib.load(nifti / "imagesTr" / f"{case}.nii.gz").dataobj) == 0))
        assert np.all(close | (want == 0))
        assert np.count_nonzero(~close) <= raw_zeros
    assert np.array_equal(dicom_split.images[0], nifti_split.images[0])  # uint8 values are stored exactly


@pytest.fixture(scope="module")
def messy_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return messy_series_folder(tmp_path_factory.mktemp("pacs"))


def test_bad_cases_are_problems_and_the_good_ones_are_read(messy_series: Path) -> None:
    read = read_series_folder(messy_series, volume_size=(48, 64, 48))
    assert {p.file: p.reason for p in read.problems} == MESSY_PROBLEMS
    assert read.schema.classes == ("background", "anterior", "posterior")  # the stray segments 3..7 are outvoted
    split = train(read)
    assert split.images.shape == (2, 1, 48, 64, 48) and set(np.unique(split.masks)) == {0, 1, 2}
    messages = " ".join(p.message for p in read.problems)
    assert "slice-0009.dcm" in messages and "slice-0011.dcm" in messages
    uids: set[str] = set()
    for path in messy_series.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uids |= {str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)}
    assert not any(uid in messages for uid in uids)  # UIDs identify patients: never in a message


def test_given_label_names_set_the_label_order(messy_series: Path) -> None:
    derived = train(read_series_folder(messy_series))
    swapped_read = read_series_folder(messy_series, label_names=("Background", "Posterior", "Anterior"))
    assert swapped_read.schema.classes == ("background", "posterior", "anterior")
    np.testing.assert_array_equal(train(swapped_read).masks, np.choose(derived.masks, [0, 2, 1]))
    with pytest.raises(DataError, match="two label names"):
        read_series_folder(messy_series, label_names=("background",))


def synthetic_ct(folder: Path, patient_id: str, shape: tuple[int, int, int] = (6, 16, 16)) -> tuple[Path, np.ndarray]:
    """A CT series of ``shape`` (air and 1000 HU) in ``folder``; its files' folder and a label map."""
    hu = np.full(shape, -1000, np.int16)
    hu[:, 4:12, 4:12] = 1000
    labels = np.zeros(shape, np.uint8)
    labels[2:4, 5:9, 5:9] = 1
    write_series(hu, (2.0, 0.8, 0.8), folder, patient_id=patient_id, modality="CT")
    return folder, labels


def test_ct_series_are_windowed_and_labels_named_by_their_segments(tmp_path: Path) -> None:
    series_dir, labels = synthetic_ct(tmp_path / "ct" / "a", "H1-00001")
    volume = read_series(sorted(series_dir.iterdir()))
    write_seg(labels, source_datasets(volume), ("background", "Liver"), tmp_path / "ct" / "a.seg.dcm")
    read = read_series_folder(tmp_path / "ct", ct_window=(-1000.0, 1000.0))
    assert read.schema.modality is Modality.CT and read.schema.classes == ("background", "liver")
    assert read.schema.task is Task.SEGMENTATION and read.schema.spatial_dims == 3
    images = train(read).images
    assert images.shape == (1, 1, 16, 16, 16) and set(np.unique(images)) <= {0.0, 1.0}
    np.testing.assert_allclose(train(read).spacing, [[0.8, 0.8, 2.0]])  # RAS order: x (columns), y (rows), z
    percentile = train(read_series_folder(tmp_path / "ct", intensity=Intensity.PERCENTILE)).images
    assert percentile.max() == 1.0


def test_mixed_series_several_segs_and_no_seg(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    for name in ("a", "b", "c"):
        synthetic_ct(tmp_path / "parts" / name, f"H1-{name}")
    folder.mkdir()
    for name in ("a", "b"):
        for path in sorted((tmp_path / "parts" / name).iterdir()):
            shutil.copyfile(path, folder / f"{name}-{path.name}")
    shutil.copytree(tmp_path / "parts" / "c", folder / "c")
    _, labels = synthetic_ct(tmp_path / "unused", "H1-x")
    names = ("background", "liver")
    volume_a = read_series(sorted(folder.glob("a-*.dcm")))
    volume_c = read_series(sorted((folder / "c").iterdir()))
    write_seg(labels, source_datasets(volume_a), names, folder / "segs" / "a.dcm")
    for k in (1, 2):
        write_seg(labels, source_datasets(volume_c), names, folder / "segs" / f"c-{k}.dcm")
    assert holds_dicom_seg(folder) and not holds_dicom_seg(tmp_path / "parts")
    assert seg_label_names(scan_series(folder)) == names
    read = read_series_folder(folder)
    by_file = {p.file: p for p in read.problems}
    assert {f: p.reason for f, p in by_file.items()} == {
        "b-slice-0001.dcm": Reason.MASK_MISSING,  # shares its folder with series a: named by its first file
        "c": Reason.UNSUPPORTED_IMAGE,
    }
    assert "segs/c-1.dcm" in by_file["c"].message and len(train(read)) == 1


def test_a_folder_without_a_usable_case_lists_why(tmp_path: Path) -> None:
    synthetic_ct(tmp_path / "ct" / "a", "H1-00001")
    with pytest.raises(NoUsableCaseError) as err:
        read_series_folder(tmp_path / "ct")
    assert [(p.file, p.reason) for p in err.value.problems] == [("a", Reason.MASK_MISSING)]
    with pytest.raises(DataError, match="does not exist"):
        read_series_folder(tmp_path / "absent")
