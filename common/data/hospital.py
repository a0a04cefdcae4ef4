"""A hospital's local data: its training and validation splits, ready for training.

Two sources, one result (:class:`HospitalData`):

* **Deployment.** A hospital folder (``data-dir`` in the SuperNode's node config) holding
  a MedMNIST-layout ``<dataset>.npz``: its ``train`` split trains, its ``val`` split
  validates (when the file has no validation images, a seeded stratified share of the
  training images is held out).
* **Simulation.** A *partition plan* (``partitions.json`` in the run directory) written by
  the simulation driver: for each simulated hospital, the indices of its training and
  validation images in the dataset's official training split. The plan holds indices
  and label counts only, never pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedward.common.choices import Task
from fedward.common.config.sections import DataConfig
from fedward.common.data.images import TaskDataset, make_dataset
from fedward.common.data.locate import locate_dataset
from fedward.common.data.npz import ArraySplit, read_npz
from fedward.common.data.opening import open_dataset
from fedward.common.data.plan import PartitionPlan
from fedward.common.errors import DataError
from fedward.common.schema import DatasetSchema


@dataclass(frozen=True, slots=True)
class HospitalData:
    """What one hospital trains and validates on.

    Attributes:
        name: hospital name (never a patient identifier).
        schema: task, classes, channels.
        train: local training images.
        val: local validation images (may be empty for very small hospitals).
        inventory: counts for the coordinator (files used, files skipped by reason);
            never names, paths or pixel values.
    """

    name: str
    schema: DatasetSchema
    train: TaskDataset
    val: TaskDataset
    inventory: dict[str, int] = field(default_factory=dict)


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into training and held-out validation, stratified by class.

    Args:
        labels: int array (N, K); K = 1 holds a class index (stratified), K > 1
            multi-labels (split at random).
        fraction: share of rows held out, in (0, 0.5].
        seed: NumPy seed; the same seed gives the same split.

    Returns:
        ``(train, val)`` sorted int64 index arrays covering range(N) exactly once. Every
        class with at least two rows keeps at least one in each part.
    """
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    if labels.shape[1] == 1:
        val_parts = []
        for cls in np.unique(labels[:, 0]):
            idx = np.flatnonzero(labels[:, 0] == cls)
            rng.shuffle(idx)
            take = round(fraction * idx.size)
            take = min(max(take, 1), idx.size - 1) if idx.size >= 2 else 0
            val_parts.append(idx[:take])
        val = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, dtype=np.int64)
    else:
        perm = rng.permutation(n)
        val = np.sort(perm[: round(fraction * n)])
    train = np.setdiff1d(np.arange(n), val, assume_unique=True)
    return train.astype(np.int64), val.astype(np.int64)


def hospital_from_plan(
    plan_file: Path, partition_id: int, schema: DatasetSchema, data: DataConfig, cache_root: Path | None
) -> HospitalData:
    """Load simulated hospital ``partition_id`` of a partition plan.

    Args:
        plan_file: the run's ``partitions.json``.
        partition_id: the simulated hospital.
        schema: the run's schema.
        data: the run's data settings (image size, grid, intensity...).
        cache_root: where folder data sets keep their prepared arrays.

    Raises:
        DataError: if the plan or its source cannot be read, or the id is out of range.
    """
    plan = PartitionPlan.read(plan_file)
    if not 0 <= partition_id < len(plan.hospitals):
        raise DataError(f"partition {partition_id} does not exist: the plan has {len(plan.hospitals)} hospitals")
    split = plan.hospitals[partition_id]
    train = open_dataset(plan.source, data, ["train"], cache_root=cache_root).splits["train"]
    return HospitalData(
        name=split.name,
        schema=schema,
        train=make_dataset(train.subset(split.train), schema, data.image_size),
        val=make_dataset(train.subset(split.val), schema, data.image_size),
    )


def hospital_from_folder(
    folder: Path,
    dataset: str,
    schema: DatasetSchema,
    image_size: int,
    val_fraction: float,
    seed: int,
    name: str,
) -> HospitalData:
    """Load a hospital's data folder holding a MedMNIST-layout ``.npz``.

    Raises:
        DataError: if the folder or the file is missing or invalid, or its labels do not
            fit the federation's classes.
    """
    path = locate_dataset(dataset, image_size, Path(folder), download=False)
    splits = read_npz(path, ["train", "val"])
    train, val = splits["train"], splits["val"]
    if len(train) == 0:
        raise DataError(f"{path.name} holds no training images")
    _check_fits(path, train, schema)
    _check_fits(path, val, schema)
    if len(val) == 0:
        keep, held = holdout_split(train.labels, val_fraction, seed)
        train, val = train.subset(keep), train.subset(held)
    return HospitalData(name, schema, make_dataset(train, schema, image_size), make_dataset(val, schema, image_size))


def _check_fits(path: Path, split: ArraySplit, schema: DatasetSchema) -> None:
    channels = 3 if split.images.ndim == 4 else 1
    if len(split) and channels != schema.channels:
        raise DataError(f"{path.name}: images have {channels} channel(s); the federation trains on {schema.channels}")
    if schema.task is Task.MULTILABEL:
        if split.labels.shape[1] != len(schema.classes):
            raise DataError(
                f"{path.name}: {split.labels.shape[1]} labels per image; the federation has {len(schema.classes)}"
            )
    elif len(split) and int(split.labels.max()) >= len(schema.classes):
        raise DataError(
            f"{path.name}: label index {int(split.labels.max())} is not one of the federation's "
            f"{len(schema.classes)} classes ({', '.join(schema.classes)})"
        )
