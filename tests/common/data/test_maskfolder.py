"""Image + mask folders (BUSI layout): scanning, masks merged, problems, segmentation and classification reads."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from fixtures.seg_folders import BUSI_CASES, busi_subset, write_png
from PIL import Image

from fedward.common.choices import Intensity, Modality, TargetKind, Task
from fedward.common.data.dicom import Reason
from fedward.common.data.maskfolder import read_mask_folder
from fedward.common.data.maskscan import scan_mask_folder
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.npz import ArraySplit
from fedward.common.errors import DataError


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def grey(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def reasons(problems: list) -> dict[str, Reason]:  # type: ignore[type-arg]
    return {p.file: p.reason for p in problems}


def test_scan_pairs_images_with_masks_classes_and_splits(tmp_path: Path) -> None:
    scan = scan_mask_folder(busi_subset(tmp_path / "busi"))
    assert scan.layout == "splits" and not scan.problems
    cases = {case.image: case for case in scan.cases}
    assert list(cases) == list(BUSI_CASES)
    assert cases["benign/benign (4).png"].masks == ("benign/benign (4)_mask.png", "benign/benign (4)_mask_1.png")
    assert (cases["benign/benign (15).png"].label, cases["benign/benign (15).png"].split) == ("benign", "val")


def test_scan_without_splits_file_finds_masks_by_name_and_reports_orphans(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi", splits=False)
    write_png(folder / "normal" / "lost_mask.png", square(8, 0, 0, 2))
    scan = scan_mask_folder(folder)
    assert scan.layout == "class-folders"
    cases = {case.image: case for case in scan.cases}
    assert set(cases) == set(BUSI_CASES)
    assert cases["benign/benign (4).png"].masks == ("benign/benign (4)_mask.png", "benign/benign (4)_mask_1.png")
    assert {case.split for case in scan.cases} == {None}
    assert cases["malignant/malignant (1).png"].label == "malignant"
    assert reasons(scan.problems) == {"normal/lost_mask.png": Reason.MISSING_FILE}


def test_segmentation_read_has_the_documented_shapes_dtypes_spacing_and_strata(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi")
    read = read_mask_folder(folder, image_size=64, target=TargetKind.MASK, modality=Modality.US)
    assert read.schema.task is Task.SEGMENTATION and read.schema.classes == ("background", "lesion")
    assert (read.schema.channels, read.schema.spatial_dims, read.schema.modality) == (1, 2, Modality.US)
    assert not read.problems and set(read.splits) == {"train", "val", "test"}
    train = read.splits["train"]
    assert isinstance(train, MaskSplit) and len(train) == 3  # benign (4), malignant (2), normal (2)
    assert train.images.shape == (3, 1, 64, 64) and train.images.dtype == np.float32
    assert train.masks.shape == (3, 64, 64) and train.masks.dtype == np.uint8
    assert train.images.min() >= 0.0 and train.images.max() <= 1.0
    assert train.labels.dtype == np.int64 and train.labels[:, 0].tolist() == [0, 1, 2]  # benign, malignant, normal
    height, width = np.asarray(Image.open(folder / "benign" / "benign (4).png")).shape[:2]
    np.testing.assert_allclose(train.spacing[0], [height / 64, width / 64])
    assert set(np.unique(train.masks[0])) == {0, 1} and train.masks[2].max() == 0  # a lesion; normal: none


def test_several_masks_are_merged_by_union(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    write_png(folder / "a" / "x.png", grey(32))
    write_png(folder / "a" / "x_mask.png", square(32, 2, 2, 6))
    write_png(folder / "a" / "x_mask_1.png", square(32, 20, 10, 8))
    write_png(folder / "b" / "y.png", grey(32, 1))
    write_png(folder / "b" / "y_mask.png", square(32, 0, 0, 0))  # empty: no lesion
    read = read_mask_folder(folder, image_size=32, target=TargetKind.MASK)
    train = read.splits["train"]
    assert isinstance(train, MaskSplit) and not read.problems
    expected = square(32, 2, 2, 6) | square(32, 20, 10, 8)
    np.testing.assert_array_equal(train.masks[0], expected.astype(np.uint8))
    assert train.masks[1].max() == 0
    np.testing.assert_allclose(train.spacing, 1.0)


def test_real_busi_image_with_two_lesions_keeps_both(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi", ("benign/benign (4).png",))
    size = np.asarray(Image.open(folder / "benign" / "benign (4).png")).shape[0]
    first, second = (np.asarray(Image.open(folder / "benign" / f"benign (4){m}.png")) > 0 for m in ("_mask", "_mask_1"))
    assert (first & ~second).any() and (second & ~first).any()
    read = read_mask_folder(folder, image_size=size, target=TargetKind.MASK)
    split = read.splits["train"]
    assert isinstance(split, MaskSplit)
    union = (first | second).sum() * size * size / first.size  # lesion area on the square grid
    assert abs(int(split.masks[0].sum()) - union) <= 0.02 * union


def test_bad_cases_are_problems_and_good_cases_are_still_read(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    write_png(folder / "a" / "good.png", grey(32))
    write_png(folder / "a" / "good_mask.png", square(32, 4, 4, 8))
    write_png(folder / "a" / "nomask.png", grey(32, 1))
    write_png(folder / "a" / "wrong.png", grey(32, 2))
    write_png(folder / "a" / "wrong_mask.png", square(24, 4, 4, 8))
    (folder / "a" / "broken.png").write_bytes(b"not a png at all")
    write_png(folder / "a" / "broken_mask.png", square(32, 4, 4, 8))
    read = read_mask_folder(folder, image_size=16, target=TargetKind.MASK)
    assert reasons(read.problems) == {
        "a/nomask.png": Reason.MASK_MISSING,
        "a/wrong_mask.png": Reason.MASK_MISMATCH,
        "a/broken.png": Reason.NOT_IMAGE,
    }
    assert "24x24" in next(p.message for p in read.problems if p.reason is Reason.MASK_MISMATCH)
    assert len(read.splits["train"]) == 1


def test_splits_file_rows_that_cannot_be_used_are_problems(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi", BUSI_CASES[:2])
    with open(folder / "splits.csv", "a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["benign/gone.png", "benign/gone_mask.png", "benign", "train"])
        writer.writerow(["benign/benign (4).png", "", "benign", "holdout"])
        writer.writerow(["../outside.png", "x_mask.png", "benign", "train"])
    write_png(folder / "benign" / "extra.png", grey(8))
    scan = scan_mask_folder(folder)
    assert len(scan.cases) == 2
    assert reasons(scan.problems) == {
        "benign/gone.png": Reason.MISSING_FILE,
        "benign/gone_mask.png": Reason.MISSING_FILE,
        "splits.csv:5": Reason.BAD_MANIFEST_ROW,
        "splits.csv:6": Reason.BAD_MANIFEST_ROW,
        "benign/extra.png": Reason.NOT_IN_MANIFEST,
    }


def test_rgb_images_become_grey_as_pillow_l(tmp_path: Path) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    folder = tmp_path / "f"
    write_png(folder / "c" / "x.png", rgb)
    write_png(folder / "c" / "x_mask.png", square(32, 0, 0, 4))
    read = read_mask_folder(folder, image_size=32, target=TargetKind.MASK, intensity=Intensity.SCALE)
    split = read.splits["train"]
    assert isinstance(split, MaskSplit) and split.images.shape == (1, 1, 32, 32)
    expected = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32) / 255
    np.testing.assert_allclose(split.images[0, 0], expected, atol=1.01 / 255)


def test_class_target_gives_uint8_array_splits_in_sorted_or_given_class_order(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi")
    read = read_mask_folder(folder, image_size=28, target=TargetKind.AUTO)  # classes exist: classification
    assert read.schema.task is Task.MULTICLASS and read.schema.classes == ("benign", "malignant", "normal")
    train = read.splits["train"]
    assert isinstance(train, ArraySplit) and train.images.shape == (3, 28, 28) and train.images.dtype == np.uint8
    assert train.labels.tolist() == [[0], [1], [2]]
    given = read_mask_folder(folder, classes=("normal", "benign"), image_size=28, target=TargetKind.CLASS)
    assert given.schema.task is Task.BINARY and given.splits["train"].labels.tolist() == [[1], [0]]
    assert {p.reason for p in given.problems} == {Reason.LABEL_UNKNOWN}  # the malignant images


def test_folder_without_classes_is_a_segmentation_with_zero_strata(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    for i in range(3):
        write_png(folder / f"img{i}.png", grey(20, i))
        write_png(folder / f"img{i}_mask.png", square(20, i, i, 5))
    read = read_mask_folder(folder, image_size=16)
    train = read.splits["train"]
    assert read.schema.task is Task.SEGMENTATION and isinstance(train, MaskSplit)
    assert train.labels.tolist() == [[0], [0], [0]]
    with pytest.raises(DataError, match="two classes"):
        read_mask_folder(folder, image_size=16, target=TargetKind.CLASS)


@pytest.mark.parametrize("method", [Intensity.ZSCORE, Intensity.PERCENTILE])
def test_intensity_normalisation_per_image(tmp_path: Path, method: Intensity) -> None:
    folder = tmp_path / "f"
    write_png(folder / "x.png", grey(32))
    write_png(folder / "x_mask.png", square(32, 0, 0, 4))
    split = read_mask_folder(folder, image_size=32, intensity=method).splits["train"]
    assert isinstance(split, MaskSplit)
    image = split.images[0]
    if method is Intensity.ZSCORE:
        assert abs(float(image.mean())) < 1e-4 and abs(float(image.std()) - 1) < 1e-3
    else:
        assert image.min() == 0.0 and image.max() == 1.0


def test_ct_window_and_empty_folders_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    write_png(folder / "x.png", grey(8))
    write_png(folder / "x_mask.png", square(8, 0, 0, 2))
    with pytest.raises(DataError, match="Hounsfield"):
        read_mask_folder(folder, image_size=8, intensity=Intensity.CT_WINDOW)
    (folder / "x_mask.png").unlink()
    with pytest.raises(DataError, match="mask-missing 1"):
        read_mask_folder(folder, image_size=8, target=TargetKind.MASK)
    with pytest.raises(DataError, match="does not exist"):
        scan_mask_folder(tmp_path / "absent")
