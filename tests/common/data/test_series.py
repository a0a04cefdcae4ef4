"""DICOM series as volumes: written by write_series, read back in any file order, refused when slices are wrong."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from fedward.common.data.dicom import Reason, UnusableFileError
from fedward.common.data.series import nifti_layout, ras_affine, read_series, scan_series
from fedward.common.data.series_write import volume_from_nifti, write_series

DICOMDIR_TESTS = Path(os.path.dirname(pydicom.data.__file__)) / "test_files" / "dicomdirtests"
SPACING = (2.5, 0.7, 0.8)


def synthetic(shape: tuple[int, int, int] = (6, 5, 7), seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=shape) * 300.0).astype(np.float32)


def test_a_written_series_reads_back_in_any_file_order(tmp_path: Path) -> None:
    volume = synthetic()
    files = write_series(volume, SPACING, tmp_path / "series", patient_id="H0-00001", origin=(-10.0, 20.0, 30.0))
    random.Random(1).shuffle(files)
    read = read_series(files)
    slope = float(pydicom.dcmread(files[0]).RescaleSlope)
    assert read.array.dtype == np.float32 and read.array.shape == volume.shape
    assert np.max(np.abs(read.array - volume)) <= slope / 2 + 1e-4
    assert read.spacing == pytest.approx(SPACING)
    expected = np.array([[0, 0, 0.8, -10], [0, 0.7, 0, 20], [2.5, 0, 0, 30], [0, 0, 0, 1]])
    np.testing.assert_allclose(read.affine, expected, atol=1e-6)
    assert read.modality == "MR" and read.frame_of_reference_uid
    assert [p.name for p in read.files] == [f"slice-{k:04d}.dcm" for k in range(1, 7)]
    assert read.sop_instance_uids == tuple(str(pydicom.dcmread(p).SOPInstanceUID) for p in read.files)
    np.testing.assert_allclose(read.slice_positions()[:, 2], 30 + 2.5 * np.arange(6), atol=1e-6)
    np.testing.assert_allclose(read.orientation(), [1, 0, 0, 0, 1, 0])


def test_integer_ct_values_are_stored_exactly_as_hu(tmp_path: Path) -> None:
    volume = np.arange(4 * 3 * 5, dtype=np.int16).reshape(4, 3, 5) * 50 - 1024
    files = write_series(volume, (1.25, 0.5, 0.5), tmp_path / "ct", patient_id="H1-00001", modality="CT")
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)
    assert str(ds.PatientName).startswith("SYNTHETIC^") and ds.PatientBirthDate == ""
    read = read_series(files)
    assert np.array_equal(read.array, volume.astype(np.float32)) and read.modality == "CT"


def test_write_series_refuses_a_non_empty_folder_and_bad_input(tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x.txt").write_text("x")
    from fedward.common.errors import DataError

    with pytest.raises(DataError, match="not empty"):
        write_series(synthetic(), SPACING, tmp_path / "used", patient_id="p")
    with pytest.raises(DataError, match="spacing"):
        write_series(synthetic(), (1.0, 0.0, 1.0), tmp_path / "a", patient_id="p")
    with pytest.raises(DataError, match="modality"):
        write_series(synthetic(), SPACING, tmp_path / "b", patient_id="p", modality="US")
    with pytest.raises(DataError, match="NaN"):
        write_series(np.full((2, 2, 2), np.nan), SPACING, tmp_path / "c", patient_id="p")


def test_a_missing_middle_slice_is_refused_naming_the_files(tmp_path: Path) -> None:
    files = write_series(synthetic(), SPACING, tmp_path / "patient" / "series", patient_id="H0-00002")
    files[3].unlink()
    with pytest.raises(UnusableFileError) as err:
        read_series(files[:3] + files[4:], root=tmp_path)
    assert err.value.reason is Reason.SLICE_SPACING
    assert "patient/series/slice-0003.dcm" in str(err.value) and "patient/series/slice-0005.dcm" in str(err.value)
    uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    assert uid not in str(err.value)


def test_two_images_at_one_position_are_refused(tmp_path: Path) -> None:
    files = write_series(synthetic(), SPACING, tmp_path / "s", patient_id="p")
    twin = pydicom.dcmread(files[2])
    twin.SOPInstanceUID = pydicom.uid.generate_uid()
    twin.save_as(tmp_path / "s" / "echo2.dcm")
    with pytest.raises(UnusableFileError, match="same position") as err:
        read_series([*files, tmp_path / "s" / "echo2.dcm"])
    assert err.value.reason is Reason.SLICE_SPACING


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("ImageOrientationPatient", [0, 1, 0, 0, 0, -1], "orientation differs"),
        ("PixelSpacing", [0.9, 0.8], "Pixel Spacing differs"),
        ("ImagePositionPatient", [5.0, 0.0, 5.0], "drift in-plane"),
    ],
)
def test_slices_that_disagree_are_refused(tmp_path: Path, keyword: str, value: list[float], message: str) -> None:
    files = write_series(synthetic(), SPACING, tmp_path / "s", patient_id="p")
    ds = pydicom.dcmread(files[2])
    setattr(ds, keyword, value)
    ds.save_as(files[2])
    with pytest.raises(UnusableFileError, match=message) as err:
        read_series(files)
    assert err.value.reason is Reason.UNSUPPORTED_IMAGE


def test_slices_of_other_sizes_or_series_are_refused(tmp_path: Path) -> None:
    files = write_series(synthetic(), SPACING, tmp_path / "a", patient_id="p")
    smaller = write_series(synthetic((6, 4, 7)), SPACING, tmp_path / "b", patient_id="p")
    same_uid = pydicom.dcmread(smaller[0])
    same_uid.SeriesInstanceUID = pydicom.dcmread(files[0]).SeriesInstanceUID
    same_uid.ImagePositionPatient = [0, 0, 15.0]
    same_uid.save_as(tmp_path / "b" / "extra.dcm")
    with pytest.raises(UnusableFileError, match="Rows x Columns"):
        read_series([*files, tmp_path / "b" / "extra.dcm"])
    with pytest.raises(UnusableFileError, match="another series"):
        read_series([*files, smaller[1]])


def test_scan_groups_files_by_series_and_sets_the_rest_aside(tmp_path: Path) -> None:
    first = write_series(synthetic(), SPACING, tmp_path / "p1" / "a", patient_id="p")
    second = write_series(synthetic((3, 4, 4)), SPACING, tmp_path / "p2" / "b", patient_id="q")
    (tmp_path / "README.txt").write_text("not DICOM")
    (tmp_path / "p1" / "photo.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden").write_text("skipped")
    scan = scan_series(tmp_path)
    assert sorted(map(sorted, scan.series.values())) == sorted([sorted(first), sorted(second)])
    assert {(p.file, p.reason) for p in scan.problems} == {
        ("README.txt", Reason.NOT_DICOM),
        ("p1/photo.png", Reason.NOT_DICOM),
    }
    assert scan.segs == []


def test_real_ct_series_reads_in_position_order_with_hu() -> None:
    folder = DICOMDIR_TESTS / "98892001" / "CT5N"
    files = sorted(folder.iterdir())
    read = read_series(files)
    datasets = [pydicom.dcmread(p) for p in read.files]
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert read.array.shape == (5, 16, 16) and z == sorted(z)
    assert read.spacing == pytest.approx((2.5, 0.488281, 0.488281))
    for plane, ds in zip(read.array, datasets, strict=True):
        expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(plane, expected.astype(np.float32))
    assert read.array.min() < -500  # air in HU, not stored values


@pytest.mark.parametrize(
    ("folder", "reason"),
    [
        ("77654033/CT2", Reason.SLICE_SPACING),  # a 200 mm gap between the first slice and the rest
        ("98892003/MR700", Reason.UNSUPPORTED_IMAGE),  # radial slices: orientations differ
        ("77654033/CR1", Reason.UNSUPPORTED_IMAGE),  # a radiograph: no Image Plane module
    ],
)
def test_real_series_that_are_not_volumes_are_refused(folder: str, reason: Reason) -> None:
    with pytest.raises(UnusableFileError) as err:
        read_series(sorted((DICOMDIR_TESTS / folder).iterdir()), root=DICOMDIR_TESTS)
    assert err.value.reason is reason
    assert folder.split("/")[0] in str(err.value)


def test_a_real_single_ct_slice_is_a_one_slice_volume_in_hu() -> None:
    path = Path(get_testdata_file("CT_small.dcm"))
    ds = pydicom.dcmread(path)
    read = read_series([path])
    assert read.array.shape == (1, 128, 128)
    np.testing.assert_array_equal(read.array[0], (ds.pixel_array * 1.0 + float(ds.RescaleIntercept)).astype(np.float32))
    assert read.spacing == pytest.approx((float(ds.SliceThickness), *map(float, ds.PixelSpacing)))
    np.testing.assert_allclose(read.affine[:3, 3], [float(v) for v in ds.ImagePositionPatient])


def test_nifti_layout_is_ras_and_volume_from_nifti_undoes_it(tmp_path: Path) -> None:
    volume = np.arange(4 * 3 * 5, dtype=np.int16).reshape(4, 3, 5)
    read = read_series(write_series(volume, SPACING, tmp_path / "s", patient_id="p", origin=(1.0, 2.0, 3.0)))
    array, affine = nifti_layout(read)
    assert array.shape == (5, 3, 4) and nib.aff2axcodes(affine) == ("L", "P", "S")
    np.testing.assert_allclose(ras_affine(read.affine) @ [1, 2, 3, 1], affine @ [3, 2, 1, 1])
    back, spacing, origin = volume_from_nifti(array, affine)
    assert np.array_equal(back, volume) and spacing == pytest.approx(SPACING) and origin == pytest.approx((1, 2, 3))


def test_a_ras_nifti_written_as_dicom_keeps_its_voxels_in_place(tmp_path: Path) -> None:
    data = np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3)
    original = nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0]) + np.array([[0, 0, 0, 7.0]] * 3 + [[0] * 4]))
    volume, spacing, origin = volume_from_nifti(np.asanyarray(original.dataobj), original.affine)
    assert volume.shape == (3, 4, 5) and spacing == pytest.approx((4, 3, 2))
    read = read_series(write_series(volume, spacing, tmp_path / "s", patient_id="p", origin=origin))
    round_trip = nib.as_closest_canonical(nib.Nifti1Image(*nifti_layout(read)))
    canonical = nib.as_closest_canonical(original)
    np.testing.assert_array_equal(round_trip.get_fdata(), canonical.get_fdata())
    np.testing.assert_allclose(round_trip.affine, canonical.affine, atol=1e-6)


def test_a_copied_folder_keeps_relative_names(tmp_path: Path) -> None:
    files = write_series(synthetic(), SPACING, tmp_path / "src", patient_id="p")
    shutil.copytree(tmp_path / "src", tmp_path / "copy")
    scan = scan_series(tmp_path)
    assert len(scan.series) == 1 and len(next(iter(scan.series.values()))) == 2 * len(files)
    with pytest.raises(UnusableFileError, match="same position") as err:
        read_series(next(iter(scan.series.values())), root=scan.folder)
    assert "copy/slice-0001.dcm" in str(err.value) and "src/slice-0001.dcm" in str(err.value)
