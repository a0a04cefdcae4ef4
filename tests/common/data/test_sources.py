"""Folder data sets: layout recognition, the DataConfig's settings, the prepared cache, modality of mask folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures.seg_folders import busi_subset, decathlon_subset, write_png

from fedward.common.choices import Intensity, Modality, TargetKind, Task
from fedward.common.config.sections import DataConfig
from fedward.common.data import sources
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.npz import ArraySplit
from fedward.common.data.sources import FolderLayout, folder_layout, mask_folder_modality, read_folder_dataset
from fedward.common.errors import DataError


def count_reads(monkeypatch: pytest.MonkeyPatch, reader: str) -> list[Path]:
    """Wrap the folder reader ``sources.<reader>`` so that each call records the folder it reads; the record."""
    calls: list[Path] = []
    real = getattr(sources, reader)

    def counting(path: Path, **kwargs: object) -> object:
        calls.append(path)
        return real(path, **kwargs)

    monkeypatch.setattr(sources, reader, counting)
    return calls


def test_layouts_are_recognised(tmp_path: Path) -> None:
    assert folder_layout(busi_subset(tmp_path / "busi")) is FolderLayout.MASK_FOLDER
    assert folder_layout(busi_subset(tmp_path / "classes", splits=False)) is FolderLayout.MASK_FOLDER
    assert folder_layout(decathlon_subset(tmp_path / "hippo")) is FolderLayout.DECATHLON
    flat = tmp_path / "flat"
    write_png(flat / "x.png", np.zeros((4, 4), np.uint8))
    assert folder_layout(flat) is None
    write_png(flat / "x_mask.png", np.zeros((4, 4), bool))
    assert folder_layout(flat) is FolderLayout.MASK_FOLDER
    assert folder_layout(tmp_path / "absent") is None


def test_a_mask_folder_declares_its_modality_in_an_optional_dataset_json(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi")
    assert mask_folder_modality(folder) is None
    (folder / "dataset.json").write_text(json.dumps({"modality": "US"}))
    assert folder_layout(folder) is FolderLayout.MASK_FOLDER and mask_folder_modality(folder) is Modality.US
    read = read_folder_dataset(folder, DataConfig(image_size=28, target=TargetKind.MASK), cache_root=None)
    assert read.schema.modality is Modality.US
    (folder / "dataset.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"dataset\.json"):
        mask_folder_modality(folder)


def test_mask_folder_read_with_the_config_and_served_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, cache = busi_subset(tmp_path / "busi"), tmp_path / "cache"
    calls = count_reads(monkeypatch, "read_mask_folder")
    data = DataConfig(image_size=64, target=TargetKind.MASK, intensity=Intensity.PERCENTILE)
    first = read_folder_dataset(folder, data, cache_root=cache)
    second = read_folder_dataset(folder, data, cache_root=cache)
    assert len(calls) == 1
    train = second.splits["train"]
    assert isinstance(train, MaskSplit) and train.images.shape == (3, 1, 64, 64)
    np.testing.assert_array_equal(train.images, first.splits["train"].images)
    read_folder_dataset(folder, DataConfig(image_size=28, target=TargetKind.MASK), cache_root=cache)
    assert len(calls) == 2  # another grid is another entry


def test_classification_uses_the_declared_class_order(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi")
    declared = DataConfig(image_size=28, task=Task.MULTICLASS, classes=("normal", "malignant", "benign"), channels=1)
    read = read_folder_dataset(folder, declared, cache_root=None)
    train = read.splits["train"]
    assert read.schema.classes == ("normal", "malignant", "benign") and isinstance(train, ArraySplit)
    assert train.labels.tolist() == [[2], [1], [0]]  # benign (4), malignant (2), normal (2)
    segmentation = DataConfig(
        image_size=28, task=Task.SEGMENTATION, classes=("background", "lesion"), channels=1, target=TargetKind.MASK
    )
    strata = read_folder_dataset(folder, segmentation, cache_root=None).splits["train"].labels
    assert strata.tolist() == [[0], [1], [2]]  # segmentation classes are not strata: sorted class folders


def test_decathlon_read_with_the_config(tmp_path: Path) -> None:
    folder = decathlon_subset(tmp_path / "hippo", ("hippocampus_001", "hippocampus_011"))
    data = DataConfig(volume_size=(32, 48, 32), spacing=(1.5, 1.5, 1.5))
    read = read_folder_dataset(folder, data, cache_root=tmp_path / "cache")
    val = read.splits["val"]
    assert read.schema.spatial_dims == 3 and isinstance(val, MaskSplit)
    assert val.images.shape == (1, 1, 32, 48, 32)
    np.testing.assert_allclose(val.spacing, [[1.5, 1.5, 1.5]])
    with pytest.raises(DataError, match="Decathlon"):
        read_folder_dataset(folder, DataConfig(target=TargetKind.CLASS), cache_root=None)


def test_a_folder_of_neither_layout_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither"):
        read_folder_dataset(tmp_path / "empty", DataConfig(), cache_root=None)


@pytest.mark.slow
def test_all_of_busi_as_segmentation(tmp_path: Path) -> None:
    from fixtures.seg_folders import BUSI

    if not (BUSI / "splits.csv").is_file():
        pytest.skip("BUSI not found")
    read = read_folder_dataset(BUSI, DataConfig(image_size=64, target=TargetKind.MASK), cache_root=tmp_path)
    assert not read.problems and {s: len(v) for s, v in read.splits.items()} == {"train": 468, "val": 78, "test": 156}


def test_dicom_series_folders_are_recognised_after_the_other_layouts(tmp_path: Path) -> None:
    from fixtures.seg_series import export_case

    export_case("hippocampus_001", tmp_path / "pacs" / "case-1", patient_id="H0-00001")
    assert folder_layout(tmp_path / "pacs") is FolderLayout.DICOM_SERIES
    decathlon = decathlon_subset(tmp_path / "hippo", ("hippocampus_001",))
    shutil.copyfile(tmp_path / "pacs" / "case-1" / "seg.dcm", decathlon / "seg.dcm")
    assert folder_layout(decathlon) is FolderLayout.DECATHLON  # dataset.json is the stronger sign
    (tmp_path / "series-only").mkdir()
    shutil.copytree(tmp_path / "pacs" / "case-1" / "series", tmp_path / "series-only" / "series")
    assert folder_layout(tmp_path / "series-only") is None  # no SEG, no segmentation data set


def test_dicom_series_read_with_the_config_and_served_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fixtures.seg_series import export_case

    for number, case in enumerate(("hippocampus_001", "hippocampus_003")):
        export_case(case, tmp_path / "pacs" / case, patient_id=f"H0-{number:05d}")
    calls = count_reads(monkeypatch, "read_series_folder")
    data = DataConfig(volume_size=(48, 64, 48))
    first = read_folder_dataset(tmp_path / "pacs", data, cache_root=tmp_path / "cache")
    second = read_folder_dataset(tmp_path / "pacs", data, cache_root=tmp_path / "cache")
    assert len(calls) == 1 and list(second.splits) == ["train"]
    assert second.schema.classes == ("background", "anterior", "posterior") and second.schema.modality is Modality.MR
    np.testing.assert_array_equal(second.splits["train"].images, first.splits["train"].images)
    assert second.splits["train"].images.shape == (2, 1, 48, 64, 48)
    declared = DataConfig(
        volume_size=(48, 64, 48), task=Task.SEGMENTATION, classes=("background", "posterior", "anterior"), channels=1
    )
    swapped = read_folder_dataset(tmp_path / "pacs", declared, cache_root=tmp_path / "cache")
    assert len(calls) == 2 and swapped.schema.classes == declared.classes  # other label names: another entry
    masks = swapped.splits["train"]
    assert isinstance(masks, MaskSplit)
    np.testing.assert_array_equal(masks.masks, np.choose(first.splits["train"].masks, [0, 2, 1]))  # type: ignore[union-attr]
    with pytest.raises(DataError, match="DICOM series"):
        read_folder_dataset(tmp_path / "pacs", DataConfig(target=TargetKind.CLASS), cache_root=None)
