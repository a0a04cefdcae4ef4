"""fedward.common.data.opening: open_dataset reads a MedMNIST .npz, a BUSI-style mask folder or a Decathlon folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures.seg_folders import busi_subset, decathlon_subset, write_png

from fedward.common.choices import Modality, TargetKind, Task
from fedward.common.config.sections import DataConfig
from fedward.common.data.dicom import Reason
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.npz import ArraySplit, read_npz
from fedward.common.data.opening import open_dataset
from fedward.common.errors import DataError

BUSI_LESIONS = DataConfig(dataset="busi", image_size=64, target=TargetKind.MASK, modality=Modality.US)
HIPPOCAMPUS_GRID = DataConfig(dataset="hippocampus", volume_size=(48, 64, 48))
NOT_TRAINING = ("benign/benign (15).png", "benign/benign (13).png", "malignant/malignant (1).png")
"""BUSI cases of the val and test splits only."""


# ---------------------------------------------------------------- .npz


def test_an_npz_opens_as_classification_splits_with_its_inferred_schema(
    tiny_npz: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_npz.parent)
    opened = open_dataset(Path(tiny_npz.name), DataConfig(dataset="tinymnist"), cache_root=None)
    assert opened.path == tiny_npz.resolve() and opened.path.is_absolute()
    assert opened.schema.task is Task.BINARY and opened.schema.classes == ("0", "1")
    assert opened.schema.channels == 1 and opened.schema.spatial_dims == 2
    assert opened.strata == opened.schema.classes and opened.skipped == {}
    expected = read_npz(tiny_npz)
    assert set(opened.splits) == {"train", "val", "test"}
    for name, split in opened.splits.items():
        assert isinstance(split, ArraySplit)
        np.testing.assert_array_equal(split.images, expected[name].images)
        np.testing.assert_array_equal(split.labels, expected[name].labels)
    assert [len(opened.splits[s]) for s in ("train", "val", "test")] == [120, 30, 40]


def test_only_the_requested_splits_are_returned(tiny_npz: Path, tmp_path: Path) -> None:
    assert set(open_dataset(tiny_npz, DataConfig(), ["test"], cache_root=None).splits) == {"test"}
    folder = busi_subset(tmp_path / "busi")
    assert set(open_dataset(folder, BUSI_LESIONS, ("train", "val"), cache_root=None).splits) == {"train", "val"}


def test_a_missing_or_damaged_npz_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "absent.npz", DataConfig(), cache_root=None)
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"PK\x03\x04 not a zip archive")
    with pytest.raises(DataError):
        open_dataset(damaged, DataConfig(), cache_root=None)


# ---------------------------------------------------------------- BUSI-style mask folder


def test_busi_lesions_open_as_2d_ultrasound_segmentation(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi")
    opened = open_dataset(folder, BUSI_LESIONS, cache_root=None)
    schema = opened.schema
    assert schema.task is Task.SEGMENTATION and schema.classes == ("background", "lesion")
    assert schema.channels == 1 and schema.spatial_dims == 2 and schema.modality is Modality.US
    assert opened.path == folder.resolve() and opened.skipped == {}
    assert opened.strata == ("benign", "malignant", "normal")  # the images' classes balance the partition
    assert {name: len(split) for name, split in opened.splits.items()} == {"train": 3, "val": 1, "test": 2}
    train = opened.splits["train"]
    assert isinstance(train, MaskSplit)
    assert train.images.shape == (3, 1, 64, 64) and train.images.dtype == np.float32
    assert train.masks.shape == (3, 64, 64) and set(np.unique(train.masks)) == {0, 1}
    assert train.labels.ravel().tolist() == [0, 1, 2]  # benign (4), malignant (2), normal (2): strata indices
    assert not train.masks[2].any(), "a normal image has an empty lesion mask"
    assert train.spacing.shape == (3, 2) and (train.spacing > 1).all()  # original pixels per grid pixel


def test_a_data_set_s_own_modality_wins_over_the_config(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi")
    (folder / "dataset.json").write_text(json.dumps({"modality": "US"}))
    data = DataConfig(image_size=64, target=TargetKind.MASK, modality=Modality.MR)
    assert open_dataset(folder, data, cache_root=None).schema.modality is Modality.US
    (folder / "dataset.json").unlink()
    undeclared = DataConfig(image_size=64, target=TargetKind.MASK)
    assert open_dataset(folder, undeclared, cache_root=None).schema.modality is None


def test_busi_classes_open_as_classification_when_asked(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi")
    opened = open_dataset(folder, DataConfig(image_size=28, target=TargetKind.CLASS), cache_root=None)
    assert opened.schema.task is Task.MULTICLASS and opened.schema.classes == ("benign", "malignant", "normal")
    assert opened.strata == opened.schema.classes
    train = opened.splits["train"]
    assert isinstance(train, ArraySplit) and train.images.shape == (3, 28, 28) and train.images.dtype == np.uint8


def test_unusable_cases_are_counted_by_reason_without_names(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi")
    write_png(folder / "benign" / "not listed.png", np.zeros((40, 50), np.uint8))
    (folder / "malignant" / "malignant (2)_mask.png").unlink()
    opened = open_dataset(folder, BUSI_LESIONS, cache_root=None)
    assert sum(opened.skipped.values()) == 2
    assert set(opened.skipped) <= {reason.value for reason in Reason}
    assert opened.skipped.get(Reason.NOT_IN_MANIFEST.value) == 1
    assert all(isinstance(count, int) for count in opened.skipped.values())
    assert len(opened.splits["train"]) == 2  # malignant (2) lost its mask
    assert "png" not in json.dumps(opened.skipped)


def test_a_folder_without_a_training_case_is_refused(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi", NOT_TRAINING)
    with pytest.raises(DataError, match="no usable training case"):
        open_dataset(folder, BUSI_LESIONS, cache_root=None)


def test_a_folder_in_no_known_layout_is_refused(tmp_path: Path) -> None:
    write_png(tmp_path / "plain" / "x.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="neither"):
        open_dataset(tmp_path / "plain", BUSI_LESIONS, cache_root=None)


def test_a_cache_root_keeps_prepared_arrays_outside_the_data_set(tmp_path: Path) -> None:
    folder, cache = busi_subset(tmp_path / "busi"), tmp_path / "cache"
    files = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    first = open_dataset(folder, BUSI_LESIONS, cache_root=cache)
    stored = [p.relative_to(cache) for p in cache.rglob("*") if p.is_file()]
    assert stored and all(p.parts[0] == "prepared" for p in stored)
    again = open_dataset(folder, BUSI_LESIONS, cache_root=cache)
    for name, split in first.splits.items():
        assert isinstance(split, MaskSplit)
        np.testing.assert_array_equal(split.images, again.splits[name].images)
        np.testing.assert_array_equal(split.masks, again.splits[name].masks)  # type: ignore[union-attr]
    assert again.schema == first.schema and again.strata == first.strata
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == files, "opening never writes into the data set"
    shutil.rmtree(folder / "malignant")  # a changed folder is read again, never served stale
    assert len(open_dataset(folder, BUSI_LESIONS, cache_root=cache).splits["train"]) == 2


# ---------------------------------------------------------------- Decathlon folder


def test_hippocampus_opens_as_3d_mr_segmentation_on_the_configured_grid(tmp_path: Path) -> None:
    folder = decathlon_subset(tmp_path / "hippocampus")
    opened = open_dataset(folder, HIPPOCAMPUS_GRID, cache_root=None)
    schema = opened.schema
    assert schema.task is Task.SEGMENTATION and schema.classes == ("background", "anterior", "posterior")
    assert schema.spatial_dims == 3 and schema.channels == 1 and schema.modality is Modality.MR
    assert opened.strata == ("all cases",) and opened.skipped == {}
    assert {name: len(split) for name, split in opened.splits.items()} == {"train": 2, "val": 1, "test": 1}
    for split in opened.splits.values():
        assert isinstance(split, MaskSplit)
        assert split.images.shape[1:] == (1, 48, 64, 48) and split.images.dtype == np.float32
        assert split.masks.shape[1:] == (48, 64, 48) and set(np.unique(split.masks)) == {0, 1, 2}
        assert split.spacing.shape == (len(split), 3) and split.labels.ravel().tolist() == [0] * len(split)


def test_without_a_grid_volumes_get_one_of_multiples_of_16(tmp_path: Path) -> None:
    folder = decathlon_subset(tmp_path / "hippocampus")
    train = open_dataset(folder, DataConfig(dataset="hippocampus"), ["train"], cache_root=None).splits["train"]
    assert isinstance(train, MaskSplit)
    assert len(train.images.shape[2:]) == 3 and all(side % 16 == 0 for side in train.images.shape[2:])


def test_a_decathlon_folder_cannot_be_read_as_classification(tmp_path: Path) -> None:
    folder = decathlon_subset(tmp_path / "hippocampus")
    with pytest.raises(DataError, match="target"):
        open_dataset(folder, DataConfig(target=TargetKind.CLASS), cache_root=None)
