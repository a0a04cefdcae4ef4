"""One entry point for segmentation folder data sets: recognise the layout, read it with the run's settings, cache it.

Layouts (:class:`FolderLayout`):

* **mask folder** (:mod:`fedward.common.data.maskfolder`, the BUSI layout): a ``splits.csv``
  with a ``masks`` column, or ``<name>_mask*.png`` files in the folder or its class
  sub-folders. Its modality comes from an optional ``dataset.json`` holding a
  ``"modality"`` key (``"US"`` or Decathlon style ``{"0": "US"}``); without one it is
  unknown (``None``). The copy of BUSI in the shared data has none: write
  ``{"modality": "US"}`` beside its ``splits.csv`` to declare ultrasound.
* **Decathlon** (:mod:`fedward.common.data.decathlon`): a ``dataset.json`` (and no mask
  folder signs; a Decathlon folder holds NIfTI files and a ``splits.csv`` of case, split).
* **DICOM series** (:mod:`fedward.common.data.seriesfolder`, a PACS export): DICOM SEG files
  anywhere below the folder (and neither of the signs above). Every case is a training case.

Volume layouts (Decathlon, DICOM series) are preprocessed alike
(:mod:`fedward.common.data.volumeprep`). Their grid is ``data.volume-size``; left empty it is
found from the hospital's own cases, so deployments set it to the federation's grid.

:func:`read_folder_dataset` reads any of them with the :class:`~fedward.common.config.sections.DataConfig`
settings through the prepared-data cache (:mod:`fedward.common.data.prepared`).
"""

from __future__ import annotations

import csv
import functools
import logging
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from fedward.common.choices import Modality, TargetKind, Task
from fedward.common.config.sections import DataConfig
from fedward.common.data.decathlon import DATASET_FILE, parse_modality, read_decathlon
from fedward.common.data.files import is_raster
from fedward.common.data.folder import MANIFEST
from fedward.common.data.maskfolder import FolderRead, read_mask_folder
from fedward.common.data.maskscan import MASK_NAME, SPLITS_FILE
from fedward.common.data.prepared import prepared
from fedward.common.data.seriesfolder import holds_dicom_seg, read_series_folder
from fedward.common.errors import DataError
from fedward.common.fileio import read_json_object

log = logging.getLogger(__name__)


class FolderLayout(StrEnum):
    """How a folder data set is laid out."""

    DECATHLON = "decathlon"
    """Medical Segmentation Decathlon: ``dataset.json``, NIfTI volumes and label maps."""
    MASK_FOLDER = "mask-folder"
    """Images with ``<name>_mask*.png`` masks, optionally listed in ``splits.csv`` (BUSI)."""
    DICOM_SERIES = "dicom-series"
    """DICOM series with a DICOM SEG each (a PACS export): training cases only."""


LABEL_MAP_LAYOUTS = frozenset({FolderLayout.DECATHLON, FolderLayout.DICOM_SERIES})
"""Layouts whose only annotation is a label map: always read as segmentation."""


def folder_layout(path: Path) -> FolderLayout | None:
    """The layout of the folder at ``path``; ``None`` when it is none of them (or not a folder).

    A mask folder is recognised first (a ``splits.csv`` whose header has a ``masks``
    column, or mask files in the folder or a sub-folder), so that it may carry a
    ``dataset.json`` for its modality; otherwise a ``dataset.json`` makes it a Decathlon
    folder; otherwise, unless a classification manifest (``labels.csv``) says what the folder
    is, a DICOM SEG file anywhere below it (File Meta Information read until one is found)
    makes it a DICOM series folder.
    """
    path = Path(path)
    if not path.is_dir():
        return None
    if _has_masks_column(path / SPLITS_FILE) or any(_holds_masks(d) for d in (path, *_subfolders(path))):
        return FolderLayout.MASK_FOLDER
    if (path / DATASET_FILE).is_file():
        return FolderLayout.DECATHLON
    if (path / MANIFEST).is_file():  # a classification folder (labels.csv): no header scan
        return None
    if holds_dicom_seg(path):
        return FolderLayout.DICOM_SERIES
    return None


def _has_masks_column(path: Path) -> bool:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return "masks" in {column.strip().lower() for column in header}


def _subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _holds_masks(folder: Path) -> bool:
    return any(p.is_file() and is_raster(p) and MASK_NAME.match(p.stem) for p in folder.iterdir())


