"""Segmentation prediction: PNG masks at the image's size, NIfTI label maps on the input's voxels, DICOM SEG."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from fixtures.dicom_folders import PHI
from fixtures.model_dirs import Threshold, write_seg_run
from fixtures.seg_folders import BUSI, HIPPOCAMPUS
from PIL import Image
from typer.testing import CliRunner

from fedward.client.evaluator.loaded_model import LoadedModel, load_model
from fedward.client.evaluator.seg_predict import predict_segmentations, series_label_map
from fedward.client.evaluator.segmenter import segmenter_for
from fedward.common.choices import Intensity
from fedward.common.data.intensity import normalise_intensity
from fedward.common.data.series import read_series, scan_series
from fedward.common.data.series_write import write_series

BUSI_FILES = ("benign/benign (4).png", "benign/benign (13).png")  # grey, and RGB with a colour overlay
HIPPOCAMPUS_FILE = "imagesTr/hippocampus_001.nii.gz"


def _copy(source: Path, relative: str, dest: Path) -> Path:
    if not (source / relative).is_file():
        pytest.skip(f"{source / relative} not found")
    dest.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(source / relative, dest / Path(relative).name))


def _levels_volume(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """int16 blocks of intensities 0, 100, 200 and 300 (their z-scores lie far apart)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, size=tuple(max(1, s // 4) for s in shape))
    volume = np.kron(coarse, np.ones((4, 4, 4), dtype=np.int64))[: shape[0], : shape[1], : shape[2]]
    return np.pad(volume, [(0, s - v) for s, v in zip(shape, volume.shape, strict=True)]).astype(np.int16) * 100


def _threshold_model(model: LoadedModel, volume: np.ndarray) -> tuple[LoadedModel, np.ndarray]:
    """A copy of ``model`` whose network thresholds the z-scored input, and the label map it must give ``volume``."""
    normalised = normalise_intensity(volume[None].astype(np.float32), Intensity.ZSCORE, nonzero=True)[0]
    levels = np.unique(normalised[volume > 0])
    low, high = (levels[0] + levels[1]) / 2, (levels[1] + levels[2]) / 2
    fresh = load_model(model.model_dir)
    fresh.network = Threshold(float(low), float(high))
    return fresh, ((normalised > low).astype(np.uint8) + (normalised > high)).astype(np.uint8)


def test_png_masks_have_the_input_images_size(seg2d: LoadedModel, tmp_path: Path) -> None:
    files = [_copy(BUSI, name, tmp_path / "in") for name in BUSI_FILES]
    report = predict_segmentations(seg2d, [*files, tmp_path / "in" / "missing.png"], tmp_path / "out")
    assert [c.input for c in report.cases] == [str(f) for f in [*files, tmp_path / "in" / "missing.png"]]
    for case, source in zip(report.cases[:2], files, strict=True):
        assert case.output == tmp_path / "out" / f"{source.stem}_seg.png" and case.format == "png"
        mask = Image.open(case.output)
        assert mask.size == Image.open(source).size and mask.mode == "L"
        pixels = np.asarray(mask)
        assert set(np.unique(pixels)) <= {0, 1}
        assert case.unit == "pixels" and case.volumes == {"lesion": float((pixels == 1).sum())}
    assert [(c.reason, c.output) for c in report.failed] == [("unreadable", None)]


def test_nifti_label_map_has_the_inputs_affine_and_shape(seg3d: LoadedModel, tmp_path: Path) -> None:
    source = _copy(HIPPOCAMPUS, HIPPOCAMPUS_FILE, tmp_path / "in")
    (case,) = predict_segmentations(seg3d, [source], tmp_path / "out").cases
    assert case.output == tmp_path / "out" / "hippocampus_001_seg.nii.gz" and case.format == "nifti"
    written, original = nib.load(case.output), nib.load(source)
    assert written.shape == original.shape
    np.testing.assert_array_equal(written.affine, original.affine)
    labels = np.asarray(written.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    voxel = float(abs(np.linalg.det(original.affine[:3, :3])))
    assert case.unit == "mm3"
    assert case.volumes == {"anterior": (labels == 1).sum() * voxel, "posterior": (labels == 2).sum() * voxel}


def test_nifti_label_map_lies_on_the_inputs_voxels(seg3d: LoadedModel, tmp_path: Path) -> None:
    """Permuted, flipped, anisotropic axes and one axis longer than the grid (sliding windows) come back in place."""
    volume = _levels_volume((30, 70, 20), seed=0)
    affine = np.array([[0.0, 0.0, -1.5, 20.0], [1.2, 0.0, 0.0, -7.0], [0.0, -0.8, 0.0, 3.0], [0.0, 0.0, 0.0, 1.0]])
    path = tmp_path / "in" / "case.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(volume, affine), path)
    model, expected = _threshold_model(seg3d, volume)
    (case,) = predict_segmentations(model, [path], tmp_path / "out").cases
    written = nib.load(case.output)
    np.testing.assert_array_equal(written.affine, nib.load(path).affine)  # the file's (float32) affine
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected)
    assert (expected == 1).any() and (expected == 2).any()


def test_resampled_and_grid_free_models_come_back_to_the_inputs_voxels(tmp_path: Path) -> None:
    """data.spacing (the probabilities resampled back) and no data.volume-size (padding to a multiple of 16)."""
    volume = _levels_volume((40, 36, 24), seed=3)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    path = tmp_path / "in" / "case.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(volume, affine), path)
    for name, settings in (("resampled", {"spacing": (1.5, 1.5, 1.5)}), ("free", {"volume_size": ()})):
        model, expected = _threshold_model(
            load_model(write_seg_run(tmp_path / name, spatial_dims=3, **settings)), volume
        )
        (case,) = predict_segmentations(model, [path], tmp_path / f"out-{name}").cases
        written = nib.load(case.output)
        assert written.shape == volume.shape
        np.testing.assert_array_equal(written.affine, nib.load(path).affine)
        labels = np.asarray(written.dataobj)
        if name == "free":
            np.testing.assert_array_equal(labels, expected)
            continue
        agreement = float((labels == expected).mean())  # resampling twice blurs the blocks' edges
        shifted = [float((np.roll(labels, s, axis=a) == expected).mean()) for a in range(3) for s in (-1, 1)]
        assert agreement > 0.75 and agreement > max(shifted) + 0.03, (agreement, shifted)  # in place, not shifted


def test_dicom_seg_reads_back_as_the_predicted_label_map(seg3d: LoadedModel, tmp_path: Path) -> None:
    volume = _levels_volume((12, 40, 36), seed=1)
    write_series(volume, (2.5, 0.9, 0.9), tmp_path / "series", patient_id="T-1")
    model, expected = _threshold_model(seg3d, volume)
    (case,) = predict_segmentations(model, [tmp_path / "series"], tmp_path / "out").cases
    assert case.output == tmp_path / "out" / "series_seg.dcm" and case.format == "dicom-seg"
    (files,) = scan_series(tmp_path / "series").series.values()
    series = read_series(files)
    predicted = series_label_map(segmenter_for(model), series, model.model_dir)
    np.testing.assert_array_equal(predicted, expected)  # on the series' own slices, rows and columns
    seg = hd.seg.segread(case.output)
    assert str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID) == series.series_uid
    back = seg.get_pixels_by_source_instance(
        list(series.sop_instance_uids), segment_numbers=[1, 2], combine_segments=True, dtype=np.uint8
    )
    np.testing.assert_array_equal(back, predicted)
    assert case.volumes["anterior"] == pytest.approx((predicted == 1).sum() * 2.5 * 0.9 * 0.9)


def test_cli_predict_prints_outputs_and_volumes_but_no_patient_data(
    seg2d: LoadedModel, seg3d: LoadedModel, tmp_path: Path
) -> None:
    from fedward.cli.main import app

    runner = CliRunner()
    image = _copy(BUSI, BUSI_FILES[0], tmp_path / "images")
    out = tmp_path / "masks"
    result = runner.invoke(app, ["predict", str(seg2d.model_dir.path), str(image), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["predictions"]
    assert row["output"] == str(out / "benign (4)_seg.png") and set(row["volumes"]) == {"lesion"}
    write_series(
        _levels_volume((6, 32, 32), seed=2),
        (3.0, 1.0, 1.0),
        tmp_path / "study",
        patient_id=PHI["PatientID"],
        patient_name=PHI["PatientName"],
    )
    inputs = [str(tmp_path / "study"), str(tmp_path / "x.txt")]
    result = runner.invoke(app, ["predict", str(seg3d.model_dir.path), *inputs])
    assert result.exit_code == 1  # x.txt is neither NIfTI nor a series folder
    assert "study_seg.dcm" in result.output and "anterior" in result.output and "mm3" in result.output
    assert (seg3d.model_dir.path / "predictions" / "study_seg.dcm").is_file()
    assert not any(value in result.output for value in PHI.values())
