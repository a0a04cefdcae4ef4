"""DICOM SEG label maps: write_seg, then read_seg and plain highdicom read them back; misfits are refused."""

from __future__ import annotations

import os
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from fedward.common.data.dicom import Reason, UnusableFileError
from fedward.common.data.seg import find_seg_for, read_seg, source_datasets, write_seg
from fedward.common.data.series import SeriesVolume, read_series, scan_series
from fedward.common.data.series_write import write_series

LABELS = ("background", "liver", "kidney", "tumour")
REAL_CT = Path(os.path.dirname(pydicom.data.__file__)) / "test_files" / "dicomdirtests" / "98892001" / "CT5N"


def series(folder: Path, shape: tuple[int, int, int] = (5, 6, 7)) -> SeriesVolume:
    volume = np.random.default_rng(0).integers(-100, 100, size=shape).astype(np.int16)
    return read_series(write_series(volume, (2.5, 0.7, 0.8), folder, patient_id="H0-00001"))


def label_map(shape: tuple[int, int, int] = (5, 6, 7)) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    out[1:4, 1:4, 2:6] = 1
    out[2, 2:4, 3:5] = 3
    out[4, 0, 0] = 1  # the last slice holds a voxel too
    return out  # no kidney (2) anywhere


def test_a_written_seg_reads_back_with_read_seg_and_highdicom(tmp_path: Path) -> None:
    volume = series(tmp_path / "ct")
    labels = label_map()
    path = write_seg(labels, source_datasets(volume), LABELS, tmp_path / "seg" / "labels.dcm", algorithm_version="1.0")
    assert np.array_equal(read_seg(path, volume, LABELS), labels)
    seg = hd.seg.segread(path)
    assert seg.segment_numbers == [1, 2, 3] and seg.SegmentationType == "BINARY"
    assert [seg.get_segment_description(n).SegmentLabel for n in (1, 2, 3)] == list(LABELS[1:])
    assert seg.get_segment_description(3).segmented_property_type == codes.SCT.Lesion
    assert seg.get_segment_description(1).segmented_property_category == codes.SCT.Tissue
    assert seg.get_segment_description(1).SegmentAlgorithmName == "fedward"
    plain = seg.get_pixels_by_source_instance(
        list(volume.sop_instance_uids), combine_segments=True, assert_missing_frames_are_empty=True
    )
    assert np.array_equal(plain, labels)
    assert {s for _, s, _ in seg.get_source_image_uids()} == {volume.series_uid}
    assert seg.PatientID == "H0-00001" and seg.StudyInstanceUID == pydicom.dcmread(volume.files[0]).StudyInstanceUID


def test_segments_go_to_labels_by_name_then_by_number(tmp_path: Path) -> None:
    volume = series(tmp_path / "ct")
    path = write_seg(label_map(), source_datasets(volume), LABELS, tmp_path / "seg.dcm")
    renamed = ("bg", "TUMOUR", "spleen", "Liver")  # liver -> 3, tumour -> 1, kidney (no name) -> its number 2
    expected = np.choose(label_map(), [0, 3, 2, 1]).astype(np.uint8)
    assert np.array_equal(read_seg(path, volume, renamed), expected)
    with pytest.raises(UnusableFileError) as err:
        read_seg(path, volume, ("background", "liver"))  # kidney: segment 2 matches nothing
    assert err.value.reason is Reason.LABEL_OUT_OF_RANGE


def test_a_seg_of_another_series_is_refused(tmp_path: Path) -> None:
    volume = series(tmp_path / "a")
    other = series(tmp_path / "b")
    path = write_seg(label_map(), source_datasets(other), LABELS, tmp_path / "seg.dcm")
    with pytest.raises(UnusableFileError) as err:
        read_seg(path, volume, LABELS, root=tmp_path)
    assert err.value.reason is Reason.SEG_OTHER_SERIES
    assert "seg.dcm" in str(err.value) and volume.series_uid not in str(err.value)


def test_frames_on_slices_missing_from_the_series_are_refused(tmp_path: Path) -> None:
    volume = series(tmp_path / "ct")
    path = write_seg(label_map(), source_datasets(volume), LABELS, tmp_path / "seg.dcm")
    shorter = read_series(list(volume.files[:-1]))  # still evenly spaced, one slice fewer
    with pytest.raises(UnusableFileError, match="not in the series") as err:
        read_seg(path, shorter, LABELS)
    assert err.value.reason is Reason.MASK_MISMATCH


def test_frames_away_from_their_slices_are_refused(tmp_path: Path) -> None:
    volume = series(tmp_path / "ct")
    path = write_seg(label_map(), source_datasets(volume), LABELS, tmp_path / "seg.dcm")
    ds = pydicom.dcmread(path)
    ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient = [0.0, 0.0, 100.0]
    ds.save_as(path)
    with pytest.raises(UnusableFileError, match="position") as err:
        read_seg(path, volume, LABELS)
    assert err.value.reason is Reason.MASK_MISMATCH


