"""Decide how a data set is exported to per-hospital folders, and which planned rows each folder holds in what order.

``fedward data export`` writes each simulated hospital's share of a data set as the folder a
deployed hospital would hold, in the form the data set came in (:class:`ExportKind`, one
decision per data set, :func:`export_kind`):

* a MedMNIST ``.npz`` (classification) as DICOM Secondary Capture images with ``labels.csv``
  (:mod:`fedward.simulation.dicom_export`);
* a Decathlon NIfTI folder (3D segmentation) as DICOM MR or CT series with a DICOM SEG each
  (:mod:`fedward.simulation.volume_export`);
* an image + mask folder (BUSI) as an image + mask folder with ``splits.csv``
  (:mod:`fedward.simulation.mask_export`).

The plan's indices are rows of the prepared ``train`` split; the exporters map them back to
the source's cases with the reader's own record of its rows (:func:`source_read`), so cases
the reader skipped do not shift the mapping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from fedward.common.config import RunConfig
from fedward.common.data.hospital import holdout_split
from fedward.common.data.load import cache_root_for
from fedward.common.data.maskfolder import FolderRead
from fedward.common.data.npz import ArraySplit
from fedward.common.data.opening import OpenedDataset
from fedward.common.data.plan import HospitalSplit
from fedward.common.data.sources import FolderLayout, folder_layout, read_folder_dataset
from fedward.common.errors import DataError
from fedward.common.ml.runtime import derive_seed

log = logging.getLogger(__name__)

HOLDOUT_PURPOSE = "holdout"
"""What a deployed hospital derives its hold-out seed from, with ``run.seed`` (:mod:`fedward.common.data.load`)."""
Row = tuple[int, str]
"""A planned row: (index into the source's ``train`` split, ``train`` or ``val``)."""


class ExportKind(StrEnum):
    """How a data set is written as hospital folders."""

    CLASSIFICATION = "classification"
    """MedMNIST ``.npz``: DICOM Secondary Capture images and ``labels.csv``."""
    VOLUMES = "volumes"
    """Decathlon NIfTI: one DICOM series and DICOM SEG per case."""
    MASK_FOLDER = "mask-folder"
    """Image + mask folder: the original image and mask files and ``splits.csv``."""


@dataclass(frozen=True, slots=True)
class ExportedFolder:
    """One folder written by an export.

    Attributes:
        path: the folder.
        files: what it holds, by kind (``{"series": 4, "SEG files": 4}``...).
        splits: cases per split (``{"train": 3, "val": 1}``).
    """

    path: Path
    files: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the terminal: ``<path>: 4 series, 4 SEG files (train 3, val 1)``."""
        files = ", ".join(f"{count} {kind}" for kind, count in self.files.items())
        splits = ", ".join(f"{split} {count}" for split, count in self.splits.items())
        return f"{self.path}: {files}" + (f" ({splits})" if splits else "")


def export_kind(found: OpenedDataset) -> ExportKind:
    """How ``found`` is exported: by its form (file, or the folder's layout).

    Raises:
        DataError: for a DICOM series folder (already what a deployed hospital holds; no
            export is needed).
    """
    if not found.path.is_dir():
        return ExportKind.CLASSIFICATION
    layout = folder_layout(found.path)
    if layout is FolderLayout.DECATHLON:
        return ExportKind.VOLUMES
    if layout is FolderLayout.MASK_FOLDER:
        return ExportKind.MASK_FOLDER
    raise DataError(f"{found.path.name} is a {layout} folder: hospitals can read it as it is; nothing to export")


def deployment_settings(kind: ExportKind, found: OpenedDataset, cfg: RunConfig) -> str:
    """The settings hospitals reading the exported folders must share with this run, as TOML keys.

    Volumes: the grid the simulation used (``data.volume-size``, found from the data set when
    the run left it empty), ``data.spacing``, and ``run.seed`` with ``data.val-fraction`` (they
    place the deployed hold-out, :func:`holdout_aligned_rows`). Images: ``data.image-size``.
    """
    if kind is not ExportKind.VOLUMES:
        return f"data.image-size = {cfg.data.image_size}"
    grid = list(found.splits["train"].images.shape[-3:])
    spacing = f"data.spacing = {list(cfg.data.spacing)}, " if cfg.data.spacing else ""
    return f"data.volume-size = {grid}, {spacing}run.seed = {cfg.run.seed}, data.val-fraction = {cfg.data.val_fraction}"


def array_splits(found: OpenedDataset) -> dict[str, ArraySplit]:
    """The classification splits of a MedMNIST file (what :mod:`fedward.simulation.dicom_export` writes).

    Raises:
        DataError: if a split holds label maps (a segmentation data set).
    """
    splits = {name: split for name, split in found.splits.items() if isinstance(split, ArraySplit)}
    if len(splits) != len(found.splits):
        raise DataError(f"{found.path.name} is a segmentation data set; it is not written as DICOM images")
    return splits


def source_read(found: OpenedDataset, cfg: RunConfig) -> FolderRead:
    """The folder data set read as the simulation read it (same settings, through the prepared cache).

    Raises:
        DataError: if the folder cannot be read, or its ``train`` split differs in size from
            the one the plan was drawn on (the folder changed since).
    """
    read = read_folder_dataset(found.path, cfg.data, cache_root=cache_root_for(cfg))
    planned, now = found.splits["train"], read.splits.get("train")
    if now is None or len(now) != len(planned) or not np.array_equal(now.labels, planned.labels):
        raise DataError(f"{found.path.name} changed since the plan was drawn; export again")
    return read


def planned_rows(hospital: HospitalSplit) -> list[Row]:
    """The hospital's training rows then its validation rows, plan order."""
    return [(int(i), "train") for i in hospital.train] + [(int(i), "val") for i in hospital.val]


def holdout_aligned_rows(hospital: HospitalSplit, val_fraction: float, seed: int) -> tuple[list[Row], bool]:
    """The hospital's rows in the order that makes a deployed hold-out pick exactly the plan's validation rows.

    A deployed hospital reading a folder without splits (DICOM series) holds out
    :func:`~fedward.common.data.hospital.holdout_split` of its cases with seed
    ``derive_seed(run.seed, "holdout")``; its cases carry one stratum (label maps), so the
    held-out positions depend only on their number, the share and the seed. Placing the
    plan's validation rows at those positions (and its training rows, in plan order, at the
    others) makes the deployed training and validation splits the plan's, in plan order.

    Args:
        hospital: the planned rows.
        val_fraction: ``data.val-fraction`` of the run (and of the deployment).
        seed: ``run.seed`` of the run (and of the deployment).

    Returns:
        The rows, and whether they are aligned; ``False`` (rows in :func:`planned_rows`
        order) when the hold-out would take another number of cases than the plan's.
    """
    total = hospital.train.size + hospital.val.size
    keep, held = holdout_split(np.zeros((total, 1), np.int64), val_fraction, derive_seed(seed, HOLDOUT_PURPOSE))
    if held.size != hospital.val.size:
        log.warning("%s: a deployed hold-out takes %d cases, the plan %d", hospital.name, held.size, hospital.val.size)
        return planned_rows(hospital), False
    rows: list[Row] = [(0, "")] * total
    for position, index in zip(keep, hospital.train, strict=True):
        rows[int(position)] = (int(index), "train")
    for position, index in zip(held, hospital.val, strict=True):
        rows[int(position)] = (int(index), "val")
    return rows, True


def check_out_folder(folder: Path) -> Path:
    """``folder``, checked to be new or empty.

    Raises:
        DataError: if it exists and is not empty.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise DataError(f"{folder} is not empty; export into a new folder")
    return folder