def mask_folder_modality(path: Path) -> Modality | None:
    """The modality a mask folder declares in an optional ``dataset.json`` (``"modality"`` key), else ``None``.

    Raises:
        DataError: if ``dataset.json`` exists but is not a JSON object, or its modality is
            not a name (see :func:`~fedward.common.data.decathlon.parse_modality`).
    """
    file = Path(path) / DATASET_FILE
    if not file.is_file():
        return None
    try:
        spec = read_json_object(file)
    except (OSError, ValueError) as err:
        raise DataError(f"{file} cannot be read as a JSON object ({type(err).__name__})") from None
    return parse_modality(spec["modality"]) if "modality" in spec else None


def read_folder_dataset(path: Path, data: DataConfig, *, cache_root: Path | None) -> FolderRead:
    """Read a segmentation folder data set with the run's data settings, through the prepared cache.

    Mask folders use ``data.image_size``, ``data.target``, ``data.intensity`` and, when the
    config declares a classification (``data.task`` not segmentation), ``data.classes`` as
    the class order. Decathlon folders use ``data.volume_size``, ``data.spacing``,
    ``data.intensity`` and ``data.ct_window``; DICOM series folders these too, and
    ``data.classes`` as the label names when the config declares a segmentation (else the
    SEGs' segment labels).

    Args:
        path: the folder.
        data: the run's data section.
        cache_root: the hospital's cache root (prepared entries under ``prepared/``);
            ``None`` reads the folder every time.

    Returns:
        The schema, splits and problems (see :func:`~fedward.common.data.maskfolder.read_mask_folder`,
        :func:`~fedward.common.data.decathlon.read_decathlon` and
        :func:`~fedward.common.data.seriesfolder.read_series_folder`).

    Raises:
        DataError: if the folder has none of the layouts, ``data.target`` is ``class`` or
            ``class+mask`` for a label-map layout, or the reader fails
            (:class:`~fedward.common.data.volumeprep.NoUsableCaseError` when no case is usable).
    """
    path = Path(path)
    layout = folder_layout(path)
    if layout is None:
        raise DataError(
            f"{path} is neither a Decathlon folder ({DATASET_FILE}), an image + mask folder "
            f"({SPLITS_FILE} with a masks column, or <name>_mask.png files) nor DICOM series with DICOM SEG files"
        )
    if layout in LABEL_MAP_LAYOUTS and data.target in (TargetKind.CLASS, TargetKind.CLASS_AND_MASK):
        kind = "Decathlon" if layout is FolderLayout.DECATHLON else "DICOM series"
        raise DataError(f"{path} is a {kind} folder (label maps only); data.target must be mask or auto")
    settings, build = _READERS[layout](path, data)
    log.debug("reading %s as a %s folder", path, layout.value)
    return prepared(path, (layout.value, *settings), build, cache_root)


Reader = tuple[tuple[object, ...], Callable[[], FolderRead]]
"""A layout's read: the settings that key its cache entry, and the call that reads the folder."""


def _reader(read: Callable[..., FolderRead], path: Path, **settings: Any) -> Reader:
    """``read(path, **settings)``, keyed by the settings' values in the order given."""
    return tuple(settings.values()), functools.partial(read, path, **settings)


def _volumes(data: DataConfig) -> dict[str, Any]:
    """The volume readers' settings: grid, spacing, intensity and CT window."""
    return {
        "volume_size": data.volume_size,
        "spacing": data.spacing,
        "intensity": data.intensity,
        "ct_window": data.ct_window,
    }


def _decathlon(path: Path, data: DataConfig) -> Reader:
    return _reader(read_decathlon, path, **_volumes(data))


def _series(path: Path, data: DataConfig) -> Reader:
    names = data.classes if data.classes and data.task is Task.SEGMENTATION else None
    return _reader(read_series_folder, path, **_volumes(data), label_names=names)


def _mask_folder(path: Path, data: DataConfig) -> Reader:
    classes = data.classes if data.classes and data.task not in (None, Task.SEGMENTATION) else None
    modality = mask_folder_modality(path) or data.modality
    return _reader(
        read_mask_folder,
        path,
        image_size=data.image_size,
        target=data.target,
        intensity=data.intensity,
        classes=classes,
        modality=modality,
    )


_READERS: dict[FolderLayout, Callable[[Path, DataConfig], Reader]] = {
    FolderLayout.DECATHLON: _decathlon,
    FolderLayout.MASK_FOLDER: _mask_folder,
    FolderLayout.DICOM_SERIES: _series,
}