def test_write_seg_refuses_label_maps_that_do_not_fit(tmp_path: Path) -> None:
    volume = series(tmp_path / "ct")
    sources = source_datasets(volume)
    with pytest.raises(UnusableFileError) as err:
        write_seg(label_map()[:4], sources, LABELS, tmp_path / "a.dcm")
    assert err.value.reason is Reason.MASK_MISMATCH
    with pytest.raises(UnusableFileError) as err:
        write_seg(label_map() * 2, sources, LABELS, tmp_path / "b.dcm")
    assert err.value.reason is Reason.LABEL_OUT_OF_RANGE


def test_manual_reference_labels_carry_no_algorithm(tmp_path: Path) -> None:
    volume = series(tmp_path / "ct")
    path = write_seg(label_map(), source_datasets(volume), LABELS, tmp_path / "s.dcm", algorithm_type="MANUAL")
    description = hd.seg.segread(path).get_segment_description(1)
    assert description.SegmentAlgorithmType == "MANUAL" and "SegmentAlgorithmName" not in description


def test_overlapping_segments_give_the_higher_label(tmp_path: Path) -> None:
    volume = series(tmp_path / "ct")
    stacked = np.zeros((*volume.array.shape, 2), np.uint8)
    stacked[1:3, 1:5, 1:5, 0] = 1  # organ
    stacked[2, 2:4, 2:4, 1] = 1  # lesion inside it
    algorithm = hd.AlgorithmIdentificationSequence("other", codes.cid7162.ArtificialIntelligence, "1")
    descriptions = [
        hd.seg.SegmentDescription(n, name, codes.SCT.Tissue, codes.SCT.Tissue, "AUTOMATIC", algorithm)
        for n, name in ((1, "liver"), (2, "tumour"))
    ]
    seg = hd.seg.Segmentation(
        source_datasets(volume), stacked, "BINARY", descriptions, hd.UID(), 1, hd.UID(), 1, "x", "x", "1", "1"
    )
    seg.save_as(tmp_path / "overlap.dcm")
    read = read_seg(tmp_path / "overlap.dcm", volume, LABELS)
    assert np.array_equal(read == 3, stacked[..., 1] == 1)
    assert np.array_equal(read == 1, (stacked[..., 0] == 1) & (stacked[..., 1] == 0))


def test_scan_pairs_segs_with_their_series(tmp_path: Path) -> None:
    volume = series(tmp_path / "patient" / "ct")
    other = series(tmp_path / "patient" / "mr")
    mine = write_seg(label_map(), source_datasets(volume), LABELS, tmp_path / "patient" / "seg" / "a.dcm")
    stray = series(tmp_path / "elsewhere")
    orphan = write_seg(label_map(), source_datasets(stray), LABELS, tmp_path / "patient" / "seg" / "b.dcm")
    scan = scan_series(tmp_path / "patient")
    assert set(scan.series) == {volume.series_uid, other.series_uid}
    assert find_seg_for(scan, volume) == [mine] and find_seg_for(scan, other.series_uid) == []
    assert [(p.file, p.reason) for p in scan.problems] == [("seg/b.dcm", Reason.SEG_OTHER_SERIES)]
    assert orphan.is_file()


def test_a_seg_on_a_real_ct_series(tmp_path: Path) -> None:
    volume = read_series(sorted(REAL_CT.iterdir()))
    labels = (volume.array > -200).astype(np.uint8)
    path = write_seg(labels, source_datasets(volume), ("background", "body"), tmp_path / "body.dcm")
    assert np.array_equal(read_seg(path, volume, ("background", "body")), labels)


@pytest.mark.parametrize("kind", ["LABELMAP", "FRACTIONAL"])
def test_labelmap_and_fractional_segs_are_read(tmp_path: Path, kind: str) -> None:
    volume = series(tmp_path / "ct")
    labels = label_map()
    algorithm = hd.AlgorithmIdentificationSequence("other", codes.cid7162.ArtificialIntelligence, "1")
    descriptions = [
        hd.seg.SegmentDescription(n, name, codes.SCT.Tissue, codes.SCT.Tissue, "AUTOMATIC", algorithm)
        for n, name in enumerate(LABELS[1:], start=1)
    ]
    fractions = np.stack([(labels == n) * (0.3 if n == 3 else 0.7) for n in (1, 2, 3)], -1)  # tumour below 0.5
    pixels = labels if kind == "LABELMAP" else fractions.astype(np.float32)
    seg = hd.seg.Segmentation(
        source_datasets(volume), pixels, kind, descriptions, hd.UID(), 1, hd.UID(), 1, "x", "x", "1", "1"
    )
    seg.save_as(tmp_path / "seg.dcm")
    expected = labels if kind == "LABELMAP" else np.where(labels == 3, 0, labels).astype(np.uint8)
    assert np.array_equal(read_seg(tmp_path / "seg.dcm", volume, LABELS), expected)


def test_a_file_that_is_not_a_seg_is_refused(tmp_path: Path) -> None:
    volume = series(tmp_path / "ct")
    with pytest.raises(UnusableFileError, match="not a DICOM SEG") as err:
        read_seg(volume.files[0], volume, LABELS, root=tmp_path)
    assert err.value.reason is Reason.UNSUPPORTED_IMAGE and "ct/slice-0001.dcm" in str(err.value)
