"""Read and validate MedMNIST-layout ``.npz`` files.

The layout (MedMNIST v2, every 2D dataset): keys ``{train,val,test}_images`` holding
uint8 arrays of shape (N, H, W) (grayscale) or (N, H, W, 3) (RGB), and
``{train,val,test}_labels`` holding integer arrays of shape (N, 1) (class index) or
(N, K) (K binary labels, multi-label). Any file with this layout can be read, not only
the catalogued ones; the task and class count are then inferred from the labels.

A truncated or corrupt file, a missing key or an array of the wrong shape or dtype
raises :class:`~fedward.common.errors.DataError` naming the file and the key.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedward.common.choices import Task
from fedward.common.data.catalog import lookup
from fedward.common.errors import DataError
from fedward.common.schema import DatasetSchema

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True, slots=True)
class ArraySplit:
    """One split as arrays.

    Attributes:
        images: uint8, shape (N, H, W) or (N, H, W, 3).
        labels: int64, shape (N, K); K = 1 holds a class index.
        masks: each image's lesion mask, uint8 (N, H, W) 0/1, when a classification is
            learnt with lesion masks (an image + mask folder read with
            ``data.target = "class+mask"``); ``None`` otherwise (and in every ``.npz``).
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: np.ndarray) -> ArraySplit:
        """The rows at ``indices`` (int array of shape (M,)), as a new split."""
        masks = self.masks[indices] if self.masks is not None else None
        return ArraySplit(self.images[indices], self.labels[indices], masks)


def read_npz(path: Path, splits: Iterable[str] = SPLITS) -> dict[str, ArraySplit]:
    """Read and validate the given splits of a MedMNIST-layout ``.npz``.

    Args:
        path: the file.
        splits: which of ``train``, ``val``, ``test`` to read.

    Returns:
        The splits by name. Labels are int64 of shape (N, K).

    Raises:
        DataError: if the file is missing, not a readable archive (e.g. truncated), lacks
            a key, or holds arrays of the wrong dtype or shape.
    """
    path = Path(path)
    wanted = list(splits)
    for split in wanted:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; MedMNIST files hold {', '.join(SPLITS)}")
    if not path.is_file():
        raise DataError(f"dataset file {path} does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(_unreadable(path, err)) from None
    out: dict[str, ArraySplit] = {}
    with archive:
        keys = set(archive.files)
        missing = [f"{s}_{kind}" for s in wanted for kind in ("images", "labels") if f"{s}_{kind}" not in keys]
        if missing:
            raise DataError(
                f"{path.name} lacks {', '.join(missing)}; a MedMNIST-layout .npz holds "
                "{train,val,test}_images and {train,val,test}_labels"
            )
        for split in wanted:
            images = _array(archive, path, f"{split}_images")
            labels = _array(archive, path, f"{split}_labels")
            out[split] = _validated(path, split, images, labels)
    return out


def _array(archive: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(_unreadable(path, err, key)) from None


def _unreadable(path: Path, err: Exception, key: str | None = None) -> str:
    what = f" (array {key})" if key else ""
    return (
        f"{path.name} is not a readable .npz archive{what}: it may be truncated or corrupt "
        f"({type(err).__name__}); replace the file at {path}"
    )


def _validated(path: Path, split: str, images: np.ndarray, labels: np.ndarray) -> ArraySplit:
    name = path.name
    if images.dtype != np.uint8:
        raise DataError(f"{name}: {split}_images must be uint8, found {images.dtype}")
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise DataError(f"{name}: {split}_images must have shape (N, H, W) or (N, H, W, 3), found {images.shape}")
    if images.shape[1] < 1 or images.shape[2] < 1:
        raise DataError(f"{name}: {split}_images has empty images, shape {images.shape}")
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{name}: {split}_labels must be integers of shape (N, 1) or (N, K), found {labels.dtype} {labels.shape}"
        )
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{name}: {split} has {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and labels.min() < 0:
        raise DataError(f"{name}: {split}_labels holds negative values")
    if labels.shape[1] > 1 and labels.size and labels.max() > 1:
        raise DataError(f"{name}: {split}_labels of shape (N, K) must be 0/1 multi-labels")
    return ArraySplit(images=images, labels=labels.astype(np.int64, copy=False))


def infer_schema(dataset: str, splits: dict[str, ArraySplit]) -> DatasetSchema:
    """The schema of a dataset: from the MedMNIST catalog, else inferred from the labels.

    For catalogued datasets the file is checked against the catalog (channels, label
    range). For others: labels (N, 1) with K distinct indices 0..K-1 give a binary (K = 2)
    or multi-class task with classes named ``"0"``..; labels (N, K) give a multi-label task.

    Raises:
        DataError: if the file disagrees with the catalog, or a single-label file has fewer
            than two classes.
    """
    first = next(iter(splits.values()))
    channels = 3 if first.images.ndim == 4 else 1
    width = first.labels.shape[1]
    entry = lookup(dataset)
    if entry is not None:
        if channels != entry.channels:
            raise DataError(f"{dataset}: images have {channels} channel(s), the catalog says {entry.channels}")
        expected_width = len(entry.classes) if entry.task is Task.MULTILABEL else 1
        for split, arrays in splits.items():
            if arrays.labels.shape[1] != expected_width:
                raise DataError(
                    f"{dataset}: {split}_labels has {arrays.labels.shape[1]} columns, expected {expected_width}"
                )
            if entry.task is not Task.MULTILABEL and arrays.labels.size and arrays.labels.max() >= len(entry.classes):
                raise DataError(
                    f"{dataset}: {split}_labels holds class {arrays.labels.max()}, "
                    f"only {len(entry.classes)} classes exist"
                )
        return DatasetSchema(entry.task, entry.classes, channels, 2, entry.modality)
    if width > 1:
        return DatasetSchema(Task.MULTILABEL, tuple(f"label-{i}" for i in range(width)), channels)
    top = max(int(a.labels.max()) for a in splits.values() if a.labels.size)
    if top < 1:
        raise DataError(f"{dataset}: labels hold a single class; a classifier needs at least two")
    task = Task.BINARY if top == 1 else Task.MULTICLASS
    return DatasetSchema(task, tuple(str(i) for i in range(top + 1)), channels)
