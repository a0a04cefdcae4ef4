"""MedMNIST .npz reading: valid files load, broken ones fail with a clear DataError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.synthetic import write_npz

from fedward.common.choices import Task
from fedward.common.data.npz import infer_schema, read_npz
from fedward.common.errors import DataError


def test_reads_all_splits(tiny_npz: Path) -> None:
    splits = read_npz(tiny_npz)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [120, 30, 40]
    assert splits["train"].images.dtype == np.uint8
    assert splits["train"].labels.dtype == np.int64
    assert splits["train"].labels.shape == (120, 1)


def test_real_pneumoniamnist(real_data_dir: Path) -> None:
    splits = read_npz(real_data_dir / "pneumoniamnist.npz")
    assert splits["train"].images.shape == (4708, 28, 28)
    assert int((splits["test"].labels[:, 0] == 0).sum()) == 234
    schema = infer_schema("pneumoniamnist", splits)
    assert schema.task is Task.BINARY
    assert schema.classes == ("normal", "pneumonia")
    assert schema.channels == 1


def test_truncated_file(tiny_npz: Path) -> None:
    data = tiny_npz.read_bytes()
    tiny_npz.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"not a readable \.npz archive"):
        read_npz(tiny_npz)


def test_truncated_real_file_fails_cleanly(tmp_path: Path, real_data_dir: Path) -> None:
    data = (real_data_dir / "pneumoniamnist.npz").read_bytes()
    broken = tmp_path / "pneumoniamnist.npz"
    broken.write_bytes(data[: len(data) - 4096])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_npz(broken)


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_text("hello")
    with pytest.raises(DataError, match=r"junk\.npz is not a readable"):
        read_npz(junk)


def test_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "partial.npz"
    np.savez(path, train_images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="lacks train_labels"):
        read_npz(path, ["train"])


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((3, 4, 4), np.float32), np.zeros((3, 1), np.uint8), "must be uint8"),
        (np.zeros((3, 4), np.uint8), np.zeros((3, 1), np.uint8), "must have shape"),
        (np.zeros((3, 4, 4, 2), np.uint8), np.zeros((3, 1), np.uint8), "must have shape"),
        (np.zeros((3, 4, 4), np.uint8), np.zeros((2, 1), np.uint8), "3 images but 2 labels"),
        (np.zeros((3, 4, 4), np.uint8), np.full((3, 1), -1, np.int8), "negative"),
        (np.zeros((3, 4, 4), np.uint8), np.full((3, 2), 2, np.uint8), "0/1 multi-labels"),
        (np.zeros((3, 4, 4), np.uint8), np.zeros((3, 1), np.float32), "integers"),
    ],
)
def test_wrong_arrays(tmp_path: Path, images: np.ndarray, labels: np.ndarray, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, train_images=images, train_labels=labels)
    with pytest.raises(DataError, match=message):
        read_npz(path, ["train"])


def test_one_dimensional_labels_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "flat.npz"
    np.savez(path, train_images=np.zeros((3, 4, 4), np.uint8), train_labels=np.array([0, 1, 1], np.uint8))
    assert read_npz(path, ["train"])["train"].labels.shape == (3, 1)


def test_schema_inferred_for_uncatalogued_files(tmp_path: Path) -> None:
    splits = read_npz(write_npz(tmp_path / "x.npz", classes=3, rgb=True))
    schema = infer_schema("x", splits)
    assert (schema.task, schema.classes, schema.channels) == (Task.MULTICLASS, ("0", "1", "2"), 3)
    multi = {"train": splits["train"].__class__(splits["train"].images, np.ones((120, 4), np.int64))}
    assert infer_schema("x", multi).task is Task.MULTILABEL


def test_catalogued_dataset_that_disagrees_with_the_catalog(tmp_path: Path) -> None:
    splits = read_npz(write_npz(tmp_path / "pneumoniamnist.npz", rgb=True))
    with pytest.raises(DataError, match="catalog says 1"):
        infer_schema("pneumoniamnist", splits)
