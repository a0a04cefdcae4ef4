"""The prepared-data cache: hits, misses after a file or setting changes, corrupt entries, no cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fedward.common.choices import Modality, Task
from fedward.common.data.dicom import Reason
from fedward.common.data.folder import Problem
from fedward.common.data.maskfolder import FolderRead
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.npz import ArraySplit
from fedward.common.data.prepared import prepared
from fedward.common.schema import DatasetSchema


class Builder:
    """A ``build`` callable that counts its calls and returns a small fixed result."""

    def __init__(self, classification: bool = False) -> None:
        self.calls = 0
        self.classification = classification

    def __call__(self) -> FolderRead:
        self.calls += 1
        rng = np.random.default_rng(0)
        problems = [Problem("a/x.png", Reason.MASK_MISSING, "no mask")]
        if self.classification:
            images = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
            schema = DatasetSchema(Task.BINARY, ("a", "b"), 1)
            return FolderRead(schema, {"train": ArraySplit(images, np.array([[0], [1], [1]]))}, problems)
        split = MaskSplit(
            rng.normal(size=(2, 1, 4, 6)).astype(np.float32),
            rng.integers(0, 2, (2, 4, 6), dtype=np.uint8),
            np.array([[0], [2]], np.int64),
            np.array([[1.5, 2.0], [1.0, 1.0]]),
        )
        schema = DatasetSchema(Task.SEGMENTATION, ("background", "lesion"), 1, 2, Modality.US)
        cases = {"train": ("case-a", "case-b"), "test": ("case-b",)}
        return FolderRead(schema, {"train": split, "test": split.subset(np.array([1]))}, problems, ("x",), cases)


def folder_with_files(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "x.png").write_bytes(b"pixels")
    (folder / "a" / "y.png").write_bytes(b"more pixels")
    return folder


def same(left: FolderRead, right: FolderRead) -> bool:
    if left.schema != right.schema or left.problems != right.problems or left.splits.keys() != right.splits.keys():
        return False
    if (left.strata, left.cases) != (right.strata, right.cases):
        return False
    for name, split in left.splits.items():
        other = right.splits[name]
        fields = ("images", "masks", "labels", "spacing") if isinstance(split, MaskSplit) else ("images", "labels")
        if type(split) is not type(other) or not all(
            np.array_equal(getattr(split, f), getattr(other, f)) and getattr(split, f).dtype == getattr(other, f).dtype
            for f in fields
        ):
            return False
    return True


def test_second_call_is_served_from_the_cache(tmp_path: Path) -> None:
    folder, cache, build = folder_with_files(tmp_path), tmp_path / "cache", Builder()
    first = prepared(folder, ("mask-folder", 64), build, cache)
    second = prepared(folder, ("mask-folder", 64), build, cache)
    assert build.calls == 1 and same(first, second)
    assert len(list((cache / "prepared").glob("*.npz"))) == 1


def test_classification_splits_round_trip(tmp_path: Path) -> None:
    folder, cache, build = folder_with_files(tmp_path), tmp_path / "cache", Builder(classification=True)
    first = prepared(folder, (), build, cache)
    second = prepared(folder, (), build, cache)
    assert build.calls == 1 and same(first, second) and isinstance(second.splits["train"], ArraySplit)


def test_a_changed_added_or_removed_file_misses_and_replaces_the_old_entry(tmp_path: Path) -> None:
    folder, cache, build = folder_with_files(tmp_path), tmp_path / "cache", Builder()
    prepared(folder, ("s",), build, cache)
    target = folder / "a" / "x.png"
    target.write_bytes(b"pixelz")  # same size
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    prepared(folder, ("s",), build, cache)
    assert build.calls == 2
    (folder / "a" / "z.png").write_bytes(b"new")
    prepared(folder, ("s",), build, cache)
    (folder / "a" / "z.png").unlink()
    prepared(folder, ("s",), build, cache)
    assert build.calls == 4
    assert len(list((cache / "prepared").glob("*.npz"))) == 1  # older entries of this folder and settings removed


def test_other_settings_miss(tmp_path: Path) -> None:
    folder, cache, build = folder_with_files(tmp_path), tmp_path / "cache", Builder()
    prepared(folder, ("mask-folder", 64), build, cache)
    prepared(folder, ("mask-folder", 128), build, cache)
    assert build.calls == 2
    prepared(folder, ("mask-folder", 64), build, cache)
    assert build.calls == 2  # both settings keep their entry


def test_a_corrupt_entry_is_a_miss_and_is_rebuilt(tmp_path: Path) -> None:
    folder, cache, build = folder_with_files(tmp_path), tmp_path / "cache", Builder()
    prepared(folder, (), build, cache)
    (entry,) = (cache / "prepared").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    again = prepared(folder, (), build, cache)
    assert build.calls == 2 and same(again, Builder()())
    entry.with_suffix(".json").write_text("{not json")
    prepared(folder, (), build, cache)
    assert build.calls == 3
    assert same(prepared(folder, (), build, cache), Builder()()) and build.calls == 3


def test_no_cache_root_builds_every_time(tmp_path: Path) -> None:
    folder, build = folder_with_files(tmp_path), Builder()
    prepared(folder, (), build, None)
    prepared(folder, (), build, None)
    assert build.calls == 2
